"""The official HL7 R4 examples round-trip through the API, and what the API returns is valid R4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_testkit import post, put

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "fhir-r4-examples"
SCHEMA_INVALID = {"structuredefinition-example-composition.json"}
#: Examples HL7 published that break R4's own cardinality rules: the API must refuse them, naming
#: the element. (bundle-questionnaire.json: display items without the mandatory linkId.)
CARDINALITY_INVALID = {"bundle-questionnaire.json": "linkId"}

#: One worker runs this module so its shared store is built once per back end.
pytestmark = pytest.mark.xdist_group("api_examples")


def _strip(resource):
    out = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_example_round_trips_and_validates(module_client, schema_errors, name):
    client = module_client
    example = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    created = post(client, f"/fhir/{example['resourceType']}", example)
    if name in CARDINALITY_INVALID:
        assert created.status_code == 422
        paths = [e for issue in created.json()["issue"] for e in issue.get("expression", [])]
        assert paths and all(p.endswith(CARDINALITY_INVALID[name]) for p in paths)
        return
    if name in SCHEMA_INVALID and created.status_code == 422:
        return
    assert created.status_code == 201, created.text[:800]
    body = created.json()
    read = client.get(f"/fhir/{body['resourceType']}/{body['id']}").json()
    assert read == body
    assert _strip(read) == _strip(example)
    assert read["meta"]["versionId"] == "1"
    if name not in SCHEMA_INVALID:
        assert schema_errors(read) == []
    if "id" in example:
        kept = put(client, f"/fhir/{example['resourceType']}/{example['id']}", example)
        assert kept.status_code in (200, 201), kept.text[:800]  # two examples may share an id
        assert _strip(kept.json()) == _strip(example)
        assert kept.json()["id"] == example["id"]


def test_every_answer_of_the_api_validates(client, schema_errors):
    """On a fresh store (the shared one holds the schema-invalid example, which history would show)."""
    pid = post(client, "/fhir/Patient", json.loads((EXAMPLES / "patient-example.json").read_text())).json()[
        "id"
    ]
    post(client, "/fhir/Observation", json.loads((EXAMPLES / "observation-example.json").read_text()))
    client.put(
        f"/fhir/Patient/{pid}", content=json.dumps({"resourceType": "Patient", "id": pid, "active": False})
    )
    answers = [
        client.get("/fhir/metadata"),
        client.get(f"/fhir/Patient/{pid}"),
        client.get(f"/fhir/Patient/{pid}/_history"),
        client.get("/fhir/_history"),
        client.get("/fhir/Patient", params={"_revinclude": "Observation:subject", "_count": "1"}),
        client.get("/fhir/Patient", params={"_summary": "true"}),
        client.get("/fhir/Patient", params={"_elements": "name"}),
        client.get("/fhir/Patient", params={"_summary": "count"}),
        client.get(f"/fhir/Patient/{pid}/$everything"),
        client.get("/fhir/Patient", params={"bogus": "1"}),
        client.get("/fhir/Unknown"),
        client.post("/fhir/Patient/$validate", content=json.dumps({"resourceType": "Patient", "gender": 1})),
        client.post(
            "/fhir",
            content=json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "batch",
                    "entry": [
                        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
                        {"request": {"method": "GET", "url": "Patient?_count=1"}},
                    ],
                }
            ),
        ),
        client.delete(f"/fhir/Patient/{pid}"),
    ]
    for response in answers:
        assert response.content, response.request.url
        assert schema_errors(response.json()) == [], response.request.url


def test_validate_operation(module_client):
    client = module_client
    ok = client.post("/fhir/Patient/$validate", content=(EXAMPLES / "patient-example.json").read_bytes())
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = client.post("/fhir/Patient/$validate", content=json.dumps({"resourceType": "Patient", "gender": 1}))
    assert bad.status_code == 200
    issue = bad.json()["issue"][0]
    assert issue["severity"] == "error"
    assert any("gender" in e for e in issue["expression"])
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": {"resourceType": "Patient"}}],
    }
    assert client.post("/fhir/Patient/$validate", content=json.dumps(wrapped)).status_code == 200
    assert client.post("/fhir/Patient/example/$validate", content=json.dumps(wrapped)).status_code == 200
    assert client.post("/fhir/Observation/$validate", content=json.dumps(wrapped)).status_code == 400
