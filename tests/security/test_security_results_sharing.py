"""Results sharing (检验结果互认) over real HTTP with authentication on: ``$lastn`` and ``$prior-results``.

Resident R has a record at facility A (rA, where docA treated them) and one at facility B (rB),
linked by the MPI; their lab results sit at both facilities, one of B's is labelled sensitive (PSY).
Resident O has records at A (docA treated them) and B too, but opted out of cross-institution
sharing. A result the policy hides from the caller is neither returned nor counted: docA gets A's
older result where B's newer one is hidden. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from results_region import BACKENDS, ServedRegion, served
from security_seed import _enc, consent

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id

pytestmark = pytest.mark.xdist_group("security_results_sharing")
LAB = "http://terminology.hl7.org/CodeSystem/observation-category"
HB, A1C, K, TSH, ALT = "718-7", "4548-4", "2823-3", "3016-3", "1742-6"
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "admin": ("platform_admin", {}),
    "docA": ("practitioner", {"practitioner_id": "docA", "organization_id": "orgA"}),
}
#: id -> (patient, encounter, LOINC code, days ago, sensitive)
RESULTS: dict[str, tuple[str, str, str, int, bool]] = {
    "hbAold": ("rA", "encRA", HB, 100, False),
    "hbA": ("rA", "encRA", HB, 40, False),
    "hbB": ("rB", "encRB", HB, 3, False),
    "a1cA": ("rA", "encRA", A1C, 20, False),
    "kB": ("rB", "encRB", K, 10, False),
    "tshA": ("rA", "encRA", TSH, 60, False),
    "tshBpsy": ("rB", "encRB", TSH, 5, True),
    "ohbA": ("oA", "encOA", HB, 5, False),
    "ohbB": ("oB", "encOB", HB, 2, False),
}


def _patient(rid: str, cid: str, org: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": systems.CITIZEN_ID, "value": cid}],
        "name": [{"use": "official", "family": "钱", "given": ["立"]}],
        "gender": "male",
        "birthDate": "1968-02-03",
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def _result(rid: str, now: datetime) -> dict[str, Any]:
    patient, encounter, code, days, sensitive = RESULTS[rid]
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [{"coding": [{"system": LAB, "code": "laboratory"}]}],
        "code": {"coding": [{"system": systems.LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "effectiveDateTime": (now - timedelta(days=days)).isoformat(timespec="seconds"),
        "valueQuantity": {"value": 100 + days, "unit": "g/L", "system": "http://unitsofmeasure.org"},
    }
    if sensitive:
        body["meta"] = {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
        }
    return body


def _seed(store: Any) -> str:
    """Write both residents and link their records through the MPI; R's golden id."""
    from rhip.mpi.service import match_and_link

    now = datetime.now(UTC)
    r_cid = make_citizen_id("370102", date(1968, 2, 3), 117, "male")
    o_cid = make_citizen_id("370102", date(1968, 2, 3), 135, "male")
    bodies = [
        {"resourceType": "Organization", "id": "orgA", "name": "A"},
        {"resourceType": "Organization", "id": "orgB", "name": "B"},
        {"resourceType": "Practitioner", "id": "docA"},
        _patient("rA", r_cid, "orgA"),
        _patient("rB", r_cid, "orgB"),
        _patient("oA", o_cid, "orgA"),
        _patient("oB", o_cid, "orgB"),
        consent("consentOA", "oA", opt_out=True),
        consent("consentOB", "oB", opt_out=True),
        _enc("encRA", "rA", "orgA", "docA"),
        _enc("encRB", "rB", "orgB"),
        _enc("encOA", "oA", "orgA", "docA"),
        _enc("encOB", "oB", "orgB"),
        *(_result(rid, now) for rid in RESULTS),
        {
            "resourceType": "ServiceRequest",
            "id": "srR",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/rA"},
            "requester": {"reference": "Practitioner/docA"},
            "code": {"coding": [{"system": systems.LOINC, "code": HB}, {"system": systems.LOINC, "code": K}]},
        },
    ]
    golden = {}
    for body in bodies:
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            golden[body["id"]] = match_and_link(store, store.read("Patient", body["id"])).resident_id
    assert golden["rA"] == golden["rB"] != golden["oA"] == golden["oB"]
    return golden["rA"]


class Region(ServedRegion):
    """The served region with this file's readers."""

    def lastn(self, who: str, **params: str) -> list[str]:
        """The Observation ids of ``Observation/$lastn``, in Bundle order."""
        response = self.get(who, "Observation/$lastn", **params)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset" and bundle["total"] == len(bundle.get("entry", []))
        return [e["resource"]["id"] for e in bundle.get("entry", [])]

    def prior(self, who: str, path: str, **params: str) -> dict[str, dict[str, Any]]:
        """``$prior-results`` as {code: {part name: value}}."""
        response = self.get(who, path, **params)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["resourceType"] == "Parameters"
        out = {}
        for test in answer["parameter"]:
            parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in test["part"]}
            out[parts["code"]["code"]] = parts
        return out


@pytest.fixture(scope="module", params=BACKENDS)
def region(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """uvicorn with authentication on over the seeded store (SQLite or PostgreSQL)."""
    with served(request.param, tmp_path_factory.mktemp("results_sharing"), _seed, ACCOUNTS) as parts:
        yield Region(*parts)


def test_lastn_max_1_gives_the_newest_per_code_across_both_facilities(region: Region) -> None:
    expected = ["kB", "tshBpsy", "a1cA", "hbB"]  # groups by code (2823-3 < 3016-3 < 4548-4 < 718-7)
    assert region.lastn("admin", patient="rA", category="laboratory") == expected
    assert region.lastn("admin", patient=f"Patient/{region.golden}", category="laboratory") == expected
    assert region.lastn("admin", subject="Patient/rB", category="laboratory", max="1") == expected
    assert region.lastn("admin", patient="rA", category="laboratory", _mdm="false") == ["tshA", "a1cA", "hbA"]


def test_lastn_max_3_gives_up_to_three_newest_first(region: Region) -> None:
    found = region.lastn("admin", patient="rA", category="laboratory", max="3")
    assert found == ["kB", "tshBpsy", "tshA", "a1cA", "hbB", "hbA", "hbAold"]
    assert region.lastn("admin", patient="rA", code=f"{systems.LOINC}|{HB}", max="2") == ["hbB", "hbA"]


def test_lastn_by_post_with_a_parameters_body(region: Region) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/rA"}},
            {"name": "code", "valueString": HB},
            {"name": "max", "valueInteger": 2},
        ],
    }
    headers = {"Authorization": f"Bearer {region.tokens['admin']}"}
    response = httpx.post(f"{region.base}/Observation/$lastn", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["hbB", "hbA"]


def test_lastn_hides_and_does_not_count_a_sensitive_result(region: Region) -> None:
    """docA treats R at A: B's results travel to them through the MPI link, B's PSY result does not,
    and A's older TSH takes its place."""
    assert region.lastn("docA", patient="rA", category="laboratory") == ["kB", "tshA", "a1cA", "hbB"]
    assert region.lastn("docA", patient="rA", code=TSH, max="3") == ["tshA"]


def test_lastn_of_an_opted_out_resident_keeps_other_facilities_results_out(region: Region) -> None:
    assert region.lastn("admin", patient="oA", code=HB, max="3") == ["ohbB", "ohbA"]
    assert region.lastn("docA", patient="oA", code=HB, max="3") == ["ohbA"]
    assert region.lastn("docA", patient="oA", code=HB) == ["ohbA"]  # B's newer one is not counted


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"category": "laboratory"}, "patient"),
        ({"patient": "rA"}, "code"),
        ({"patient": "rA", "code": HB, "max": "0"}, "max"),
        ({"patient": "rA", "code": HB, "max": "two"}, "max"),
        ({"patient": "rA", "code": HB, "colour": "red"}, "colour"),
        ({"patient": "rA", "code": HB, "_count": "5"}, "_count"),
        ({"subject": "Group/g1", "code": HB}, "subject"),
    ],
)
def test_lastn_bad_parameter_is_a_400_naming_it(region: Region, params: dict[str, str], named: str) -> None:
    response = region.get("admin", "Observation/$lastn", **params)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [named] and named in issue["diagnostics"]


def test_prior_results_inside_and_outside_the_window(region: Region) -> None:
    codes = ",".join(f"{systems.LOINC}|{c}" for c in (HB, A1C, K, ALT))
    tests = region.prior("admin", f"Patient/{region.golden}/$prior-results", code=codes)
    assert list(tests) == [HB, A1C, K, ALT]
    hb = tests[HB]
    assert hb["found"] and hb["result"] == {"reference": "Observation/hbB"} and hb["recognised"]
    assert hb["facility"] == {"reference": "Organization/orgB"} and hb["window"]["value"] == 7
    assert hb["value"]["value"] == 103 and hb["code"]["display"] == "血红蛋白"
    assert tests[A1C]["recognised"] and tests[A1C]["window"]["value"] == 90  # 20 days, 90-day window
    assert tests[K]["found"] and not tests[K]["recognised"]  # 10 days, 7-day window
    assert not tests[ALT]["found"] and tests[ALT]["window"]["value"] == 30


def test_prior_results_apply_the_policy(region: Region) -> None:
    assert region.prior("admin", "Patient/rA/$prior-results", code=TSH)[TSH]["result"]["reference"] == (
        "Observation/tshBpsy"
    )
    seen = region.prior("docA", "Patient/rA/$prior-results", code=TSH)[TSH]
    assert seen["result"] == {"reference": "Observation/tshA"} and seen["recognised"]  # 60 of 90 days
    opted_out = region.prior("docA", "Patient/oA/$prior-results", code=HB)[HB]
    assert opted_out["result"] == {"reference": "Observation/ohbA"}


def test_prior_results_of_an_order_take_its_tests_and_patient(region: Region) -> None:
    tests = region.prior("docA", "ServiceRequest/srR/$prior-results")
    assert list(tests) == [HB, K]
    assert tests[HB]["result"] == {"reference": "Observation/hbB"} and tests[HB]["recognised"]
    assert not tests[K]["recognised"]


def test_override_file_changes_the_windows(region: Region) -> None:
    try:
        region.windows_file.write_text(
            "loinc,days,group,group_zh\n2823-3,14,electrolytes,电解质\n718-7,2,blood count,血常规\n",
            encoding="utf-8",
        )
        tests = region.prior("admin", "Patient/rA/$prior-results", code=f"{HB},{K}")
        assert tests[K]["recognised"] and tests[K]["window"]["value"] == 14
        assert not tests[HB]["recognised"] and tests[HB]["window"]["value"] == 2
    finally:
        region.windows_file.write_text("code,days,group,group_zh\n", encoding="utf-8")
    assert region.prior("admin", "Patient/rA/$prior-results", code=K)[K]["window"]["value"] == 7


def test_prior_results_bad_parameter_is_a_400_naming_it(region: Region) -> None:
    for params, named in (
        ({}, "code"),
        ({"code": HB, "max": "2"}, "max"),
        ({"code": "http://loinc.org|"}, "code"),
    ):
        response = region.get("admin", "Patient/rA/$prior-results", **params)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [named]


def test_every_access_is_audited_with_the_results_and_residents(region: Region) -> None:
    region.lastn("docA", patient="oA", code=HB)
    region.prior("docA", "Patient/rA/$prior-results", code=HB)
    entries = [e for e in region.audit() if e["actor"] == "docA" and e["action"] == "operation"]
    lastn = [
        e for e in entries if e["path"] == "/fhir/Observation/$lastn" and "Observation/ohbA" in e["entities"]
    ]
    assert lastn and lastn[-1]["outcome"] == "0" and "oA" in lastn[-1]["patients"]
    assert "Observation/ohbB" not in lastn[-1]["entities"]
    prior = [e for e in entries if e["path"] == "/fhir/Patient/rA/$prior-results"]
    assert prior and "Observation/hbB" in prior[-1]["entities"] and {"rA", "rB"} <= set(prior[-1]["patients"])
    refused = [e for e in region.audit() if e["path"] == "/fhir/Observation/$lastn" and e["outcome"] == "4"]
    region.get("docA", "Observation/$lastn", code=HB)
    after = [e for e in region.audit() if e["path"] == "/fhir/Observation/$lastn" and e["outcome"] == "4"]
    assert len(after) == len(refused) + 1
