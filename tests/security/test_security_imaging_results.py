"""Imaging results sharing (检查结果互认) over real HTTP with authentication on: ``$prior-results``
with ``modality``/``bodysite``, imaging orders, and the served OperationDefinition.

Resident R has a record at facility A (rA, where docA treated them) and one at facility B (rB),
linked by the MPI; their imaging studies sit at both facilities, one of B's is labelled sensitive
(PSY) and one is entered in error. Resident O has records at A (docA treated them) and B too, but
opted out of cross-institution sharing. A study the policy hides from the caller is neither
returned nor counted: docA gets A's older study where B's newer one is hidden. Runs on SQLite and
PostgreSQL.
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
from rhip.fhir.validation import validate_resource

pytestmark = pytest.mark.xdist_group("security_imaging_results")
DCM = systems.DICOM_MODALITY
CHEST, HEAD, ABDOMEN = "51185008", "69536005", "818981001"
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "admin": ("platform_admin", {}),
    "docA": ("practitioner", {"practitioner_id": "docA", "organization_id": "orgA"}),
}
#: id -> (patient, encounter, modality, site (SNOMED, "display:TEXT" or None), days ago, sensitive, status)
STUDIES: dict[str, tuple[str, str, str, str | None, int, bool, str]] = {
    "ctChestA": ("rA", "encRA", "CT", CHEST, 200, False, "available"),
    "ctChestB": ("rB", "encRB", "CT", CHEST, 40, False, "available"),
    "ctHeadA": ("rA", "encRA", "CT", HEAD, 10, False, "available"),
    "crChestB": ("rB", "encRB", "CR", CHEST, 45, False, "available"),
    "dxDicomA": ("rA", "encRA", "DX", "display:CHEST", 400, False, "available"),
    "usA": ("rA", "encRA", "US", ABDOMEN, 25, False, "available"),
    "usBpsy": ("rB", "encRB", "US", ABDOMEN, 2, True, "available"),
    "mrA": ("rA", "encRA", "MR", HEAD, 100, False, "available"),
    "mrVoidB": ("rB", "encRB", "MR", HEAD, 3, False, "entered-in-error"),
    "ctOA": ("oA", "encOA", "CT", CHEST, 20, False, "available"),
    "ctOB": ("oB", "encOB", "CT", CHEST, 5, False, "available"),
}
#: id -> (study cited, status, days ago issued, conclusion)
REPORTS: dict[str, tuple[str, str, int, str]] = {
    "drPrelim": ("ctChestB", "preliminary", 40, "初步：右肺上叶结节"),
    "drFinal": ("ctChestB", "final", 39, "右肺上叶小结节，建议12个月后复查"),
    "drVoid": ("ctChestB", "entered-in-error", 38, "写错患者"),
}


def _ago(now: datetime, days: int) -> str:
    return (now - timedelta(days=days)).isoformat(timespec="seconds")


def _study(rid: str, now: datetime) -> dict[str, Any]:
    patient, encounter, modality, site, days, sensitive, status = STUDIES[rid]
    series: dict[str, Any] = {
        "uid": f"2.25.{list(STUDIES).index(rid) + 1}",
        "modality": {"system": DCM, "code": modality},
    }
    if site and site.startswith("display:"):
        series["bodySite"] = {"display": site.split(":", 1)[1]}  # as the DICOM connector writes it
    elif site:
        series["bodySite"] = {"system": systems.SNOMED, "code": site}
    body: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": rid,
        "status": status,
        "modality": [{"system": DCM, "code": modality}],
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "started": _ago(now, days),
        "description": f"{modality} {rid}",
        "series": [series],
    }
    if sensitive:
        body["meta"] = {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
        }
    return body


def _study_without_series(now: datetime) -> dict[str, Any]:
    """A mammography study that names its modality only at study level (no series yet)."""
    return {
        "resourceType": "ImagingStudy",
        "id": "mgNoSeriesA",
        "status": "available",
        "modality": [{"system": DCM, "code": "MG"}],
        "subject": {"reference": "Patient/rA"},
        "encounter": {"reference": "Encounter/encRA"},
        "started": _ago(now, 100),
    }


def _report(rid: str, now: datetime) -> dict[str, Any]:
    study, status, days, conclusion = REPORTS[rid]
    patient, encounter = STUDIES[study][:2]
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": systems.LOINC, "code": "24627-2"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "issued": _ago(now, days),
        "imagingStudy": [{"reference": f"ImagingStudy/{study}"}],
        "conclusion": conclusion,
    }


def _patient(rid: str, cid: str, org: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": systems.CITIZEN_ID, "value": cid}],
        "name": [{"use": "official", "family": "孙", "given": ["影"]}],
        "gender": "female",
        "birthDate": "1975-06-07",
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def _order(rid: str, **parts: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/rA"},
        "requester": {"reference": "Practitioner/docA"},
        **parts,
    }


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


ORDERS = [
    _order("srCtChest", code=_concept(DCM, "CT"), bodySite=[_concept(systems.SNOMED, CHEST)]),
    _order(
        "srUs",
        category=[_concept(systems.SNOMED, "363679005")],
        code=_concept(systems.SNOMED, "16310003"),
    ),
    _order(
        "srNoModality",
        category=[_concept(systems.SNOMED, "363679005")],
        code=_concept(systems.LOINC, "24627-2"),
    ),
    _order("srTextSite", code=_concept(DCM, "CT"), bodySite=[{"text": "胸部"}]),
    _order("srBadModality", code=_concept(DCM, "CTX")),
]


def _seed(store: Any) -> str:
    """Write both residents and link their records through the MPI; R's golden id."""
    from rhip.mpi.service import match_and_link

    now = datetime.now(UTC)
    r_cid = make_citizen_id("370102", date(1975, 6, 7), 222, "female")
    o_cid = make_citizen_id("370102", date(1975, 6, 7), 244, "female")
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
        *(_study(rid, now) for rid in STUDIES),
        _study_without_series(now),
        *(_report(rid, now) for rid in REPORTS),
        *ORDERS,
    ]
    golden = {}
    for body in bodies:
        assert not [i for i in validate_resource(body) if i.severity in ("error", "fatal")], body["id"]
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            golden[body["id"]] = match_and_link(store, store.read("Patient", body["id"])).resident_id
    assert golden["rA"] == golden["rB"] != golden["oA"] == golden["oB"]
    return golden["rA"]


class Region(ServedRegion):
    """The served region with this file's readers."""

    def exams(self, who: str, path: str, **params: str) -> list[dict[str, Any]]:
        """The ``examination`` parameters of ``$prior-results`` as [{part name: value or [values]}]."""
        response = self.get(who, path, **params)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["resourceType"] == "Parameters"
        assert validate_resource(answer) == []
        out = []
        for exam in (p for p in answer["parameter"] if p["name"] == "examination"):
            parts: dict[str, Any] = {}
            for part in exam["part"]:
                value = next(v for k, v in part.items() if k.startswith("value"))
                if part["name"] in ("studyModality", "studyBodySite"):
                    parts.setdefault(part["name"], []).append(value)
                else:
                    parts[part["name"]] = value
            out.append(parts)
        return out

    def exam(self, who: str, path: str, **params: str) -> dict[str, Any]:
        """The one examination of a request."""
        found = self.exams(who, path, **params)
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module", params=BACKENDS)
def region(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """uvicorn with authentication on over the seeded store (SQLite or PostgreSQL)."""
    with served(request.param, tmp_path_factory.mktemp("imaging_results"), _seed, ACCOUNTS) as parts:
        yield Region(*parts)


def test_latest_study_of_each_modality_across_both_facilities(region: Region) -> None:
    exams = region.exams("admin", f"Patient/{region.golden}/$prior-results", modality="CT,MR,DX,US")
    assert [e["modality"] for e in exams] == [{"system": DCM, "code": m} for m in ("CT", "MR", "DX", "US")]
    ct, mr, dx, us = exams
    assert ct["study"] == {"reference": "ImagingStudy/ctHeadA"} and ct["recognised"]  # 10 of 90 days
    assert ct["window"]["value"] == 90 and ct["group"] == "计算机断层扫描 computed tomography"
    assert ct["facility"] == {"reference": "Organization/orgA"} and ct["description"] == "CT ctHeadA"
    assert ct["studyBodySite"] == [{"system": systems.SNOMED, "code": HEAD}] and "report" not in ct
    assert (
        mr["study"] == {"reference": "ImagingStudy/mrA"} and not mr["recognised"]
    )  # entered-in-error skipped
    # CR and DX are one examination: the CR study answers a DX request, outside the 30-day window
    assert dx["study"] == {"reference": "ImagingStudy/crChestB"} and dx["window"]["value"] == 30
    assert dx["studyModality"] == [{"system": DCM, "code": "CR"}] and not dx["recognised"]
    assert us["study"] == {"reference": "ImagingStudy/usBpsy"} and us["recognised"]


def test_a_study_naming_its_modality_only_at_study_level_counts(region: Region) -> None:
    mg = region.exam("admin", "Patient/rB/$prior-results", modality="MG")
    assert mg["study"] == {"reference": "ImagingStudy/mgNoSeriesA"} and mg["recognised"]  # 100 of 180 days
    assert mg["studyModality"] == [{"system": DCM, "code": "MG"}] and "studyBodySite" not in mg
    assert not region.exam("admin", "Patient/rB/$prior-results", modality="MG", bodysite=CHEST)["found"]


def test_every_linked_record_answers_the_same(region: Region) -> None:
    for patient in ("rA", "rB", region.golden):
        ct = region.exam("admin", f"Patient/{patient}/$prior-results", modality=f"{DCM}|CT")
        assert ct["study"] == {"reference": "ImagingStudy/ctHeadA"}


def test_body_site_narrows_and_the_citing_report_is_given(region: Region) -> None:
    chest = region.exam(
        "docA", "Patient/rA/$prior-results", modality="CT", bodysite=f"{systems.SNOMED}|{CHEST}"
    )
    assert chest["bodySite"] == {"coding": [{"system": systems.SNOMED, "code": CHEST}]}
    assert chest["study"] == {"reference": "ImagingStudy/ctChestB"} and chest["recognised"]  # 40 of 90
    assert chest["facility"] == {"reference": "Organization/orgB"}
    assert chest["date"] == region.get("admin", "ImagingStudy/ctChestB").json()["started"]
    # the latest report that is not void: the final one, not the preliminary nor the entered-in-error one
    assert chest["report"] == {"reference": "DiagnosticReport/drFinal"}
    assert chest["conclusion"] == REPORTS["drFinal"][3]
    # a bare value matches the DICOM connector's Body Part Examined; a SNOMED code does not match it
    dicom = region.exam("admin", "Patient/rA/$prior-results", modality="DX", bodysite="chest")
    assert dicom["study"] == {"reference": "ImagingStudy/dxDicomA"} and not dicom["recognised"]
    assert dicom["studyBodySite"] == [{"display": "CHEST"}] and dicom["studyModality"][0]["code"] == "DX"
    coded = region.exam("admin", "Patient/rA/$prior-results", modality="DX", bodysite=CHEST)
    assert coded["study"] == {"reference": "ImagingStudy/crChestB"}


def test_every_modality_at_every_site_and_with_lab_tests(region: Region) -> None:
    response = region.get(
        "admin", "Patient/rA/$prior-results", code="718-7", modality="CT,MR", bodysite=f"{CHEST},{HEAD}"
    )
    assert response.status_code == 200, response.text
    params = response.json()["parameter"]
    assert [p["name"] for p in params] == ["test"] + ["examination"] * 4
    exams = region.exams("admin", "Patient/rA/$prior-results", modality="CT,MR", bodysite=f"{CHEST},{HEAD}")
    studies = [e["study"]["reference"] if e["found"] else None for e in exams]
    assert studies == ["ImagingStudy/ctChestB", "ImagingStudy/ctHeadA", None, "ImagingStudy/mrA"]
    assert exams[2]["window"]["value"] == 90 and "recognised" not in exams[2]


def test_the_policy_hides_and_does_not_count(region: Region) -> None:
    """docA treats R at A: B's studies travel through the MPI link, B's PSY study does not, and A's
    older ultrasound takes its place; an opted-out resident's studies at B stay at B."""
    us = region.exam("docA", "Patient/rA/$prior-results", modality="US")
    assert us["study"] == {"reference": "ImagingStudy/usA"} and us["recognised"]  # 25 of 30 days
    assert region.exam("admin", "Patient/oA/$prior-results", modality="CT")["study"]["reference"] == (
        "ImagingStudy/ctOB"
    )
    assert region.exam("docA", "Patient/oA/$prior-results", modality="CT")["study"]["reference"] == (
        "ImagingStudy/ctOA"
    )


def test_imaging_orders_map_to_examinations(region: Region) -> None:
    chest = region.exam("docA", "ServiceRequest/srCtChest/$prior-results")
    assert chest["modality"]["code"] == "CT" and chest["study"] == {"reference": "ImagingStudy/ctChestB"}
    assert chest["report"] == {"reference": "DiagnosticReport/drFinal"}
    us = region.exam("admin", "ServiceRequest/srUs/$prior-results")  # SNOMED CT ultrasonography
    assert us["modality"]["code"] == "US" and us["study"] == {"reference": "ImagingStudy/usBpsy"}


@pytest.mark.parametrize(
    ("order", "named", "said"),
    [
        ("srNoModality", "ServiceRequest.code", "names no modality"),
        ("srTextSite", "ServiceRequest.bodySite[0]", "no coding"),
        ("srBadModality", "ServiceRequest.code", "'CTX' is not a DICOM modality code"),
    ],
)
def test_an_unusable_imaging_order_is_a_400_naming_the_element(
    region: Region, order: str, named: str, said: str
) -> None:
    response = region.get("admin", f"ServiceRequest/{order}/$prior-results")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [named] and said in issue["diagnostics"]


@pytest.mark.parametrize(
    ("params", "named", "said"),
    [
        ({"modality": "CTX"}, "modality", "'CTX' is not a DICOM modality code"),
        ({"modality": "ct"}, "modality", "'ct' is not a DICOM modality code"),
        ({"modality": f"{systems.LOINC}|CT"}, "modality", "modalities are DICOM codes"),
        ({"modality": "CT,"}, "modality", "'' is not a DICOM modality code"),
        ({"bodysite": CHEST}, "bodysite", "needs a modality"),
        ({"modality": "CT", "bodysite": f"{systems.SNOMED}|"}, "bodysite", "expected system|code"),
        ({"modality": "CT", "body-site": CHEST}, "body-site", "unknown $prior-results parameter"),
    ],
)
def test_a_bad_imaging_parameter_is_a_400_naming_it(
    region: Region, params: dict[str, str], named: str, said: str
) -> None:
    response = region.get("admin", "Patient/rA/$prior-results", **params)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [named] and said in outcome["issue"][0]["diagnostics"]


def test_override_file_changes_the_modality_windows(region: Region) -> None:
    try:
        region.windows_file.write_text(
            "code,days,group,group_zh\nCT,5,computed tomography,CT\nCR,60,radiography,X线\n", encoding="utf-8"
        )
        exams = region.exams("admin", "Patient/rA/$prior-results", modality="CT,CR,DX")
        assert [e["window"]["value"] for e in exams] == [5, 60, 30]  # DX keeps its shipped window
        assert not exams[0]["recognised"] and exams[1]["recognised"] and not exams[2]["recognised"]
        region.windows_file.write_text("code,days,group,group_zh\nCT,5,a,b\nMRI,5,a,b\n", encoding="utf-8")
        response = region.get("admin", "Patient/rA/$prior-results", modality="CT")
        assert response.status_code == 500
        assert "line 3: code: 'MRI' is neither a LOINC code nor a DICOM modality code" in response.text
    finally:
        region.windows_file.write_text("code,days,group,group_zh\n", encoding="utf-8")
    assert region.exam("admin", "Patient/rA/$prior-results", modality="CT")["window"]["value"] == 90


def test_every_access_is_audited_with_the_studies_reports_and_residents(region: Region) -> None:
    region.exam("docA", "Patient/rA/$prior-results", modality="CT", bodysite=CHEST)
    entries = [e for e in region.audit() if e["actor"] == "docA" and e["action"] == "operation"]
    prior = [e for e in entries if e["path"] == "/fhir/Patient/rA/$prior-results"]
    assert prior and prior[-1]["outcome"] == "0"
    assert {"ImagingStudy/ctChestB", "DiagnosticReport/drFinal"} <= set(prior[-1]["entities"])
    assert "DiagnosticReport/drPrelim" not in prior[-1]["entities"]
    assert {"rA", "rB"} <= set(prior[-1]["patients"])


def test_the_operation_definition_is_served_where_the_statement_points(region: Region) -> None:
    statement = region.get(None, "metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    canonical = next(op["definition"] for op in patient["operation"] if op["name"] == "prior-results")
    assert canonical.endswith("/OperationDefinition/prior-results")
    response = region.get("docA", "OperationDefinition/prior-results")
    assert response.status_code == 200, response.text
    definition = response.json()
    assert definition["url"] == canonical and definition["code"] == "prior-results"
    assert validate_resource(definition) == []
    assert region.get(None, "OperationDefinition/prior-results").status_code == 401
    headers = {"Authorization": f"Bearer {region.tokens['admin']}"}
    put = httpx.put(f"{region.base}/OperationDefinition/prior-results", json=definition, headers=headers)
    assert put.status_code == 405 and put.json()["resourceType"] == "OperationOutcome"
