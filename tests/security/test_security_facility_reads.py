"""Which records are a practitioner's own facility's when consent keeps records at home.

Over real HTTP (uvicorn, authentication on), on SQLite and PostgreSQL. A resident opted out of
cross-institution sharing; facility A treated them (Encounter encRA), referred them to B
(ServiceRequest srAB: requester A, performer B) and sent a sample to the outside laboratory L,
whose result obsL sits in A's Encounter; facility C treated them too (so C's doctors have a care
relationship but no part in the referral or the result). A record is a reader's own when the
reader's facility is one the record belongs to or, for a request, the one it is addressed to: the
parties the write rule reads (:func:`rhip.security.parties.parties_of`). A second resident was
referred by facility D, which has no other record of them: D's doctors care for them through the
referral they requested. The relationship's two forms (one query per practitioner in SQL, the
per-resident searches) are compared on every kind of relationship. A referral may name a
facility's post or department instead of the Organization (requester PractitionerRole/roleA of A,
performer HealthcareService/hsB of B): those count for their facility, for the records it owns and
for its care relationships alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from security_seed import _enc, _ref, consent, secured_app

from rhip.security.linkage import ORG_LINKS, ORG_UNIT_LINKS
from rhip_testkit import running_server

DOCTORS = {
    "docA": "orgA",
    "docB": "orgB",
    "docC": "orgC",
    "docL": "orgL",
    "docD": "orgD",
    "docX": "orgA",
    "docE": "orgE",
    "docT": "orgT",
}
#: The facilities' feeds (``system`` accounts bound to them).
FEEDS = {"his-a": "orgA", "his-b": "orgB", "his-c": "orgC", "his-d": "orgD"}


def _referral(rid: str | None, patient: str, requester: str, performer: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": _ref(f"Patient/{patient}"),
        "requester": _ref(requester),
        "performer": [_ref(performer)],
    }
    if rid:
        body["id"] = rid
    return body


def _seed() -> list[dict[str, Any]]:
    orgs = sorted(set(DOCTORS.values()))
    return [
        *({"resourceType": "Organization", "id": org} for org in orgs),
        {"resourceType": "Patient", "id": "pR", "managingOrganization": _ref("Organization/orgA")},
        consent("cR", "pR", opt_out=True),
        _enc("encRA", "pR", "orgA"),
        _enc("encRC", "pR", "orgC"),
        _referral("srAB", "pR", "Organization/orgA", "Organization/orgB"),
        _referral("srAL", "pR", "Organization/orgA", "Organization/orgL"),
        {"resourceType": "PractitionerRole", "id": "roleA", "organization": _ref("Organization/orgA")},
        {"resourceType": "HealthcareService", "id": "hsB", "providedBy": _ref("Organization/orgB")},
        _referral("srUnit", "pR", "PractitionerRole/roleA", "HealthcareService/hsB"),
        {
            "resourceType": "Observation",
            "id": "obsL",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": _ref("Patient/pR"),
            "encounter": _ref("Encounter/encRA"),
            "performer": [_ref("Organization/orgL")],
        },
        {"resourceType": "Patient", "id": "pQ"},
        _referral("srDB", "pQ", "Organization/orgD", "Organization/orgB"),
        {"resourceType": "Patient", "id": "pN", "managingOrganization": _ref("Organization/orgB")},
        {"resourceType": "Patient", "id": "pU"},
        _referral("srUnitU", "pU", "PractitionerRole/roleA", "HealthcareService/hsB"),
        *_discharges(),
        *_participating_roles(),
        *_named_in_person(),
        _claim(),
        _claim_response(),
        _explanation_of_benefit(),
    ]


def _claim() -> dict[str, Any]:
    """A's claim for the opted-out resident (provider A's PractitionerRole, insurer D), whose care
    team names facility C and E's PractitionerRole."""
    return {
        "resourceType": "Claim",
        "id": "clA",
        "status": "active",
        "use": "claim",
        "created": "2026-01-01",
        "type": {"coding": [{"code": "institutional"}]},
        "priority": {"coding": [{"code": "normal"}]},
        "patient": _ref("Patient/pR"),
        "provider": _ref("PractitionerRole/roleA"),
        "insurer": _ref("Organization/orgD"),
        "careTeam": [
            {"sequence": 1, "provider": _ref("Organization/orgC")},
            {"sequence": 2, "provider": _ref("PractitionerRole/roleE")},
        ],
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "NHSA"}}],
    }


def _claim_response() -> dict[str, Any]:
    """Insurer D's answer to A's claim, sent to the requestor (A's PractitionerRole)."""
    return {
        "resourceType": "ClaimResponse",
        "id": "crA",
        "status": "active",
        "type": {"coding": [{"code": "institutional"}]},
        "use": "claim",
        "patient": _ref("Patient/pR"),
        "created": "2026-01-02",
        "insurer": _ref("Organization/orgD"),
        "requestor": _ref("PractitionerRole/roleA"),
        "request": _ref("Claim/clA"),
        "outcome": "complete",
    }


def _explanation_of_benefit(rid: str | None = "eobA") -> dict[str, Any]:
    """Insurer D's adjudication of A's claim, addressed to the provider (A)."""
    body: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit",
        "status": "active",
        "type": {"coding": [{"code": "institutional"}]},
        "use": "claim",
        "patient": _ref("Patient/pR"),
        "created": "2026-01-03",
        "insurer": _ref("Organization/orgD"),
        "provider": _ref("Organization/orgA"),
        "claim": _ref("Claim/clA"),
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"display": "NHSA"}}],
    }
    if rid:
        body["id"] = rid
    return body


def _discharges() -> list[dict[str, Any]]:
    """A's Encounters of the opted-out resident discharging them to C (an Organization) and to B
    (a Location of B's), and a result in the first."""
    to_c = {**_enc("encToC", "pR", "orgA"), "hospitalization": {"destination": _ref("Organization/orgC")}}
    to_b = {**_enc("encToB", "pR", "orgA"), "hospitalization": {"destination": _ref("Location/locB")}}
    result = {
        "resourceType": "Observation",
        "id": "obsToC",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": _ref("Patient/pR"),
        "encounter": _ref("Encounter/encToC"),
    }
    return [
        {"resourceType": "Location", "id": "locB", "managingOrganization": _ref("Organization/orgB")},
        to_c,
        to_b,
        result,
    ]


def _participating_roles() -> list[dict[str, Any]]:
    """Residents whose only tie to facilities E and T is E's PractitionerRole taking part in C's
    Encounter and T's PractitionerRole on a CareTeam managed by C."""
    role_e = [{"individual": _ref("PractitionerRole/roleE")}]
    encounter = {**_enc("encPE", "pP", "orgC"), "participant": role_e}
    team = {
        "resourceType": "CareTeam",
        "id": "ctT",
        "subject": _ref("Patient/pT"),
        "managingOrganization": [_ref("Organization/orgC")],
        "participant": [{"member": _ref("PractitionerRole/roleT")}],
    }
    return [
        {"resourceType": "PractitionerRole", "id": "roleE", "organization": _ref("Organization/orgE")},
        {"resourceType": "PractitionerRole", "id": "roleT", "organization": _ref("Organization/orgT")},
        {"resourceType": "Patient", "id": "pP"},
        {"resourceType": "Patient", "id": "pT"},
        encounter,
        team,
    ]


def _named_in_person() -> list[dict[str, Any]]:
    """C's Encounters of the opted-out resident naming A's doctor docA as participant (the
    Practitioner) and A's doctor docX through their PractitionerRole, and a result in C's Encounter
    performed by L's doctor docL and recorded on a CareTeam of C's with docL as member."""
    by_role = [{"individual": _ref("PractitionerRole/roleX")}]
    result = {
        "resourceType": "Observation",
        "id": "obsByL",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": _ref("Patient/pR"),
        "encounter": _ref("Encounter/encRC"),
        "performer": [_ref("Practitioner/docL")],
    }
    team = {
        "resourceType": "CareTeam",
        "id": "ctRC",
        "subject": _ref("Patient/pR"),
        "managingOrganization": [_ref("Organization/orgC")],
        "participant": [{"member": _ref("Practitioner/docL")}],
    }
    return [
        {
            "resourceType": "PractitionerRole",
            "id": "roleX",
            "practitioner": _ref("Practitioner/docX"),
            "organization": _ref("Organization/orgA"),
        },
        {**_enc("encRCa", "pR", "orgC"), "participant": [{"individual": _ref("Practitioner/docA")}]},
        {**_enc("encRCx", "pR", "orgC"), "participant": by_role},
        result,
        team,
    ]


@dataclass
class Server:
    """A running server's FHIR base and a token per practitioner."""

    base: str
    tokens: dict[str, str]

    def request(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request as ``who``."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "content-type": "application/fhir+json"}
        return httpx.request(method, f"{self.base}/{path}", headers=headers, timeout=30, **kw)

    def sees(self, who: str, rtype: str, rid: str) -> bool:
        """True when ``who`` reads the record and finds it by search; both answers must agree."""
        read = self.request(who, "GET", f"{rtype}/{rid}")
        assert read.status_code in (200, 403, 404), read.text
        found = self.request(who, "GET", rtype, params={"_id": rid})
        assert found.status_code == 200, found.text
        assert (found.json()["total"] == 1) == (read.status_code == 200), (who, rtype, rid)
        return read.status_code == 200

    def readers(self, rtype: str, rid: str) -> set[str]:
        """The practitioners who see the record."""
        return {who for who in DOCTORS if self.sees(who, rtype, rid)}


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    """uvicorn over a seeded store (SQLite and PostgreSQL) with authentication on."""
    from rhip.security.testing import issue_token

    app = secured_app(db_url, tmp_path, _seed())
    tokens = {
        who: issue_token(app, role="practitioner", username=who, practitioner_id=who, organization_id=org)
        for who, org in DOCTORS.items()
    }
    for who, org in FEEDS.items():
        tokens[who] = issue_token(app, role="system", username=who, organization_id=org)
    with running_server(app) as root:
        yield Server(f"{root}/fhir", tokens)
    app.state.store.close()


def test_opted_out_referral_is_seen_by_its_requester_and_its_addressee(server: Server) -> None:
    """Regression: A's referral to B counted as B's alone (first Organization named), so under an
    opt-out A's own practitioners could not read it."""
    assert server.readers("ServiceRequest", "srAB") == {"docA", "docX", "docB"}
    listed = server.request("docA", "GET", "ServiceRequest", params={"patient": "Patient/pR"}).json()
    assert {e["resource"]["id"] for e in listed.get("entry", [])} == {"srAB", "srAL", "srUnit"}
    # C cares for the resident too, but only for what is C's: the opt-out keeps the rest away
    assert server.sees("docC", "Encounter", "encRC") and not server.sees("docC", "Encounter", "encRA")


def test_referral_from_a_role_to_a_department_is_seen_by_both_facilities(server: Server) -> None:
    """Regression: a referral requested by A's PractitionerRole and addressed to B's HealthcareService
    named no facility, so under an opt-out neither A's nor B's practitioners could read it."""
    assert server.readers("ServiceRequest", "srUnit") == {"docA", "docX", "docB"}


def test_feeds_write_a_referral_from_a_role_to_a_department(server: Server) -> None:
    """Regression: A's feed could not create its referral from its PractitionerRole to B's
    HealthcareService (it named no facility), nor B's feed accept it."""
    body = _referral(None, "pR", "PractitionerRole/roleA", "HealthcareService/hsB")
    created = server.request("his-a", "POST", "ServiceRequest", json=body)
    assert created.status_code == 201, created.text
    path = f"ServiceRequest/{created.json()['id']}"
    accepted = server.request("his-b", "PUT", path, json={**created.json(), "status": "completed"})
    assert accepted.status_code == 200, accepted.text
    refused = server.request("his-c", "PUT", path, json={**created.json(), "status": "revoked"})
    assert refused.status_code == 403, refused.text
    assert "orgA" in refused.text and "orgB" in refused.text
    assert server.request("his-b", "DELETE", path).status_code == 403
    assert server.readers("ServiceRequest", created.json()["id"]) == {"docA", "docX", "docB"}
    assert server.request("docB", "GET", path).json()["status"] == "completed"


def test_outside_laboratory_result_in_a_facility_encounter_is_both_facilities(server: Server) -> None:
    """Regression: a result performed by laboratory L in A's Encounter counted as L's only."""
    assert server.readers("Observation", "obsL") == {"docA", "docX", "docL"}


def test_requesting_facility_cares_for_the_resident_in_both_forms(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a facility's care relationships counted the referrals addressed to it but not
    those it requested."""
    import rhip.security.relations as relations

    assert server.readers("ServiceRequest", "srDB") == {"docD", "docB"}
    assert server.sees("docD", "Patient", "pQ")
    monkeypatch.setattr(relations, "CARE_SET_MAX", 0)  # one resident at a time, by search
    assert server.readers("ServiceRequest", "srDB") == {"docD", "docB"}


def test_referral_from_a_role_to_a_department_gives_both_facilities_care(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a referral requested by A's PractitionerRole and addressed to B's
    HealthcareService gave neither facility a care relationship with the resident (only
    Organization references counted), in the SQL form and the per-resident form alike."""
    import rhip.security.relations as relations

    assert server.readers("Patient", "pU") == {"docA", "docX", "docB"}
    monkeypatch.setattr(relations, "CARE_SET_MAX", 0)  # one resident at a time, by search
    assert server.readers("Patient", "pU") == {"docA", "docX", "docB"}


def test_practitioner_write_without_care_names_the_facility_it_belongs_to(server: Server) -> None:
    """Regression: a practitioner's write without a care relationship was allowed when the first
    Organization it named was theirs, so A's referral to B counted as B's to write, not A's."""
    own = server.request(
        "docX", "POST", "ServiceRequest", json=_referral(None, "pN", "Organization/orgA", "Organization/orgB")
    )
    assert own.status_code == 201, own.text
    in_a_name = server.request(
        "docC", "POST", "ServiceRequest", json=_referral(None, "pN", "Organization/orgA", "Organization/orgC")
    )
    assert in_a_name.status_code == 403, in_a_name.text


def test_practitioner_roles_taking_part_give_their_facility_care(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: E's PractitionerRole as an Encounter's participant, or T's as a CareTeam member,
    gave E or T no care relationship with the resident (only referrals and contracts naming a role
    counted), in the SQL form and the per-resident form alike. C manages the CareTeam."""
    import rhip.security.relations as relations

    assert server.readers("Patient", "pP") == {"docC", "docE"}
    assert server.readers("CareTeam", "ctT") == {"docC", "docT"}
    monkeypatch.setattr(relations, "CARE_SET_MAX", 0)  # one resident at a time, by search
    assert server.readers("Encounter", "encPE") == {"docC", "docE"}
    assert server.readers("Patient", "pT") == {"docC", "docT"}


@pytest.mark.parametrize("one_by_one", [False, True])
def test_managing_facility_cares_for_its_care_teams_resident(
    server: Server, monkeypatch: pytest.MonkeyPatch, one_by_one: bool
) -> None:
    """Regression: a CareTeam's ``managingOrganization`` gave its facility no care relationship (R4
    has no search parameter for it), so C's doctors could not read the CareTeam C manages nor its
    resident. The platform's ``managing-organization`` parameter is searchable too."""
    import rhip.security.relations as relations

    if one_by_one:
        monkeypatch.setattr(relations, "CARE_SET_MAX", 0)
    assert server.sees("docC", "CareTeam", "ctT") and server.sees("docC", "Patient", "pT")
    found = server.request("docC", "GET", "CareTeam", params={"managing-organization": "Organization/orgC"})
    assert found.status_code == 200, found.text
    assert {e["resource"]["id"] for e in found.json()["entry"]} == {"ctT", "ctRC"}


def test_opted_out_discharge_is_seen_by_its_destination(server: Server) -> None:
    """Regression: an Encounter's ``hospitalization.destination`` was not read, so under an opt-out
    the facility the resident was discharged to (C, or B through its Location) could not read the
    discharge, though it cares for the resident; the Encounter's results stay at A."""
    assert server.readers("Encounter", "encToC") == {"docA", "docX", "docC"}
    assert server.readers("Encounter", "encToB") == {"docA", "docX", "docB"}
    assert server.readers("Observation", "obsToC") == {"docA", "docX"}


def test_opted_out_record_is_seen_by_the_practitioners_it_names(server: Server) -> None:
    """Regression: under an opt-out a practitioner of another facility who took part in a record
    (participant of C's Encounter, in person or through their PractitionerRole; performer of a
    result; member of a CareTeam) could not read it, though they care for the resident and could
    write it. They read that record, not their facility's colleagues, not the Encounter's other
    records."""
    assert server.readers("Encounter", "encRCa") == {"docC", "docA"}
    assert server.readers("Encounter", "encRCx") == {"docC", "docX"}
    assert server.readers("Observation", "obsByL") == {"docC", "docL"}
    assert server.readers("CareTeam", "ctRC") == {"docC", "docL"}
    assert server.readers("Encounter", "encRC") == {"docC"}


def test_discharge_destination_receives_the_encounter_but_does_not_write_it(server: Server) -> None:
    """The facility an Encounter discharges to is addressed, not answerable: its feed may not
    update, take over or delete A's Encounter, nor create one in A's name; A's feed still writes it."""
    stored = server.request("his-a", "GET", "Encounter/encToC").json()
    refused = server.request("his-c", "PUT", "Encounter/encToC", json={**stored, "status": "cancelled"})
    assert refused.status_code == 403, refused.text
    assert "receives it but does not write it" in refused.text and "orgA" in refused.text
    assert server.request("his-c", "DELETE", "Encounter/encToC").status_code == 403
    new = {k: v for k, v in stored.items() if k not in ("id", "meta")}
    assert server.request("his-c", "POST", "Encounter", json=new).status_code == 403
    kept = server.request("his-a", "PUT", "Encounter/encToC", json={**stored, "status": "finished"})
    assert kept.status_code == 200, kept.text


def test_claim_belongs_to_its_provider_not_to_its_care_team(server: Server) -> None:
    """A Claim belongs to its provider (the party responsible for it, here A's PractitionerRole)
    and is addressed to its insurer; a facility on its care team (C, who cares for the resident
    too) provided services A bills, and neither reads the claim under an opt-out nor writes it."""
    assert server.readers("Claim", "clA") == {"docA", "docX"}
    stored = server.request("his-a", "GET", "Claim/clA").json()
    refused = server.request("his-c", "PUT", "Claim/clA", json={**stored, "status": "cancelled"})
    assert refused.status_code == 403, refused.text
    assert "belongs to facility orgA and is addressed to orgD" in refused.text
    kept = server.request("his-a", "PUT", "Claim/clA", json={**stored, "status": "active"})
    assert kept.status_code == 200, kept.text


def _received_by_the_provider_alone(server: Server, res_type: str, res_id: str) -> dict[str, Any]:
    """The insurer's (orgD's) adjudication: read by the provider's practitioners under the opt-out,
    refused to the provider's (orgA's) feed when it tries to rewrite it."""
    assert server.readers(res_type, res_id) == {"docA", "docX"}
    stored = server.request("his-a", "GET", f"{res_type}/{res_id}").json()
    refused = server.request("his-a", "PUT", f"{res_type}/{res_id}", json={**stored, "outcome": "error"})
    assert refused.status_code == 403, refused.text
    assert "belongs to facility orgD and is addressed to orgA" in refused.text
    assert "receives it but does not write it" in refused.text
    return dict(stored)


def test_opted_out_claim_response_is_seen_by_the_provider_that_asked(server: Server) -> None:
    """Regression: ClaimResponse.requestor was not read, so under an opt-out the provider's
    practitioners could not read the insurer's answer to their own claim; the provider receives
    it but does not rewrite the insurer's adjudication."""
    _received_by_the_provider_alone(server, "ClaimResponse", "crA")


def test_explanation_of_benefit_is_the_insurers_and_received_by_the_provider(server: Server) -> None:
    """Regression: ExplanationOfBenefit.provider counted as a facility the record belongs to, so the
    provider's feed could create and rewrite the insurer's adjudication; it is addressed to the
    provider (receive only), as a ClaimResponse is to its requestor. Under the opt-out the
    provider's practitioners still read it (the insurer's do not: they do not care for the resident)."""
    stored = _received_by_the_provider_alone(server, "ExplanationOfBenefit", "eobA")
    created = server.request("his-a", "POST", "ExplanationOfBenefit", json=_explanation_of_benefit(None))
    assert created.status_code == 403, created.text
    assert server.request("his-a", "DELETE", "ExplanationOfBenefit/eobA").status_code == 403
    kept = server.request("his-d", "PUT", "ExplanationOfBenefit/eobA", json={**stored, "outcome": "partial"})
    assert kept.status_code == 200, kept.text
    new = server.request("his-d", "POST", "ExplanationOfBenefit", json=_explanation_of_benefit(None))
    assert new.status_code == 201, new.text
    assert server.request("docA", "GET", "ExplanationOfBenefit/eobA").json()["outcome"] == "partial"


#: How a record names the facility or practitioner of each kind of care relationship, by
#: (type, search parameter); every kind that may name an Organization is tried for a facility,
#: and every kind that may name a facility's PractitionerRole or HealthcareService (below).
_LINKS: dict[tuple[str, str], Callable[[dict[str, str]], dict[str, Any]]] = {
    ("Encounter", "service-provider"): lambda ref: {"serviceProvider": ref},
    ("Encounter", "participant"): lambda ref: {"participant": [{"individual": ref}]},
    ("ServiceRequest", "performer"): lambda ref: {"performer": [ref]},
    ("ServiceRequest", "requester"): lambda ref: {"requester": ref},
    ("EpisodeOfCare", "organization"): lambda ref: {"managingOrganization": ref},
    ("CareTeam", "participant"): lambda ref: {"participant": [{"member": ref}]},
    ("CareTeam", "managing-organization"): lambda ref: {"managingOrganization": [ref]},
}
#: Kinds naming the facility itself: every one the code knows.
_FOR_FACILITY = ORG_LINKS
_FOR_PRACTITIONER = [
    ("Encounter", "participant"),
    ("ServiceRequest", "performer"),
    ("ServiceRequest", "requester"),
    ("CareTeam", "participant"),
]
#: Kinds naming a post or department of the facility: every one the code knows, compared form by form.
_FOR_FACILITY_UNIT = ORG_UNIT_LINKS
_REQUIRED: dict[str, dict[str, Any]] = {
    "Encounter": {"status": "finished", "class": {"code": "AMB"}},
    "ServiceRequest": {"status": "active", "intent": "order"},
    "EpisodeOfCare": {"status": "active"},
    "CareTeam": {},
}


def _relationship_records(target: str, prefix: str) -> tuple[list[dict[str, Any]], set[str]]:
    """A resident per kind of relationship with ``target`` (and a family-doctor contract)."""
    kinds = _FOR_FACILITY if target.startswith("Organization/") else _FOR_PRACTITIONER
    rows: list[dict[str, Any]] = []
    for n, (rtype, param) in enumerate(kinds):
        patient = f"{prefix}{n}"
        named = "patient" if rtype == "EpisodeOfCare" else "subject"
        body = {"resourceType": rtype, "id": f"{prefix}-{rtype}-{param}", **_REQUIRED[rtype]}
        body.update({named: _ref(f"Patient/{patient}"), **_LINKS[(rtype, param)](_ref(target))})
        rows += [{"resourceType": "Patient", "id": patient}, body]
    gp = f"{prefix}gp"
    rows.append({"resourceType": "Patient", "id": gp, "generalPractitioner": [_ref(target)]})
    if target.startswith("Organization/"):
        for n, (rtype, param, unit) in enumerate(_FOR_FACILITY_UNIT):
            patient, unit_ref = f"{prefix}u{n}", _ref(f"{unit}/{prefix}-unit{n}")
            element = "organization" if unit == "PractitionerRole" else "providedBy"
            rows.append({"resourceType": unit, "id": f"{prefix}-unit{n}", element: _ref(target)})
            if rtype == "Patient":
                rows.append({"resourceType": "Patient", "id": patient, "generalPractitioner": [unit_ref]})
                continue
            body = {"resourceType": rtype, "id": f"{prefix}-{rtype}-{param}-{unit}", **_REQUIRED[rtype]}
            body.update({"subject": _ref(f"Patient/{patient}"), **_LINKS[(rtype, param)](unit_ref)})
            rows += [{"resourceType": "Patient", "id": patient}, body]
    return rows, {row["id"] for row in rows if row["resourceType"] == "Patient"}


def test_care_relationships_agree_in_sql_and_by_search(db_url: str) -> None:
    """Regression: a facility's care relationships left out the referrals it requested, and those
    naming one of its PractitionerRoles or HealthcareServices instead of the Organization (a
    PractitionerRole taking part in an Encounter or on a CareTeam, an Organization on a CareTeam),
    in the per-practitioner SQL and in the per-resident searches alike; both forms must find every
    kind."""
    from rhip.security.relations import Relations
    from rhip.security.tokens import Principal
    from rhip.store import Store

    store = Store(db_url)
    expected: set[str] = set()
    everybody: set[str] = set()
    for target, prefix in (
        ("Organization/orgK", "f"),
        ("Practitioner/pracK", "d"),
        ("Organization/orgZ", "zf"),  # another facility's and practitioner's residents
        ("Practitioner/pracZ", "zd"),
    ):
        rows, patients = _relationship_records(target, prefix)
        for body in rows:
            store.update(body["resourceType"], body["id"], body)
        everybody |= patients
        expected |= patients if "K" in target else set()
    principal = Principal(sub="k", role="practitioner", scope="", practitioner="pracK", organization="orgK")
    relations = Relations(store)
    by_search = {p for p in everybody if relations.has_care(principal, p)}
    in_sql = relations.care_patients(principal)
    store.close()
    assert {f"fu{n}" for n in range(len(_FOR_FACILITY_UNIT))} <= expected
    assert by_search == expected
    assert in_sql == expected
