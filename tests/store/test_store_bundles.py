"""Batch and transaction Bundles: atomicity, placeholders, conditional references and entries."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from rhip.errors import InvalidRequest, MultipleMatches, RhipError, VersionConflict
from rhip.store import Store

SYS = "urn:oid:2.16.156.10011.1.19"
P_UUID = "urn:uuid:8f1c2d3e-0000-4000-8000-000000000001"
E_UUID = "urn:uuid:8f1c2d3e-0000-4000-8000-000000000002"


def _entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url, **extra.pop("request", {})}}
    if resource is not None:
        entry["resource"] = resource
    entry.update(extra)
    return entry


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _patient(card: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYS, "value": card}]}


def _encounter(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": subject},
    }


def test_transaction_rewrites_placeholders(store: Store) -> None:
    bundle = _bundle(
        "transaction",
        _entry("POST", "Encounter", _encounter(P_UUID), fullUrl=E_UUID),
        _entry("POST", "Patient", _patient("t1"), fullUrl=P_UUID),
        _entry(
            "POST",
            "Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "bp"},
                "subject": {"reference": P_UUID},
                "encounter": {"reference": E_UUID},
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": P_UUID}],
            },
        ),
    )
    original = copy.deepcopy(bundle)
    response = store.process_bundle(bundle, base_url="http://fhir.example/r4")
    assert bundle == original
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 3
    enc, pat, obs = (e["resource"] for e in response["entry"])
    assert enc["subject"]["reference"] == f"Patient/{pat['id']}"
    assert obs["subject"]["reference"] == f"Patient/{pat['id']}"
    assert obs["encounter"]["reference"] == f"Encounter/{enc['id']}"
    assert obs["identifier"][0]["value"] == P_UUID  # an Identifier is not a Reference
    first = response["entry"][0]
    assert first["fullUrl"] == f"http://fhir.example/r4/Encounter/{enc['id']}"
    assert first["response"]["location"] == f"Encounter/{enc['id']}/_history/1"
    assert first["response"]["etag"] == 'W/"1"'
    assert store.read("Observation", obs["id"]) == obs
    found = store.search("Observation", [("subject", f"Patient/{pat['id']}")])
    assert [m["id"] for m in found.matches] == [obs["id"]]


def test_transaction_is_atomic(store: Store) -> None:
    existing = store.create(_patient("keep")).res_id
    bundle = _bundle(
        "transaction",
        _entry("POST", "Patient", _patient("new")),
        _entry("PUT", f"Patient/{existing}", {**_patient("changed"), "id": existing}),
        _entry("DELETE", f"Patient/{existing}"),
    )
    with pytest.raises(InvalidRequest):  # the same resource is targeted twice
        store.process_bundle(bundle)
    bundle = _bundle(
        "transaction",
        _entry("POST", "Patient", _patient("new")),
        _entry("PUT", f"Patient/{existing}", {**_patient("changed"), "id": existing}),
        _entry("PUT", "Patient/other", {**_patient("x"), "id": "other"}, request={"ifMatch": 'W/"5"'}),
    )
    with pytest.raises(VersionConflict) as exc:
        store.process_bundle(bundle)
    assert "Bundle.entry[2]" in exc.value.diagnostics
    assert store.count("Patient") == 1
    assert store.read("Patient", existing)["identifier"][0]["value"] == "keep"
    assert store.history("Patient", existing).total == 1


def test_transaction_rejects_unknown_placeholder(store: Store) -> None:
    bundle = _bundle(
        "transaction",
        _entry("POST", "Patient", _patient("p")),
        _entry("POST", "Encounter", _encounter("urn:uuid:00000000-0000-4000-8000-00000000dead")),
    )
    with pytest.raises(InvalidRequest) as exc:
        store.process_bundle(bundle)
    assert "Bundle.entry[1].resource.subject" in exc.value.diagnostics
    assert store.count() == 0


def test_conditional_references(store: Store) -> None:
    pid = store.create(_patient("c1")).res_id
    ok = _bundle("transaction", _entry("POST", "Encounter", _encounter(f"Patient?identifier={SYS}|c1")))
    enc = store.process_bundle(ok)["entry"][0]["resource"]
    assert enc["subject"]["reference"] == f"Patient/{pid}"
    none = _bundle("transaction", _entry("POST", "Encounter", _encounter(f"Patient?identifier={SYS}|zz")))
    with pytest.raises(InvalidRequest):
        store.process_bundle(none)
    store.create(_patient("c1"))
    many = _bundle("transaction", _entry("POST", "Encounter", _encounter(f"Patient?identifier={SYS}|c1")))
    with pytest.raises(MultipleMatches):
        store.process_bundle(many)
    assert store.count("Encounter") == 1


def test_conditional_entries(store: Store) -> None:
    crit = f"identifier={SYS}|k1"
    bundle = _bundle(
        "transaction",
        _entry("POST", "Patient", _patient("k1"), fullUrl=P_UUID, request={"ifNoneExist": crit}),
        _entry("POST", "Encounter", _encounter(P_UUID)),
    )
    first = store.process_bundle(bundle)
    pid = first["entry"][0]["resource"]["id"]
    second = store.process_bundle(bundle)
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert second["entry"][0]["resource"]["id"] == pid
    assert second["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert store.count("Patient") == 1 and store.count("Encounter") == 2
    update = _bundle(
        "transaction",
        _entry("PUT", f"Patient?{crit}", {**_patient("k1"), "active": True}),
        _entry("PUT", f"Patient?identifier={SYS}|k2", _patient("k2")),
    )
    out = store.process_bundle(update)
    assert [e["response"]["status"] for e in out["entry"]] == ["200 OK", "201 Created"]
    assert out["entry"][0]["resource"]["id"] == pid and store.read("Patient", pid)["active"] is True
    delete = _bundle("transaction", _entry("DELETE", f"Patient?identifier={SYS}|k2"))
    assert store.process_bundle(delete)["entry"][0]["response"]["status"] == "204 No Content"
    assert store.search("Patient", [("identifier", f"{SYS}|k2")]).total == 0


def test_patch_get_and_if_match_entries(store: Store) -> None:
    pid = store.create(_patient("g1")).res_id
    patch = base64.b64encode(orjson.dumps([{"op": "add", "path": "/active", "value": False}])).decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch}
    bundle = _bundle(
        "transaction",
        _entry("GET", f"Patient/{pid}"),
        _entry("PATCH", f"Patient/{pid}", binary, request={"ifMatch": 'W/"1"'}),
        _entry("GET", f"Patient?identifier={SYS}|g1"),
        _entry("GET", f"Patient/{pid}/_history/1"),
    )
    out = store.process_bundle(bundle)["entry"]
    assert out[1]["response"]["status"] == "200 OK" and out[1]["response"]["etag"] == 'W/"2"'
    assert out[0]["resource"]["active"] is False  # GETs run after the writes
    searchset = out[2]["resource"]
    assert searchset["type"] == "searchset" and searchset["total"] == 1
    assert "active" not in out[3]["resource"]


def test_batch_entries_are_independent(store: Store) -> None:
    pid = store.create(_patient("b1")).res_id
    bundle = _bundle(
        "batch",
        _entry("POST", "Patient", _patient("b2")),
        _entry("PUT", f"Patient/{pid}", {**_patient("b1"), "id": pid}, request={"ifMatch": 'W/"9"'}),
        _entry("GET", "Patient/missing"),
        _entry("POST", "Encounter", _encounter("urn:uuid:00000000-0000-4000-8000-00000000beef")),
        _entry("DELETE", f"Patient/{pid}"),
        {"request": {"method": "FETCH", "url": "Patient"}},
    )
    out = store.process_bundle(bundle)
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == [
        "201 Created",
        "412 Precondition Failed",
        "404 Not Found",
        "400 Bad Request",
        "204 No Content",
        "400 Bad Request",
    ]
    for failed in (out["entry"][1], out["entry"][2], out["entry"][3], out["entry"][5]):
        outcome = failed["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert store.count("Patient") == 1  # b2 created, pid deleted


def test_malformed_bundles(store: Store) -> None:
    bundles: list[dict[str, Any]] = [
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "transaction", "entry": {}},
        _bundle("transaction", _entry("POST", "Patient/1", _patient("x"))),
        _bundle("transaction", _entry("PUT", "Patient", _patient("x"))),
        _bundle("transaction", _entry("POST", "Observation", _patient("x"))),
        _bundle("transaction", _entry("PATCH", "Patient/1", _patient("x"))),
    ]
    for bundle in bundles:
        with pytest.raises(RhipError) as exc:
            store.process_bundle(bundle)
        assert exc.value.status in (400, 422)
    assert store.count() == 0


def test_conditional_reference_to_a_resource_created_earlier_in_the_transaction(store: Store) -> None:
    org_sys = "urn:oid:2.16.156.10011.1.5"
    org = {"resourceType": "Organization", "identifier": [{"system": org_sys, "value": "H1"}], "name": "A"}
    encounter = {
        **_encounter(P_UUID),
        "serviceProvider": {"reference": f"Organization?identifier={org_sys}|H1"},
    }
    bundle = _bundle(
        "transaction",
        _entry("POST", "Organization", org, request={"ifNoneExist": f"identifier={org_sys}|H1"}),
        _entry("POST", "Patient", _patient("o1"), fullUrl=P_UUID),
        _entry("POST", "Encounter", encounter),
    )
    out = store.process_bundle(bundle)["entry"]
    org_id = out[0]["resource"]["id"]
    assert out[2]["resource"]["serviceProvider"]["reference"] == f"Organization/{org_id}"
    again = store.process_bundle(bundle)["entry"]
    assert again[0]["response"]["status"] == "200 OK"
    assert again[2]["resource"]["serviceProvider"]["reference"] == f"Organization/{org_id}"
    assert store.count("Organization") == 1
