"""Every error answers an OperationOutcome with the right status, never a 500."""

from __future__ import annotations

import json

import pytest
from api_testkit import assert_outcome, patient, post

#: Read-mostly checks: one shared store per back end, built once on one worker.
pytestmark = pytest.mark.xdist_group("api_errors")


def test_invalid_json_and_bodies(module_client):
    client = module_client
    assert_outcome(client.post("/fhir/Patient", content=b"{not json"), 400, "structure")
    assert_outcome(client.post("/fhir/Patient", content=b""), 400, "structure")
    assert_outcome(client.post("/fhir/Patient", content=b"[1, 2]"), 400, "structure")
    assert_outcome(client.post("/fhir/Patient", content=b'{"name": []}'), 400, "required")
    assert_outcome(client.post("/fhir", content=json.dumps(patient())), 400)
    assert_outcome(
        client.post("/fhir", content=json.dumps({"resourceType": "Bundle", "type": "collection"})), 400
    )


def test_structurally_invalid_resource_names_the_element(module_client):
    client = module_client
    bad = patient(gender=42)
    body = assert_outcome(post(client, "/fhir/Patient", bad), 422)
    expressions = [e for issue in body["issue"] for e in issue.get("expression", [])]
    assert any("gender" in e for e in expressions), body
    unknown = assert_outcome(post(client, "/fhir/Patient", patient(colour="blue")), 422)
    assert any("colour" in e for issue in unknown["issue"] for e in issue.get("expression", [])), unknown


def test_nul_character_in_a_value_is_refused_with_its_path(module_client):
    """PostgreSQL cannot hold U+0000 in text or jsonb: a create carrying one gave a 500 there."""
    bad = patient(name=[{"family": "Wa\x00ng"}])
    body = assert_outcome(post(module_client, "/fhir/Patient", bad), 422)
    assert [e for issue in body["issue"] for e in issue.get("expression", [])] == ["Patient.name[0].family"]
    assert "NUL" in body["issue"][0]["diagnostics"]


def test_unknown_type_route_and_method(module_client):
    client = module_client
    assert_outcome(client.get("/fhir/Spaceship"), 404, "not-found")
    assert_outcome(client.get("/fhir/Spaceship/1"), 404, "not-found")
    assert_outcome(client.get("/nowhere"), 404, "not-found")
    assert_outcome(client.get("/fhir/Patient/1/_history/1/extra/path"), 404)
    assert_outcome(client.put("/fhir/metadata", content=b"{}"), 404)
    wrong = client.request("PUT", "/fhir/Patient/1/_history/1", content=b"{}")
    assert_outcome(wrong, 405, "not-supported")
    assert_outcome(client.post("/fhir/Patient/123", content=json.dumps(patient())), 405)


def test_not_acceptable_and_unsupported_media(module_client):
    client = module_client
    assert_outcome(client.get("/fhir/metadata", params={"_format": "xml"}), 406, "not-supported")
    assert_outcome(client.get("/fhir/Patient", params={"_format": "text/turtle"}), 406)
    assert_outcome(client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}), 406)
    assert (
        client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml, */*;q=0.1"}).status_code == 200
    )
    assert client.get("/fhir/metadata", params={"_format": "json"}).status_code == 200
    xml = client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"content-type": "application/fhir+xml"}
    )
    assert_outcome(xml, 415, "not-supported")
    form = client.post("/fhir/Patient/_search", content=b"{}", headers={"content-type": "application/json"})
    assert_outcome(form, 415)


def test_search_parameter_errors_name_the_parameter(module_client):
    client = module_client
    body = assert_outcome(client.get("/fhir/Patient", params={"nonsense": "x"}), 400)
    assert "nonsense" in json.dumps(body)
    assert "_count" in json.dumps(assert_outcome(client.get("/fhir/Patient", params={"_count": "many"}), 400))
    assert "_offset" in json.dumps(assert_outcome(client.get("/fhir/Patient", params={"_offset": "-3"}), 400))
    for not_ascii in ("¹", "٣"):  # digits to str.isdigit(), not to int(): a 400, never a 500
        assert "_count" in json.dumps(
            assert_outcome(client.get("/fhir/Patient", params={"_count": not_ascii}), 400)
        )
    assert "_summary" in json.dumps(
        assert_outcome(client.get("/fhir/Patient", params={"_summary": "some"}), 400)
    )
    assert_outcome(client.get("/fhir/Patient", params={"_elements": "name;drop table"}), 400)
    assert_outcome(client.get("/fhir/Patient", params={"birthdate": "not-a-date"}), 400)
    assert_outcome(client.get("/fhir/Patient", params={"name:fancy": "x"}), 400)
    assert_outcome(client.get("/fhir/Patient/x", params={"name": "x"}), 400)


def test_version_and_header_errors(module_client):
    client = module_client
    pid = post(client, "/fhir/Patient", patient()).json()["id"]
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/9"), 404)
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/one"), 404)
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/¹"), 404)  # a digit to isdigit() only
    bad_etag = client.put(
        f"/fhir/Patient/{pid}", content=json.dumps(patient(id=pid)), headers={"If-Match": "v1"}
    )
    assert_outcome(bad_etag, 400)
    assert_outcome(client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "soon"}), 400)
    assert_outcome(post(client, "/fhir/Patient", patient(), {"If-None-Exist": ""}), 400)


def test_unsupported_operations(module_client):
    client = module_client
    assert_outcome(client.get("/fhir/Patient/$everything"), 501, "not-supported")
    assert_outcome(client.get("/fhir/Observation/1/$lastn"), 501)
    assert_outcome(client.post("/fhir/Patient/$match", content=b"{}"), 501)
    assert_outcome(client.post("/fhir/Patient/1/$meta-add", content=b"{}"), 501)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/fhir/Patient?_count=99999999999999999999999", None),
        ("GET", "/fhir/Patient?_offset=99999999999999999999999", None),
        ("GET", "/fhir/Patient?name=a%00b", None),
        ("GET", "/fhir/Observation?code=http://loinc.org|%00", None),
        ("GET", "/fhir/Patient?_lastUpdated=gt", None),
        ("GET", "/fhir/Patient?_sort=", None),
        ("GET", "/fhir/Patient?_include=Nothing:at", None),
        ("GET", "/fhir/Patient?%00=%FF", None),
        ("GET", "/fhir/Patient/%00", None),
        ("GET", "/fhir/Patient/" + "a" * 300, None),
        ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "id": 5, "meta": "x"}'),
        ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "name": {"family": 1}}'),
        ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {}}]}'),
        ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "batch", "entry": "no"}'),
        ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": [1]}'),
        ("PATCH", "/fhir/Patient/x", b"[]"),
        ("DELETE", "/fhir/Patient/" + "b" * 65, None),
        ("POST", "/fhir/Patient/$validate", b'{"resourceType": "Parameters"}'),
        ("GET", "/fhir/_history?_since=2020-13-45", None),
    ],
)
def test_awkward_inputs_never_cause_500(module_client, method, path, body):
    client = module_client
    response = client.request(method, path, content=body)
    assert 200 <= response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"
