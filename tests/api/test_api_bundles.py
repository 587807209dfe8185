"""Batch and transaction Bundles, and the Synthea R4 transaction bundles end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_testkit import assert_outcome, patient, post

SYNTHEA = Path(__file__).resolve().parent.parent / "data" / "synthea-r4"


def _tx(entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_transaction_rewrites_urn_uuid_references(client):
    pat = "urn:uuid:6f0c9c1e-0000-4000-8000-000000000001"
    bundle = _tx(
        [
            {"fullUrl": pat, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "fullUrl": "urn:uuid:6f0c9c1e-0000-4000-8000-000000000002",
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": pat},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ]
    )
    response = post(client, "/fhir", bundle)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert all(s.startswith("201") for s in statuses)
    pid = out["entry"][0]["response"]["location"].split("/")[1]
    encounters = client.get("/fhir/Encounter", params={"subject": f"Patient/{pid}"}).json()
    assert encounters["total"] == 1
    assert encounters["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_atomic(client):
    good = {"resource": patient(family="Kept"), "request": {"method": "POST", "url": "Patient"}}
    bad = {"request": {"method": "DELETE", "url": "Patient?identifier=urn:x|missing-but-fine"}}
    failing = {
        "resource": patient(id="x1"),
        "request": {"method": "PUT", "url": "Patient/x1"},
        "fullUrl": "Patient/x1",
    }
    post(client, "/fhir/Patient", patient(family="Twin", identifier=[{"system": "urn:x", "value": "dup"}]))
    post(client, "/fhir/Patient", patient(family="Twin", identifier=[{"system": "urn:x", "value": "dup"}]))
    conflict = {
        "resource": patient(family="Other"),
        "request": {"method": "PUT", "url": "Patient?identifier=urn:x|dup"},
    }
    response = post(client, "/fhir", _tx([good, bad, failing, conflict]))
    assert 400 <= response.status_code < 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient", params={"family": "Kept"}).json()["total"] == 0
    assert client.get("/fhir/Patient/x1").status_code == 404


def test_batch_entries_fail_independently(client):
    ok = {"resource": patient(family="Batchy"), "request": {"method": "POST", "url": "Patient"}}
    missing = {"request": {"method": "GET", "url": "Patient/does-not-exist"}}
    response = post(client, "/fhir", _tx([ok, missing], "batch"))
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["type"] == "batch-response"
    assert out["entry"][0]["response"]["status"].startswith("201")
    assert out["entry"][1]["response"]["status"].startswith("404")
    assert client.get("/fhir/Patient", params={"family": "Batchy"}).json()["total"] == 1


def test_bundle_envelope_errors(client):
    assert_outcome(post(client, "/fhir", _tx([{"resource": patient()}])), 400, "required")
    assert_outcome(post(client, "/fhir", _tx([{"request": {"method": "BREW", "url": "Patient"}}])), 400)
    assert_outcome(post(client, "/fhir", _tx([{"request": {"method": "GET", "url": "Teapot/1"}}])), 404)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in SYNTHEA.glob("*.json")))
def test_synthea_bundle_posts_and_is_readable_and_searchable(client, name):
    bundle = json.loads((SYNTHEA / name).read_text(encoding="utf-8"))
    response = post(client, "/fhir", bundle)
    assert response.status_code == 200, response.text[:500]
    out = response.json()
    assert len(out["entry"]) == len(bundle["entry"])
    locations = [e["response"]["location"] for e in out["entry"]]
    by_type: dict[str, int] = {}
    for location, entry in zip(locations, bundle["entry"], strict=True):
        res_type, res_id = location.split("/")[:2]
        assert res_type == entry["resource"]["resourceType"]
        read = client.get(f"/fhir/{res_type}/{res_id}")
        assert read.status_code == 200
        assert "urn:uuid:" not in read.text
        by_type[res_type] = by_type.get(res_type, 0) + 1
    for res_type, count in by_type.items():
        assert client.get(f"/fhir/{res_type}", params={"_summary": "count"}).json()["total"] == count
    pid = next(loc.split("/")[1] for loc in locations if loc.startswith("Patient/"))
    observations = client.get(
        "/fhir/Observation", params={"subject": f"Patient/{pid}", "_count": "200"}
    ).json()
    assert observations["total"] == by_type.get("Observation", 0)
    everything = client.get(f"/fhir/Patient/{pid}/$everything").json()
    assert everything["total"] == len(bundle["entry"])


def test_transaction_resolves_conditional_references_and_if_none_exist(client):
    ident = {"system": "urn:oid:1.2.156.112604.1.2", "value": "330106198005170027"}
    post(client, "/fhir/Patient", patient(identifier=[ident]))
    bundle = _tx(
        [
            {
                "resource": patient(identifier=[ident]),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
                },
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": f"Patient?identifier={ident['system']}|{ident['value']}"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ]
    )
    out = post(client, "/fhir", bundle)
    assert out.status_code == 200, out.text
    entries = out.json()["entry"]
    assert entries[0]["response"]["status"].startswith("200")
    pid = entries[0]["response"]["location"].split("/")[1]
    obs_id = entries[1]["response"]["location"].split("/")[1]
    observation = client.get(f"/fhir/Observation/{obs_id}").json()
    assert observation["subject"]["reference"] == f"Patient/{pid}"
    assert (
        client.get("/fhir/Patient", params={"identifier": f"{ident['system']}|{ident['value']}"}).json()[
            "total"
        ]
        == 1
    )
    dangling = _tx(
        [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Patient?identifier=urn:x|nobody"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        ]
    )
    failed = post(client, "/fhir", dangling)
    assert 400 <= failed.status_code < 500
    assert failed.json()["resourceType"] == "OperationOutcome"
