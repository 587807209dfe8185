"""Search through the API: paging links, shaping, POST _search, includes, chains, _has."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from api_testkit import assert_outcome, patient, post

#: The tests only read what ``seeded`` wrote: one shared store per back end, on one worker.
pytestmark = pytest.mark.xdist_group("api_search")


@pytest.fixture(scope="module")
def seeded(module_client):
    """Twelve patients, an organisation and one observation per patient (shared by the module)."""
    client = module_client
    org = post(
        client, "/fhir/Organization", {"resourceType": "Organization", "name": "Xinhua Hospital"}
    ).json()
    pids = []
    for i in range(12):
        body = patient(
            family="Chen" if i % 2 else "Liu",
            given=f"N{i:02d}",
            managingOrganization={"reference": f"Organization/{org['id']}"},
        )
        pids.append(post(client, "/fhir/Patient", body).json()["id"])
        post(
            client,
            "/fhir/Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{pids[-1]}"},
                "valueQuantity": {
                    "value": 60 + i,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            },
        )
    return client, org["id"], pids


def _ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_paging_links_walk_every_match_once(seeded):
    client, _, pids = seeded
    first = client.get("/fhir/Patient", params={"_count": "5", "_sort": "given"})
    assert first.status_code == 200
    bundle = first.json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 12
    relations = {link["relation"] for link in bundle["link"]}
    assert {"self", "first", "next", "last"} <= relations
    seen = _ids(bundle)
    pages = 1
    while nxt := next((lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next"), None):
        query = dict(parse_qsl(urlsplit(nxt).query))
        assert query["_sort"] == "given"
        bundle = client.get(nxt).json()
        seen += _ids(bundle)
        pages += 1
        assert any(lnk["relation"] == "previous" for lnk in bundle["link"])
    assert pages == 3
    assert sorted(seen) == sorted(pids)
    again = client.get(bundle["link"][0]["url"]).json()
    assert _ids(again) == _ids(bundle)


def test_entries_have_full_url_and_mode(seeded):
    client, _, _ = seeded
    bundle = client.get("/fhir/Patient", params={"family": "Chen"}).json()
    assert bundle["total"] == 6
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"http://testserver/fhir/Patient/{entry['resource']['id']}"
        assert entry["search"]["mode"] == "match"


def test_summary_count_and_elements(seeded):
    client, _, _ = seeded
    count = client.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert count["total"] == 12
    assert "entry" not in count
    shaped = client.get("/fhir/Patient", params={"_elements": "gender", "_count": "2"}).json()
    for entry in shaped["entry"]:
        res = entry["resource"]
        assert set(res) <= {"resourceType", "id", "meta", "gender"}
        assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    summary = client.get("/fhir/Patient", params={"_summary": "true", "_count": "1"}).json()
    assert "managingOrganization" in summary["entry"][0]["resource"]
    text = client.get("/fhir/Observation", params={"_summary": "text", "_count": "1"}).json()
    assert set(text["entry"][0]["resource"]) <= {"resourceType", "id", "meta", "text", "status", "code"}
    data = client.get("/fhir/Observation", params={"_summary": "data", "_count": "1"}).json()
    assert "valueQuantity" in data["entry"][0]["resource"]


def test_post_search_equals_get(seeded):
    client, _, _ = seeded
    got = client.get("/fhir/Patient", params={"family": "Liu", "_sort": "given"}).json()
    posted = client.post(
        "/fhir/Patient/_search",
        content=b"family=Liu&_sort=given",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).json()
    assert _ids(got) == _ids(posted)
    assert len(_ids(got)) == 6


def test_include_revinclude_chain_has(seeded):
    client, org_id, pids = seeded
    inc = client.get("/fhir/Observation", params={"_include": "Observation:subject", "_count": "3"}).json()
    modes = [e["search"]["mode"] for e in inc["entry"]]
    assert modes.count("match") == 3
    assert modes.count("include") >= 1
    rev = client.get("/fhir/Patient", params={"_id": pids[0], "_revinclude": "Observation:subject"}).json()
    assert [e["resource"]["resourceType"] for e in rev["entry"]] == ["Patient", "Observation"]
    chained = client.get("/fhir/Observation", params={"subject:Patient.family": "Chen"}).json()
    assert chained["total"] == 6
    has = client.get("/fhir/Patient", params={"_has:Observation:subject:value-quantity": "ge70"}).json()
    assert has["total"] == 2
    via_org = client.get("/fhir/Patient", params={"organization": f"Organization/{org_id}"}).json()
    assert via_org["total"] == 12


def test_prefixes_lastupdated_total_and_count_zero(seeded):
    client, _, pids = seeded
    assert client.get("/fhir/Observation", params={"value-quantity": "gt65"}).json()["total"] == 6
    assert client.get("/fhir/Patient", params={"_lastUpdated": "gt2000-01-01"}).json()["total"] == 12
    assert client.get("/fhir/Patient", params={"_lastUpdated": "lt2000-01-01"}).json()["total"] == 0
    assert client.get("/fhir/Patient", params={"_id": f"{pids[0]},{pids[1]}"}).json()["total"] == 2
    none = client.get("/fhir/Patient", params={"_total": "none", "_count": "2"}).json()
    assert len(_ids(none)) == 2
    zero = client.get("/fhir/Patient", params={"_count": "0"}).json()
    assert "entry" not in zero
    big = client.get("/fhir/Patient", params={"_count": "100000"}).json()
    assert len(_ids(big)) == 12


def test_system_search(seeded):
    client, _, _ = seeded
    both = client.get("/fhir", params={"_type": "Patient,Organization"}).json()
    assert both["total"] == 13
    assert_outcome(client.get("/fhir", params={"family": "Chen"}), 400)


def test_modifiers_and_include_iterate(seeded):
    client, _org_id, _pids = seeded
    assert client.get("/fhir/Patient", params={"family:exact": "Chen"}).json()["total"] == 6
    assert client.get("/fhir/Patient", params={"family:exact": "chen"}).json()["total"] == 0
    assert client.get("/fhir/Patient", params={"given:contains": "0"}).json()["total"] == 11
    assert client.get("/fhir/Patient", params={"telecom:missing": "true"}).json()["total"] == 12
    assert client.get("/fhir/Patient", params={"gender:not": "female"}).json()["total"] == 0
    bundle = client.get(
        "/fhir/Observation",
        params={
            "_id": client.get("/fhir/Observation", params={"_count": "1"}).json()["entry"][0]["resource"][
                "id"
            ],
            "_include": "Observation:subject",
            "_include:iterate": "Patient:organization",
        },
    ).json()
    kinds = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in bundle["entry"])
    assert kinds == [("include", "Organization"), ("include", "Patient"), ("match", "Observation")]
