"""Seed records and the expected visibility matrix shared by the security HTTP tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id

ICD = "http://hl7.org/fhir/sid/icd-10"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def _ref(text: str) -> dict[str, str]:
    return {"reference": text}


def _enc(rid: str, patient: str, org: str, prac: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": rid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref(f"Patient/{patient}"),
        "serviceProvider": _ref(f"Organization/{org}"),
    }
    if prac:
        body["participant"] = [{"individual": _ref(f"Practitioner/{prac}")}]
    return body


def _cond(rid: str, patient: str, enc: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": _ref(f"Patient/{patient}"),
        "encounter": _ref(f"Encounter/{enc}"),
        "code": {"coding": [{"system": ICD, "code": code}]},
    }


def _obs(rid: str, patient: str, enc: str | None, category: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": _ref(f"Patient/{patient}"),
        "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    }
    if enc:
        body["encounter"] = _ref(f"Encounter/{enc}")
    return body


def _pat(rid: str, district: str, gp: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid, "address": [{"district": district}]}
    if gp:
        body["generalPractitioner"] = [_ref(f"Practitioner/{gp}")]
    return body


def consent(
    rid: str, patient: str, *, opt_out: bool = False, deny_labels: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An active Consent: opt out of sharing, or deny sensitive categories by security label."""
    provision: dict[str, Any] = {"type": "deny" if opt_out else "permit"}
    if deny_labels:
        provision["provision"] = [
            {
                "type": "deny",
                "securityLabel": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": c}
                    for c in deny_labels
                ],
            }
        ]
    return {
        "resourceType": "Consent",
        "id": rid,
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": _ref(f"Patient/{patient}"),
        "provision": provision,
    }


def seed_resources() -> list[dict[str, Any]]:
    """Two facilities, four residents with different relationships and consent choices."""
    return [
        {"resourceType": "Organization", "id": "orgA", "name": "A"},
        {"resourceType": "Organization", "id": "orgB", "name": "B"},
        {"resourceType": "Practitioner", "id": "docA"},
        _pat("pat1", "110105"),
        _enc("encA1", "pat1", "orgA", "docA"),
        _obs("obs1", "pat1", "encA1", "vital-signs"),
        _cond("cond1", "pat1", "encA1", "F32.9"),
        _enc("encB1", "pat1", "orgB"),
        _obs("obsB1", "pat1", "encB1", "vital-signs"),
        {
            "resourceType": "Claim",
            "id": "claim1",
            "status": "active",
            "use": "claim",
            "created": "2024-01-01",
            "type": {"coding": [{"code": "institutional"}]},
            "priority": {"coding": [{"code": "normal"}]},
            "patient": _ref("Patient/pat1"),
            "provider": _ref("Organization/orgA"),
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "NHSA"}}],
        },
        _pat("pat2", "110106"),
        consent("consent2", "pat2", opt_out=True),
        _enc("encA2", "pat2", "orgA"),
        _enc("encB2", "pat2", "orgB"),
        _cond("cond2", "pat2", "encB2", "A09"),
        _obs("obs2", "pat2", "encB2", "laboratory"),
        _pat("pat3", "110105"),
        consent("consent3", "pat3", deny_labels=("PSY",)),
        _enc("encA3", "pat3", "orgA", "docA"),
        _cond("cond3", "pat3", "encA3", "F20.0"),
        _obs("obs3", "pat3", "encA3", "vital-signs"),
        _pat("pat4", "110107", gp="docGP"),
        _obs("obs4", "pat4", None, "vital-signs"),
    ]


DIRECTORY = {"orgA", "orgB", "docA"}
PAT1 = {"pat1", "encA1", "obs1", "cond1", "encB1", "obsB1", "claim1"}
EVERYTHING = {r["id"] for r in seed_resources()}

#: Role account -> the ids it must see, exactly (consent resources excluded from type checks).
EXPECTED: dict[str, set[str]] = {
    "resident1": DIRECTORY | PAT1,
    "docA": DIRECTORY | PAT1 | {"pat2", "encA2"} | {"pat3", "encA3", "obs3", "consent3"},
    "docB": DIRECTORY | PAT1 | {"pat2", "encB2", "cond2", "obs2"},
    "docGP": DIRECTORY | {"pat4", "obs4"},
    "ph": {"pat2", "encA2", "encB2", "cond2", "obs2"},
    "insurance": {"pat1", "pat2", "pat3", "pat4", "encA1", "encB1", "encA2", "encB2", "encA3", "claim1"},
    "researcher": set(),
    "facadmin": DIRECTORY,
    "admin": EVERYTHING,
    "system": EVERYTHING,
}

#: Role account -> (role, token bindings).
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "resident1": ("resident", {"patient_id": "pat1"}),
    "docA": ("practitioner", {"practitioner_id": "docA", "organization_id": "orgA"}),
    "docB": ("practitioner", {"practitioner_id": "docB", "organization_id": "orgB"}),
    "docGP": ("practitioner", {"practitioner_id": "docGP"}),
    "ph": ("public_health", {"area": "110106"}),
    "insurance": ("insurance_auditor", {}),
    "researcher": ("researcher", {}),
    "facadmin": ("facility_admin", {"organization_id": "orgA"}),
    "admin": ("platform_admin", {}),
    "system": ("system", {}),
}


def _patient(rid: str, org: str, cid: str, name: tuple[str, str], born: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": systems.CITIZEN_ID, "value": cid}],
        "name": [{"use": "official", "family": name[0], "given": [name[1]]}],
        "gender": "male",
        "birthDate": born,
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def linked_resident_records() -> list[dict[str, Any]]:
    """Two records of one man that the matcher will not link by itself (different IDs and names)."""
    cid1 = make_citizen_id("110105", date(1961, 3, 4), 11, "male")
    cid2 = make_citizen_id("440305", date(1958, 9, 30), 13, "male")
    enc = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    return [
        _patient("lp1", "orgA", cid1, ("赵", "立"), "1961-03-04"),
        _patient("lp2", "orgB", cid2, ("孙", "明"), "1958-09-30"),
        {
            **enc,
            "id": "encL1",
            "subject": {"reference": "Patient/lp1"},
            "serviceProvider": {"reference": "Organization/orgA"},
            "participant": [{"individual": {"reference": "Practitioner/docA"}}],
        },
        {
            **enc,
            "id": "encL2",
            "subject": {"reference": "Patient/lp2"},
            "serviceProvider": {"reference": "Organization/orgB"},
        },
        {
            "resourceType": "Observation",
            "id": "obsL2",
            "status": "final",
            "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
            "subject": {"reference": "Patient/lp2"},
            "encounter": {"reference": "Encounter/encL2"},
        },
        {
            "resourceType": "Condition",
            "id": "condL2",
            "subject": {"reference": "Patient/lp2"},
            "encounter": {"reference": "Encounter/encL2"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F41.1"}]},
        },
    ]


def secured_app(db_url: str, data_dir: Any, bodies: list[dict[str, Any]]) -> Any:
    """The API with authentication on over a store at ``db_url`` holding ``bodies``."""
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.store import Store

    store = Store(db_url)
    for body in bodies:
        store.update(body["resourceType"], body["id"], body)
    return create_app(store, Settings(data_dir=data_dir, database_url=db_url, auth_enabled=True))
