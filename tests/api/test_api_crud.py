"""Instance and type interactions over HTTP semantics, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from api_testkit import FHIR_JSON, assert_outcome, patient, post, put


def test_create_read_vread_with_headers(client):
    created = post(client, "/fhir/Patient", patient())
    assert created.status_code == 201
    body = created.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert created.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert created.headers["etag"] == 'W/"1"'
    assert "last-modified" in created.headers
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith(FHIR_JSON)
    assert read.json() == body
    assert read.headers["etag"] == 'W/"1"'
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json() == body


def test_create_ignores_client_id_and_checks_type(client):
    created = post(client, "/fhir/Patient", patient(id="chosen-by-client"))
    assert created.status_code == 201
    assert created.json()["id"] != "chosen-by-client"
    assert_outcome(post(client, "/fhir/Observation", patient()), 400)


def test_update_versions_and_if_match(client):
    pid = post(client, "/fhir/Patient", patient()).json()["id"]
    changed = patient(family="Li", id=pid)
    updated = put(client, f"/fhir/Patient/{pid}", changed, {"If-Match": 'W/"1"'})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["etag"] == 'W/"2"'
    stale = put(client, f"/fhir/Patient/{pid}", changed, {"If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "conflict")
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["name"][0]["family"] == "Wang"
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Li"


def test_update_as_create_with_client_id(client):
    made = put(client, "/fhir/Patient/zhang-san-1", patient(id="zhang-san-1"))
    assert made.status_code == 201
    assert made.headers["location"].endswith("/fhir/Patient/zhang-san-1/_history/1")
    assert client.get("/fhir/Patient/zhang-san-1").status_code == 200


def test_update_id_mismatch_and_missing_id(client):
    assert_outcome(put(client, "/fhir/Patient/a1", patient(id="b2")), 400)
    missing = assert_outcome(put(client, "/fhir/Patient/a1", patient()), 400, "required")
    assert missing["issue"][0]["expression"] == ["Patient.id"]
    assert_outcome(put(client, "/fhir/Patient/bad$id", patient(id="bad$id")), 400)


def test_prefer_return(client):
    minimal = post(client, "/fhir/Patient", patient(), {"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "location" in minimal.headers
    oo = post(client, "/fhir/Patient", patient(), {"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"


def test_json_patch(client):
    pid = post(client, "/fhir/Patient", patient()).json()["id"]
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/active", "value": True},
    ]
    patched = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(ops),
        headers={"content-type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["gender"] == "male"
    assert patched.json()["active"] is True
    assert patched.json()["meta"]["versionId"] == "2"
    failing = [{"op": "test", "path": "/gender", "value": "female"}]
    bad = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(failing),
        headers={"content-type": "application/json-patch+json"},
    )
    assert bad.status_code in (409, 412, 422), bad.text
    assert_outcome(bad, bad.status_code)
    invalid = [{"op": "replace", "path": "/gender", "value": 42}]
    refused = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps(invalid),
        headers={"content-type": "application/json-patch+json"},
    )
    outcome = assert_outcome(refused, 422)
    assert any("gender" in e for issue in outcome["issue"] for e in issue.get("expression", []))
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "2"
    fhirpath = {"resourceType": "Parameters", "parameter": []}
    assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=json.dumps(fhirpath)), 501, "not-supported")
    assert_outcome(
        client.patch(
            f"/fhir/Patient/{pid}",
            content=b'{"op": "x"}',
            headers={"content-type": "application/json-patch+json"},
        ),
        400,
    )


def test_delete_then_gone_and_history(client):
    pid = post(client, "/fhir/Patient", patient()).json()["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert_outcome(client.get(f"/fhir/Patient/{pid}"), 410, "deleted")
    again = client.delete(f"/fhir/Patient/{pid}", headers={"Prefer": "return=minimal"})
    assert again.status_code == 204
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 2
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert history["entry"][1]["response"]["status"].startswith("201")
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 410)
    assert_outcome(client.delete("/fhir/Patient/never-was"), 404, "not-found")


def test_conditional_read_headers(client):
    created = post(client, "/fhir/Patient", patient())
    pid = created.json()["id"]
    not_modified = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"7"'}).status_code == 200
    later = client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert later.status_code == 304
    earlier = client.get(
        f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert earlier.status_code == 200


def test_history_levels_and_paging(client):
    ids = [post(client, "/fhir/Patient", patient(given=f"G{i}")).json()["id"] for i in range(5)]
    put(client, f"/fhir/Patient/{ids[0]}", patient(id=ids[0], given="changed"))
    post(client, "/fhir/Organization", {"resourceType": "Organization", "name": "Ward 3"})
    type_hist = client.get("/fhir/Patient/_history").json()
    assert type_hist["total"] == 6
    system = client.get("/fhir/_history", params={"_count": "4"}).json()
    assert system["total"] == 7
    assert len(system["entry"]) == 4
    seen = [e["fullUrl"] for e in system["entry"]]
    next_url = next(link["url"] for link in system["link"] if link["relation"] == "next")
    page2 = client.get(next_url).json()
    seen += [e["fullUrl"] for e in page2["entry"]]
    assert len(seen) == 7
    assert not any(link["relation"] == "next" for link in page2["link"])
    future = client.get("/fhir/_history", params={"_since": "2100-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    assert_outcome(client.get("/fhir/_history", params={"_since": "yesterday"}), 400)
    assert_outcome(client.get("/fhir/_history", params={"_at": "2020"}), 501)
    assert_outcome(client.get("/fhir/_history", params={"_count": "-1"}), 400)
    assert_outcome(client.get("/fhir/Patient/nobody/_history"), 404)


def test_conditional_create_update_delete(client):
    ident = {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "A-001"}
    first = post(
        client,
        "/fhir/Patient",
        patient(identifier=[ident]),
        {"If-None-Exist": "identifier=urn:oid:2.16.840.1.113883.2.4.6.3|A-001"},
    )
    assert first.status_code == 201
    second = post(
        client,
        "/fhir/Patient",
        patient(identifier=[ident]),
        {"If-None-Exist": "identifier=urn:oid:2.16.840.1.113883.2.4.6.3|A-001"},
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    cond = client.put(
        "/fhir/Patient",
        params={"identifier": "urn:oid:2.16.840.1.113883.2.4.6.3|A-001"},
        content=json.dumps(patient(family="Zhao", identifier=[ident])),
    )
    assert cond.status_code == 200, cond.text
    assert cond.json()["id"] == first.json()["id"]
    assert cond.json()["meta"]["versionId"] == "2"
    made = client.put(
        "/fhir/Patient",
        params={"identifier": "urn:x|B-9"},
        content=json.dumps(patient(identifier=[{"system": "urn:x", "value": "B-9"}])),
    )
    assert made.status_code == 201
    post(client, "/fhir/Patient", patient(family="Twin", identifier=[{"system": "urn:x", "value": "T"}]))
    post(client, "/fhir/Patient", patient(family="Twin", identifier=[{"system": "urn:x", "value": "T"}]))
    assert_outcome(client.delete("/fhir/Patient", params={"identifier": "urn:x|T"}), 412, "multiple-matches")
    assert_outcome(
        client.put("/fhir/Patient", params={"identifier": "urn:x|T"}, content=json.dumps(patient())), 412
    )
    gone = client.delete("/fhir/Patient", params={"identifier": "urn:oid:2.16.840.1.113883.2.4.6.3|A-001"})
    assert gone.status_code == 200
    assert_outcome(client.get(f"/fhir/Patient/{first.json()['id']}"), 410)
    assert_outcome(client.delete("/fhir/Patient"), 400)


def test_conditional_patch(client):
    pid = post(client, "/fhir/Patient", patient(identifier=[{"system": "urn:x", "value": "P1"}])).json()["id"]
    ops = json.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    hdr = {"content-type": "application/json-patch+json"}
    done = client.patch("/fhir/Patient", params={"identifier": "urn:x|P1"}, content=ops, headers=hdr)
    assert done.status_code == 200, done.text
    assert done.json()["id"] == pid
    assert_outcome(
        client.patch("/fhir/Patient", params={"identifier": "urn:x|none"}, content=ops, headers=hdr), 404
    )
