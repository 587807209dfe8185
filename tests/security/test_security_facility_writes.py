"""A facility's ``system`` account writes only its own facility's records over FHIR.

Each test builds the app over a fresh store (SQLite and PostgreSQL) holding two facilities, orgA
and orgB, each with a resident, an Encounter and an Observation that names its facility only
through the Encounter, and a third facility orgC. ``his-a``, ``his-b`` and ``his-c`` are the
facilities' feeds (``system`` accounts bound to orgA, orgB, orgC), ``hub`` a regional connector
bound to no facility, ``admin`` a platform admin who checks what was stored.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from security_seed import secured_app

from rhip.security.audit import iter_entries

LOINC = "http://loinc.org"
ENC_IDS = "urn:example:encounter"


def _ref(text: str) -> dict[str, str]:
    return {"reference": text}


def _patient(rid: str, org: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid, "gender": "female"}
    if org:
        body["managingOrganization"] = _ref(f"Organization/{org}")
    return body


def _encounter(patient: str, org: str, rid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref(f"Patient/{patient}"),
        "serviceProvider": _ref(f"Organization/{org}"),
    }
    if rid:
        body["id"] = rid
        body["identifier"] = [{"system": ENC_IDS, "value": rid}]
    return body


def _observation(patient: str, encounter: str, rid: str | None = None) -> dict[str, Any]:
    """An Observation whose facility is found only through its Encounter."""
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": _ref(f"Patient/{patient}"),
        "encounter": _ref(encounter),
    }
    if rid:
        body["id"] = rid
    return body


def _seed() -> list[dict[str, Any]]:
    return [
        {"resourceType": "Organization", "id": "orgA", "name": "Hospital A"},
        {"resourceType": "Organization", "id": "orgB", "name": "Hospital B"},
        {"resourceType": "Organization", "id": "orgC", "name": "Community Health Centre C"},
        {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Li"}]},
        _patient("pA", "orgA"),
        _patient("pB", "orgB"),
        _patient("pNone", None),
        _encounter("pA", "orgA", "encA"),
        _encounter("pB", "orgB", "encB"),
        _observation("pA", "Encounter/encA", "obsA"),
        _observation("pB", "Encounter/encB", "obsB"),
    ]


@dataclass
class Facilities:
    """The app's test client and a header set per account."""

    client: TestClient
    app: Any
    headers: dict[str, dict[str, str]]

    def call(self, who: str, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        """One FHIR request as ``who`` (JSON body, or a JSON Patch for PATCH)."""
        sent = dict(self.headers[who])
        sent["content-type"] = "application/json-patch+json" if method == "PATCH" else "application/fhir+json"
        sent.update(headers)
        content = None if body is None else orjson.dumps(body)
        return self.client.request(method, f"/fhir/{path}", content=content, headers=sent)

    def stored(self, path: str) -> httpx.Response:
        """What the store holds, read as the platform admin."""
        return self.call("admin", "GET", path)

    def audit(self) -> list[dict[str, Any]]:
        """Every audit entry written so far."""
        self.app.state.security.writer.flush()
        return [entry for _, entry in iter_entries(self.app.state.store.engine)]


@pytest.fixture
def facilities(db_url: str, tmp_path: Path) -> Iterator[Facilities]:
    """The API with authentication on over a seeded store (SQLite and PostgreSQL)."""
    from rhip.security.testing import issue_token

    app = secured_app(db_url, tmp_path, _seed())
    accounts = {
        "his-a": {"role": "system", "organization_id": "orgA"},
        "his-b": {"role": "system", "organization_id": "orgB"},
        "his-c": {"role": "system", "organization_id": "orgC"},
        "hub": {"role": "system"},
        "admin": {"role": "platform_admin"},
    }
    with TestClient(app) as client:
        headers = {
            name: {"Authorization": f"Bearer {issue_token(app, username=name, **kw)}"}
            for name, kw in accounts.items()
        }
        yield Facilities(client, app, headers)
    app.state.store.close()


def _refused(response: httpx.Response, *named: str) -> str:
    """Assert a 403 OperationOutcome whose diagnostics name every facility in ``named``."""
    assert response.status_code == 403, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = " ".join(str(issue.get("diagnostics")) for issue in outcome["issue"])
    for name in named:
        assert name in text, text
    return text


def test_create_only_at_the_accounts_own_facility(facilities: Facilities) -> None:
    own = facilities.call("his-a", "POST", "Encounter", _encounter("pA", "orgA"))
    assert own.status_code == 201, own.text
    other = facilities.call("his-a", "POST", "Encounter", _encounter("pB", "orgB"))
    _refused(other, "orgB", "orgA")
    found = facilities.stored("Encounter?service-provider=Organization/orgB").json()
    assert {e["resource"]["id"] for e in found.get("entry", [])} == {"encB"}
    conditional = facilities.call(
        "his-a", "POST", "Encounter", _encounter("pB", "orgB"), **{"If-None-Exist": "identifier=nothing|x"}
    )
    _refused(conditional, "orgB", "orgA")


def test_observation_facility_is_found_through_its_encounter(facilities: Facilities) -> None:
    own = facilities.call("his-a", "POST", "Observation", _observation("pA", "Encounter/encA"))
    assert own.status_code == 201, own.text
    other = facilities.call("his-a", "POST", "Observation", _observation("pB", "Encounter/encB"))
    _refused(other, "orgB", "orgA")
    update = facilities.call(
        "his-a", "PUT", "Observation/obsB", {**_observation("pB", "Encounter/encB"), "id": "obsB"}
    )
    _refused(update, "orgB", "orgA")


def test_update_patch_and_delete_of_another_facilitys_record_are_refused(facilities: Facilities) -> None:
    mine = facilities.call(
        "his-a", "PUT", "Encounter/encA", {**_encounter("pA", "orgA", "encA"), "status": "cancelled"}
    )
    assert mine.status_code == 200, mine.text
    theirs = facilities.call(
        "his-a", "PUT", "Encounter/encB", {**_encounter("pB", "orgB", "encB"), "status": "cancelled"}
    )
    _refused(theirs, "orgB", "orgA")
    status = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    _refused(facilities.call("his-a", "PATCH", "Encounter/encB", status), "orgB", "orgA")
    assert facilities.call("his-a", "PATCH", "Encounter/encA", status).status_code == 200
    _refused(facilities.call("his-a", "DELETE", "Encounter/encB"), "orgB", "orgA")
    _refused(facilities.call("his-a", "DELETE", f"Encounter?identifier={ENC_IDS}|encB"), "orgB", "orgA")
    _refused(
        facilities.call(
            "his-a", "PUT", f"Encounter?identifier={ENC_IDS}|encB", _encounter("pB", "orgB", "encB")
        ),
        "orgB",
        "orgA",
    )
    _refused(
        facilities.call("his-a", "PATCH", f"Encounter?identifier={ENC_IDS}|encB", status), "orgB", "orgA"
    )
    kept = facilities.stored("Encounter/encB").json()
    assert kept["status"] == "finished" and kept["meta"]["versionId"] == "1"
    assert facilities.call("his-a", "DELETE", "Observation/obsA").status_code in (200, 204)


def test_rewriting_the_organisation_reference_does_not_take_a_record_over(facilities: Facilities) -> None:
    takeover = facilities.call("his-a", "PUT", "Encounter/encB", _encounter("pB", "orgA", "encB"))
    _refused(takeover, "orgB", "orgA")
    move = [{"op": "replace", "path": "/serviceProvider/reference", "value": "Organization/orgA"}]
    _refused(facilities.call("his-a", "PATCH", "Encounter/encB", move), "orgB", "orgA")
    give_away = facilities.call("his-a", "PUT", "Encounter/encA", _encounter("pA", "orgB", "encA"))
    _refused(give_away, "orgB", "orgA")
    away = [{"op": "replace", "path": "/serviceProvider/reference", "value": "Organization/orgB"}]
    _refused(facilities.call("his-a", "PATCH", "Encounter/encA", away), "orgB", "orgA")
    assert facilities.stored("Encounter/encB").json()["serviceProvider"]["reference"] == "Organization/orgB"
    assert facilities.stored("Encounter/encA").json()["serviceProvider"]["reference"] == "Organization/orgA"


def test_records_without_a_facility(facilities: Facilities) -> None:
    """Own Organization and shared directory data are writable; a resident's record must name a facility."""
    own_org = facilities.call(
        "his-a", "PUT", "Organization/orgA", {"resourceType": "Organization", "id": "orgA", "name": "A"}
    )
    assert own_org.status_code == 200, own_org.text
    ward = {"resourceType": "Organization", "name": "Ward 3", "partOf": _ref("Organization/orgA")}
    assert facilities.call("his-a", "POST", "Organization", ward).status_code == 201
    other_org = {"resourceType": "Organization", "id": "orgB", "name": "Renamed"}
    _refused(facilities.call("his-a", "PUT", "Organization/orgB", other_org), "orgB", "orgA")
    practitioner = {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Wang"}]}
    assert facilities.call("his-a", "PUT", "Practitioner/pr1", practitioner).status_code == 200
    _refused(facilities.call("his-a", "PUT", "Patient/pNone", _patient("pNone", None)), "orgA")
    assert facilities.call("his-a", "POST", "Patient", _patient("x", "orgA")).status_code == 201


def _entry(
    method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _patch_entry(url: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(ops)).decode(),
    }
    return _entry("PATCH", url, binary)


def _observation_count(facilities: Facilities) -> int:
    return int(facilities.stored("Observation?_summary=count").json()["total"])


def test_transaction_mixing_facilities_is_refused_whole(facilities: Facilities) -> None:
    before = _observation_count(facilities)
    mixed = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry("POST", "Observation", _observation("pA", "Encounter/encA")),
            _entry("POST", "Observation", _observation("pB", "Encounter/encB")),
        ],
    }
    _refused(facilities.call("his-a", "POST", "", mixed), "orgB", "orgA")
    assert _observation_count(facilities) == before
    placeholder = "urn:uuid:7d3c1a52-0d36-4b5e-9d7e-3f4a1c2b9e01"
    own = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry("POST", "Encounter", _encounter("pA", "orgA"), full_url=placeholder),
            _entry("POST", "Observation", _observation("pA", placeholder)),
        ],
    }
    done = facilities.call("his-a", "POST", "", own)
    assert done.status_code == 200, done.text
    assert _observation_count(facilities) == before + 1
    takeover = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry("PUT", "Encounter/encA", _encounter("pA", "orgA", "encA")),
            _entry("DELETE", "Observation/obsB"),
        ],
    }
    _refused(facilities.call("his-a", "POST", "", takeover), "orgB", "orgA")
    assert facilities.stored("Observation/obsB").status_code == 200
    assert facilities.stored("Encounter/encA").json()["meta"]["versionId"] == "1"


def test_batch_refuses_each_foreign_entry_on_its_own(facilities: Facilities) -> None:
    before = _observation_count(facilities)
    move = [{"op": "replace", "path": "/serviceProvider/reference", "value": "Organization/orgA"}]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            _entry("POST", "Observation", _observation("pA", "Encounter/encA")),
            _entry("POST", "Observation", _observation("pB", "Encounter/encB")),
            _patch_entry("Encounter/encB", move),
            _entry("DELETE", f"Encounter?identifier={ENC_IDS}|encB"),
            _entry("GET", "Encounter/encB"),
        ],
    }
    answer = facilities.call("his-a", "POST", "", batch)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[4].startswith("200"), statuses
    for denied in answer.json()["entry"][1:4]:
        assert denied["response"]["status"].startswith("403"), statuses
        text = " ".join(i["diagnostics"] for i in denied["response"]["outcome"]["issue"])
        assert "orgB" in text and "orgA" in text, text
    assert _observation_count(facilities) == before + 1
    kept = facilities.stored("Encounter/encB").json()
    assert kept["serviceProvider"]["reference"] == "Organization/orgB" and kept["meta"]["versionId"] == "1"
    denials = [e for e in facilities.audit() if e["actor"] == "his-a" and e["outcome"] == "4"]
    assert {e["action"] for e in denials} >= {"create", "patch", "delete"}, denials
    assert any("Encounter/encB" in e["entities"] for e in denials), denials


def test_unbound_system_account_writes_as_before(facilities: Facilities) -> None:
    """A regional hub bound to no facility keeps writing for every facility; only the bound feed is held."""
    assert (
        facilities.call("hub", "POST", "Observation", _observation("pB", "Encounter/encB")).status_code == 201
    )
    update = facilities.call(
        "hub", "PUT", "Encounter/encB", {**_encounter("pB", "orgB", "encB"), "status": "cancelled"}
    )
    assert update.status_code == 200, update.text
    assert facilities.call("hub", "PUT", "Patient/pNone", _patient("pNone", None)).status_code == 200
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            _entry("POST", "Observation", _observation(p, f"Encounter/enc{p[-1]}")) for p in ("pA", "pB")
        ],
    }
    statuses = [e["response"]["status"] for e in facilities.call("hub", "POST", "", batch).json()["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    held = [e["response"]["status"] for e in facilities.call("his-a", "POST", "", batch).json()["entry"]]
    assert held[0].startswith("201") and held[1].startswith("403"), held
    assert facilities.call("hub", "DELETE", "Observation/obsB").status_code in (200, 204)


def test_reads_of_other_facilities_are_unchanged(facilities: Facilities) -> None:
    """The feed that may not write orgB's records still reads them (sharing is the platform's purpose)."""
    _refused(facilities.call("his-a", "DELETE", "Encounter/encB"), "orgB", "orgA")
    assert facilities.call("his-a", "GET", "Encounter/encB").status_code == 200
    assert facilities.call("his-a", "GET", "Observation/obsB").status_code == 200
    found = facilities.call("his-a", "GET", "Encounter").json()
    assert {e["resource"]["id"] for e in found["entry"]} == {"encA", "encB"}


def test_denials_are_audited(facilities: Facilities) -> None:
    _refused(facilities.call("his-a", "PUT", "Encounter/encB", _encounter("pB", "orgA", "encB")), "orgB")
    _refused(facilities.call("his-a", "DELETE", "Observation/obsB"), "orgB")
    _refused(facilities.call("his-a", "POST", "Encounter", _encounter("pB", "orgB")), "orgB")
    denials = [e for e in facilities.audit() if e["actor"] == "his-a" and e["outcome"] == "4"]
    assert {(e["action"], tuple(e["entities"])) for e in denials} >= {
        ("update", ("Encounter/encB",)),
        ("delete", ("Observation/obsB",)),
    }, denials
    assert any(e["action"] == "create" for e in denials), denials
    assert all(e["role"] == "system" for e in denials)


# -- requests naming a requesting and an addressed facility (referrals, 转诊) -------------------


def _org(org: str) -> dict[str, str]:
    return _ref(f"Organization/{org}")


def _referral(requester: dict[str, str], performer: str, encounter: str | None = None) -> dict[str, Any]:
    """A referral (ServiceRequest) from ``requester`` to facility ``performer`` for resident pA."""
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"text": "cardiology referral"},
        "subject": _ref("Patient/pA"),
        "requester": requester,
        "performer": [_org(performer)],
    }
    if encounter:
        body["encounter"] = _ref(encounter)
    return body


def _request(kind: str, requester: str, addressee: str) -> dict[str, Any]:
    """A request of ``kind`` made by facility ``requester`` and addressed to ``addressee``."""
    subject = _ref("Patient/pA")
    if kind == "ServiceRequest.performer":
        return _referral(_org(requester), addressee)
    if kind.startswith("MedicationRequest."):
        body: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "insulin glargine"},
            "subject": subject,
            "requester": _org(requester),
        }
        if kind == "MedicationRequest.performer":  # who is to administer it (a community centre)
            body["performer"] = _org(addressee)
        else:  # the pharmacy that is to dispense it (处方流转)
            body["dispenseRequest"] = {"performer": _org(addressee)}
        return body
    if kind == "DeviceRequest.performer":
        return {
            "resourceType": "DeviceRequest",
            "status": "active",
            "intent": "order",
            "codeCodeableConcept": {"text": "home glucose meter"},
            "subject": subject,
            "requester": _org(requester),
            "performer": _org(addressee),
        }
    assert kind == "Task.owner", kind
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": subject,
        "requester": _org(requester),
        "owner": _org(addressee),
    }


REQUEST_KINDS = [
    "ServiceRequest.performer",
    "MedicationRequest.performer",
    "MedicationRequest.dispenseRequest.performer",
    "DeviceRequest.performer",
    "Task.owner",
]


def _set_status(status: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/status", "value": status}]


@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_a_request_is_written_by_its_requester_and_updated_by_its_addressee(
    facilities: Facilities, kind: str
) -> None:
    """Regression: orgA's own referral to orgB counted as orgB's (performer before requester)."""
    body = _request(kind, "orgA", "orgB")
    created = facilities.call("his-a", "POST", body["resourceType"], body)
    assert created.status_code == 201, created.text
    path = f"{body['resourceType']}/{created.json()['id']}"
    done = "accepted" if kind == "Task.owner" else "completed"
    accepted = facilities.call("his-b", "PATCH", path, _set_status(done))
    assert accepted.status_code == 200, accepted.text
    again = facilities.call("his-a", "PUT", path, {**created.json(), "status": "entered-in-error"})
    assert again.status_code == 200, again.text
    _refused(facilities.call("his-c", "PATCH", path, _set_status(done)), "orgA", "orgB", "orgC")
    _refused(facilities.call("his-c", "POST", body["resourceType"], body), "orgA", "orgB", "orgC")
    _refused(facilities.call("his-b", "DELETE", path), "orgA", "orgB")
    _refused(facilities.call("his-b", "POST", body["resourceType"], body), "orgA", "orgB")
    assert facilities.stored(path).json()["status"] == "entered-in-error"
    assert facilities.call("his-a", "DELETE", path).status_code in (200, 204)


def test_the_facility_a_referral_is_addressed_to_cannot_take_it_over(facilities: Facilities) -> None:
    """Regression: orgB, the referral's performer, could rewrite orgA's referral as its own or delete it."""
    created = facilities.call("hub", "POST", "ServiceRequest", _referral(_org("orgA"), "orgB"))
    assert created.status_code == 201, created.text
    path = f"ServiceRequest/{created.json()['id']}"
    stored = created.json()
    takeover = facilities.call("his-b", "PUT", path, {**stored, "requester": _org("orgB")})
    _refused(takeover, "orgA", "orgB")
    forward = [{"op": "replace", "path": "/performer/0/reference", "value": "Organization/orgC"}]
    _refused(facilities.call("his-b", "PATCH", path, forward), "orgA", "orgB")
    anonymous = [{"op": "replace", "path": "/requester", "value": _ref("Practitioner/pr1")}]
    _refused(facilities.call("his-b", "PATCH", path, anonymous), "orgA", "orgB")
    _refused(facilities.call("his-b", "PUT", path, {**stored, "encounter": _ref("Encounter/encB")}), "orgB")
    _refused(facilities.call("his-b", "DELETE", path), "orgA", "orgB")
    kept = facilities.stored(path).json()
    assert kept["meta"]["versionId"] == "1" and kept["requester"] == _org("orgA")
    nobodys = _referral(_ref("Practitioner/pr1"), "orgB")  # no requesting facility, no Encounter
    _refused(facilities.call("his-b", "POST", "ServiceRequest", nobodys), "orgB")
    _refused(facilities.call("his-a", "POST", "ServiceRequest", nobodys), "orgB", "orgA")


def test_the_requester_redirects_a_referral_but_cannot_drop_itself(facilities: Facilities) -> None:
    """Regression: orgA could not redirect its own referral; it still may not re-point it away from itself."""
    created = facilities.call("hub", "POST", "ServiceRequest", _referral(_org("orgA"), "orgB"))
    path = f"ServiceRequest/{created.json()['id']}"
    redirect = [{"op": "replace", "path": "/performer/0/reference", "value": "Organization/orgC"}]
    moved = facilities.call("his-a", "PATCH", path, redirect)
    assert moved.status_code == 200, moved.text
    stored = moved.json()
    _refused(facilities.call("his-a", "PUT", path, {**stored, "requester": _org("orgC")}), "orgC", "orgA")
    _refused(facilities.call("his-a", "PUT", path, {**stored, "requester": _org("orgB")}), "orgB", "orgA")
    _refused(facilities.call("his-b", "PATCH", path, _set_status("completed")), "orgA", "orgB")
    assert facilities.call("his-c", "PATCH", path, _set_status("completed")).status_code == 200
    kept = facilities.stored(path).json()
    assert kept["requester"] == _org("orgA") and kept["performer"] == [_org("orgC")]


def test_an_outside_laboratorys_result_belongs_to_the_lab_and_the_encounters_facility(
    facilities: Facilities,
) -> None:
    """Regression: orgA's feed could not write orgB's laboratory result in its own Encounter, while
    orgB's feed could move it out of that Encounter or delete it."""
    result = {**_observation("pA", "Encounter/encA"), "performer": [_org("orgB")]}
    created = facilities.call("his-a", "POST", "Observation", result)
    assert created.status_code == 201, created.text
    assert facilities.call("his-b", "POST", "Observation", result).status_code == 201
    path = f"Observation/{created.json()['id']}"
    stored = created.json()
    for feed in ("his-b", "his-a"):
        amended = facilities.call(feed, "PUT", path, {**stored, "status": "amended"})
        assert amended.status_code == 200, amended.text
    _refused(facilities.call("his-b", "PUT", path, {**stored, "encounter": _ref("Encounter/encB")}), "orgA")
    _refused(facilities.call("his-a", "PUT", path, {**stored, "performer": [_org("orgA")]}), "orgB")
    _refused(facilities.call("his-b", "DELETE", path), "orgA", "orgB")
    _refused(facilities.call("his-a", "DELETE", path), "orgA", "orgB")
    _refused(facilities.call("his-c", "PUT", path, stored), "orgA", "orgB", "orgC")
    kept = facilities.stored(path).json()
    assert kept["encounter"] == _ref("Encounter/encA") and kept["performer"] == [_org("orgB")]


def test_referrals_in_bundles(facilities: Facilities) -> None:
    """Regression: a transaction's referral whose facility is its new Encounter counted as the performer's;
    the performer's batch could delete or take over the referral."""
    placeholder = "urn:uuid:0b6f2a8e-5c1d-4f4e-9a63-2d7c5e8f1a10"
    own = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry("POST", "Encounter", _encounter("pA", "orgA"), full_url=placeholder),
            _entry("POST", "ServiceRequest", _referral(_ref("Practitioner/pr1"), "orgB", placeholder)),
        ],
    }
    done = facilities.call("his-a", "POST", "", own)
    assert done.status_code == 200, done.text
    path = done.json()["entry"][1]["response"]["location"].split("/_history/")[0]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            _patch_entry(path, _set_status("completed")),
            _entry("DELETE", path),
            _entry("PUT", path, {**facilities.stored(path).json(), "requester": _org("orgB")}),
        ],
    }
    answer = facilities.call("his-b", "POST", "", batch)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses[0].startswith("200") and all(s.startswith("403") for s in statuses[1:]), statuses
    kept = facilities.stored(path).json()
    assert kept["status"] == "completed" and kept["requester"] == _ref("Practitioner/pr1")
    denials = [e for e in facilities.audit() if e["actor"] == "his-b" and e["outcome"] == "4"]
    assert {e["action"] for e in denials} >= {"delete", "update"}, denials
    assert all(path in e["entities"] for e in denials), denials


def test_device_owner_service_provider_and_performer_on_behalf_of_name_the_facility(
    facilities: Facilities,
) -> None:
    """Regression: Device.owner, HealthcareService.providedBy and Procedure.performer.onBehalfOf
    were not read, so B's device and service were shared data any feed rewrote, and a Procedure
    done on behalf of B named no facility (refused to B's own feed)."""
    device = {"resourceType": "Device", "id": "devB", "owner": _org("orgB")}
    service = {"resourceType": "HealthcareService", "id": "hsB", "providedBy": _org("orgB")}
    for body, change in ((device, {"status": "inactive"}), (service, {"active": False})):
        path = f"{body['resourceType']}/{body['id']}"
        assert facilities.call("his-b", "PUT", path, body).status_code == 201
        _refused(facilities.call("his-a", "PUT", path, {**body, **change}), "orgB", "orgA")
        assert facilities.call("his-b", "PUT", path, {**body, **change}).status_code == 200
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": _ref("Patient/pB"),
        "code": {"text": "dressing"},
        "performer": [{"actor": _ref("Practitioner/pr1"), "onBehalfOf": _org("orgB")}],
    }
    assert facilities.call("his-b", "POST", "Procedure", procedure).status_code == 201
    _refused(facilities.call("his-a", "POST", "Procedure", procedure), "orgB", "orgA")


def _units(facilities: Facilities) -> None:
    """orgA's post PractitionerRole/roleA and orgB's department HealthcareService/hsB, each written
    by its own facility's feed."""
    role = {"resourceType": "PractitionerRole", "id": "roleA", "organization": _org("orgA")}
    service = {"resourceType": "HealthcareService", "id": "hsB", "providedBy": _org("orgB")}
    assert facilities.call("his-a", "PUT", "PractitionerRole/roleA", role).status_code == 201
    assert facilities.call("his-b", "PUT", "HealthcareService/hsB", service).status_code == 201


def test_a_referral_from_a_role_to_a_department_is_the_requesters_and_addressed_to_the_department(
    facilities: Facilities,
) -> None:
    """Regression: a PractitionerRole requester and a HealthcareService performer named no facility,
    so orgA's feed could not create its referral to orgB's department (a resident's record naming no
    facility) and orgB's feed could not accept it."""
    _units(facilities)
    body = {
        **_referral(_ref("PractitionerRole/roleA"), "orgB"),
        "performer": [_ref("HealthcareService/hsB")],
    }
    created = facilities.call("his-a", "POST", "ServiceRequest", body)
    assert created.status_code == 201, created.text
    path = f"ServiceRequest/{created.json()['id']}"
    accepted = facilities.call("his-b", "PATCH", path, _set_status("completed"))
    assert accepted.status_code == 200, accepted.text
    _refused(facilities.call("his-c", "PATCH", path, _set_status("revoked")), "orgA", "orgB", "orgC")
    _refused(facilities.call("his-c", "POST", "ServiceRequest", body), "orgA", "orgB", "orgC")
    _refused(facilities.call("his-b", "POST", "ServiceRequest", body), "orgA", "orgB", "addressed to")
    _refused(facilities.call("his-b", "DELETE", path), "orgA", "orgB")
    redirected = [{"op": "replace", "path": "/performer/0", "value": _org("orgB")}]
    _refused(facilities.call("his-b", "PATCH", path, redirected), "orgA", "orgB")
    assert facilities.stored(path).json()["status"] == "completed"
    # a role or a service that is not found resolves to no facility, as an unknown Encounter does
    ghost = {**body, "requester": _ref("PractitionerRole/ghost")}
    _refused(facilities.call("his-a", "POST", "ServiceRequest", ghost), "orgB", "orgA")
    lost = {**body, "performer": [_ref("HealthcareService/ghost")]}
    assert facilities.call("his-a", "POST", "ServiceRequest", lost).status_code == 201


def test_a_role_named_as_performer_counts_for_its_facility_in_a_shared_record(facilities: Facilities) -> None:
    """Regression: orgA's post (PractitionerRole) performing a result in orgB's Encounter did not make
    the result orgA's too, so orgA's feed could not write it and orgB's could drop orgA from it."""
    _units(facilities)
    result = {**_observation("pB", "Encounter/encB"), "performer": [_ref("PractitionerRole/roleA")]}
    created = facilities.call("his-a", "POST", "Observation", result)
    assert created.status_code == 201, created.text
    path = f"Observation/{created.json()['id']}"
    stored = created.json()
    amended = facilities.call("his-b", "PUT", path, {**stored, "status": "amended"})
    assert amended.status_code == 200, amended.text
    _refused(facilities.call("his-b", "PUT", path, {**stored, "performer": [_org("orgB")]}), "orgA")
    _refused(facilities.call("his-b", "DELETE", path), "orgA", "orgB")
    _refused(facilities.call("his-c", "PUT", path, stored), "orgA", "orgB", "orgC")
    assert facilities.stored(path).json()["performer"] == [_ref("PractitionerRole/roleA")]


def test_a_role_written_earlier_in_the_same_transaction_names_the_facility(facilities: Facilities) -> None:
    """Regression: a referral whose requester was a PractitionerRole created by an earlier entry of
    the same transaction named no facility and was refused to the requesting facility's feed."""
    _units(facilities)
    placeholder = "urn:uuid:6d1c3f0e-8a4b-4c2e-b7d9-1f5e2a9c4b70"
    role = {"resourceType": "PractitionerRole", "organization": _org("orgA")}
    referral = {**_referral(_ref(placeholder), "orgB"), "performer": [_ref("HealthcareService/hsB")]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry("POST", "PractitionerRole", role, full_url=placeholder),
            _entry("POST", "ServiceRequest", referral),
        ],
    }
    _refused(facilities.call("his-c", "POST", "", bundle), "orgC")
    done = facilities.call("his-a", "POST", "", bundle)
    assert done.status_code == 200, done.text
    path = done.json()["entry"][1]["response"]["location"].split("/_history/")[0]
    accepted = facilities.call("his-b", "PATCH", path, _set_status("completed"))
    assert accepted.status_code == 200, accepted.text
    _refused(facilities.call("his-c", "PATCH", path, _set_status("revoked")), "orgA", "orgB", "orgC")
