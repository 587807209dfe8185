"""The CapabilityStatement tells the truth: every advertised parameter and interaction works."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from api_testkit import patient, post, put

from rhip.fhir.search_params import search_params_for

SAMPLE = {
    "string": "a",
    "token": "a",
    "date": "2020-01-01",
    "reference": "1",
    "quantity": "5",
    "number": "5",
    "uri": "http://example.org/a",
    "special": "a",
}

#: One worker runs this module so its shared store is built once per back end.
pytestmark = pytest.mark.xdist_group("api_capability")


def _value(res_type: str, name: str, kind: str) -> str:
    if kind != "composite":
        return SAMPLE[kind]
    spec = search_params_for(res_type)[name]
    components = spec.contexts[0][1] if spec.contexts else ()
    return "$".join(SAMPLE.get(c.type, "a") for c in components) or "a$a"


@pytest.fixture(scope="module")
def statement(module_client):
    response = module_client.get("/fhir/metadata")
    assert response.status_code == 200
    return response.json()


def test_statement_shape(statement, schema_errors):
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "search-system",
        "history-system",
    }
    assert len(rest["resource"]) >= 140
    patient_entry = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert patient_entry["operation"][0]["name"] == "everything"
    assert {"family", "identifier", "birthdate", "_id", "_lastUpdated"} <= {
        p["name"] for p in patient_entry["searchParam"]
    }
    assert schema_errors(statement) == []


def test_platform_parameters_are_advertised_with_their_definition(statement):
    """The parameters the platform adds to R4's (a CareTeam's managing organisation) are named with
    a definition under the identifier base, like the official ones under hl7.org."""
    from rhip.config import get_settings
    from rhip.fhir.search_params import platform_params

    rest = statement["rest"][0]["resource"]
    base = get_settings().identifier_base.rstrip("/")
    for res_type, params in platform_params().items():
        advertised = {p["name"]: p for p in next(r for r in rest if r["type"] == res_type)["searchParam"]}
        for name, raw in params.items():
            assert advertised[name]["type"] == raw["type"]
            assert advertised[name]["definition"] == f"{base}/SearchParameter/{res_type}-{name}"
    assert "managing-organization" in platform_params()["CareTeam"]


def _sweep(app, requests):
    """Send many GETs through one in-process async client (no socket; fast) and return the statuses."""

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            return [
                (path, params, (await ac.get(path, params=params)).status_code) for path, params in requests
            ]

    return anyio.run(run)


def test_every_advertised_search_parameter_is_accepted(module_client, statement):
    requests = []
    for entry in statement["rest"][0]["resource"]:
        for param in entry.get("searchParam", []):
            value = _value(entry["type"], param["name"], param["type"])
            requests.append((f"/fhir/{entry['type']}", {param["name"]: value, "_count": "1"}))
    assert len(requests) > 1000
    if module_client.app.state.store.engine.dialect.name != "sqlite":
        requests = requests[::5]  # the SQL is shared; PostgreSQL checks a fifth to keep the suite short
    results = _sweep(module_client.app, requests)
    failures = [f"{path}?{params} -> {status}" for path, params, status in results if status != 200]
    assert failures == []


def test_every_advertised_include_is_accepted(module_client, statement):
    failures = []
    for entry in statement["rest"][0]["resource"]:
        for include in entry.get("searchInclude", [])[:3]:
            response = module_client.get(
                f"/fhir/{entry['type']}", params={"_include": include, "_count": "1"}
            )
            if response.status_code != 200:
                failures.append(f"{entry['type']}?_include={include} -> {response.status_code}")
    assert failures == []


@pytest.mark.parametrize("res_type", ["Patient", "Observation", "Organization", "Encounter", "Basic"])
def test_every_advertised_interaction_answers(module_client, statement, res_type):
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == res_type)
    codes = {i["code"] for i in entry["interaction"]}
    body = patient() if res_type == "Patient" else {"resourceType": res_type}
    if res_type == "Observation":
        body = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    if res_type == "Encounter":
        body = {
            "resourceType": "Encounter",
            "status": "planned",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        }
    if res_type == "Basic":
        body = {"resourceType": "Basic", "code": {"text": "note"}}
    client = module_client
    answers = {}
    created = post(client, f"/fhir/{res_type}", body)
    answers["create"] = created.status_code
    rid = created.json()["id"]
    answers["read"] = client.get(f"/fhir/{res_type}/{rid}").status_code
    answers["vread"] = client.get(f"/fhir/{res_type}/{rid}/_history/1").status_code
    answers["update"] = put(client, f"/fhir/{res_type}/{rid}", {**body, "id": rid}).status_code
    answers["patch"] = client.patch(
        f"/fhir/{res_type}/{rid}",
        content=json.dumps([{"op": "add", "path": "/language", "value": "zh-CN"}]),
        headers={"content-type": "application/json-patch+json"},
    ).status_code
    answers["history-instance"] = client.get(f"/fhir/{res_type}/{rid}/_history").status_code
    answers["history-type"] = client.get(f"/fhir/{res_type}/_history").status_code
    answers["search-type"] = client.get(f"/fhir/{res_type}", params={"_id": rid}).status_code
    answers["delete"] = client.delete(f"/fhir/{res_type}/{rid}").status_code
    assert set(answers) == codes
    assert all(status in (200, 201) for status in answers.values()), answers


def test_system_interactions_and_operations_answer(module_client):
    client = module_client
    pid = post(client, "/fhir/Patient", patient()).json()["id"]
    assert client.get("/fhir", params={"_type": "Patient", "_count": "1"}).status_code == 200
    assert client.get("/fhir/_history", params={"_count": "1"}).status_code == 200
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}"}}],
    }
    assert post(client, "/fhir", batch).status_code == 200
    assert post(client, "/fhir", {**batch, "type": "transaction"}).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/$everything").status_code == 200
    assert client.post(f"/fhir/Patient/{pid}/$everything", content=b"").status_code == 200
    assert post(client, "/fhir/Patient/$validate", patient()).status_code == 200
