"""The pure parts of ``$lastn`` and ``$prior-results``: grouping by code, ordering, windows, imaging
examinations, advertising.

The HTTP behaviour with authentication on (linked records, consent, audit) is tested in
``tests/security/test_security_results_sharing.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rhip.api.capability import statement_body
from rhip.api.lastn import group_by_code, last_n, newest_first, parse_lastn
from rhip.api.operation_definitions import prior_results_definition
from rhip.api.prior_imaging import (
    RequestedExamination,
    is_examination,
    latest_study,
    order_examinations,
    parse_examinations,
    report_of,
)
from rhip.api.prior_results import RequestedTest, latest_of, parse_tests
from rhip.api.recognition import MODALITIES, default_windows, recognition_windows
from rhip.errors import ConfigurationError, InvalidRequest
from rhip.fhir import systems
from rhip.fhir.terminology import lab_test
from rhip.fhir.validation import validate_resource

DCM = systems.DICOM_MODALITY


def _obs(
    rid: str, codes: list[tuple[str, str]] | None = None, text: str | None = None, **extra: Any
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if codes:
        concept["coding"] = [{"system": s, "code": c} for s, c in codes]
    if text:
        concept["text"] = text
    return {"resourceType": "Observation", "id": rid, "code": concept, **extra}


def _ids(groups: list[list[dict[str, Any]]]) -> list[set[str]]:
    return [{o["id"] for o in g} for g in groups]


def test_codes_group_transitively_through_translations() -> None:
    """The spec's examples: a|b|a,c -> [a,c],[b]; a|b|a,b -> one group; text groups by exact text."""
    a, b, c = ("s", "a"), ("s", "b"), ("s", "c")
    assert _ids(group_by_code([_obs("1", [a]), _obs("2", [b]), _obs("3", [a, c])])) == [{"1", "3"}, {"2"}]
    assert _ids(group_by_code([_obs("1", [a]), _obs("2", [b]), _obs("3", [a, b])])) == [{"1", "2", "3"}]
    texts = [_obs("1", text="text"), _obs("2", text="Text"), _obs("3", text="t e x t")]
    assert len(group_by_code(texts)) == 3
    assert _ids(group_by_code([_obs("1", [("x", "1")]), _obs("2", [("y", "1")])])) == [{"1"}, {"2"}]


def test_newest_first_reads_every_form_of_effective() -> None:
    found = newest_first(
        [
            _obs("undated", [("s", "a")]),
            _obs("year", [("s", "a")], effectiveDateTime="2024"),
            _obs("period", [("s", "a")], effectivePeriod={"start": "2024-03-01", "end": "2024-03-02"}),
            _obs("instant", [("s", "a")], effectiveInstant="2024-05-01T08:00:00+08:00"),
            _obs("issued", [("s", "a")], issued="2024-02-01T00:00:00Z"),
        ]
    )
    assert [o["id"] for o in found] == ["instant", "period", "issued", "year", "undated"]


def test_last_n_keeps_n_per_group() -> None:
    obs = [_obs(f"a{d}", [("s", "a")], effectiveDateTime=f"2024-01-0{d}") for d in range(1, 6)]
    obs.append(_obs("b1", [("s", "b")], effectiveDateTime="2023-01-01"))
    assert [o["id"] for o in last_n(obs, 2)] == ["a5", "a4", "b1"]


def test_a_withdrawn_or_unmade_lab_result_is_not_the_latest() -> None:
    """An entered-in-error haemoglobin of yesterday must not stand in for a new test: the result
    before it is answered (registered and cancelled ones hold no value either)."""
    hb = (systems.LOINC, "718-7")
    obs = [
        _obs("kept", [hb], status="final", effectiveDateTime="2024-01-01"),
        _obs("amended", [hb], status="amended", effectiveDateTime="2024-01-02"),
        *(
            _obs(status, [hb], status=status, effectiveDateTime="2024-01-05")
            for status in ("entered-in-error", "cancelled", "registered")
        ),
    ]
    latest = latest_of(obs, RequestedTest(systems.LOINC, "718-7"))
    assert latest is not None and latest["id"] == "amended"
    assert latest_of(obs[2:], RequestedTest(None, "718-7")) is None


def test_parse_lastn_keeps_criteria_and_refuses_unknown_names() -> None:
    query = parse_lastn(
        [("patient", "Patient/1,2"), ("code", "x"), ("date", "ge2024"), ("max", "3")], lambda n: True
    )
    assert (
        query.patients == ["1", "2"]
        and query.max == 3
        and query.criteria == [("code", "x"), ("date", "ge2024")]
    )
    with pytest.raises(InvalidRequest) as err:
        parse_lastn([("patient", "1"), ("code", "x"), ("bogus", "1")], lambda n: n != "bogus")
    assert err.value.expression == ("bogus",)


def test_parse_tests_takes_system_code_and_bare_codes() -> None:
    assert parse_tests(["http://loinc.org|718-7,4548-4", "718-7"]) == [
        RequestedTest("http://loinc.org", "718-7"),
        RequestedTest(None, "4548-4"),
        RequestedTest(None, "718-7"),
    ]
    with pytest.raises(InvalidRequest):
        parse_tests(["http://loinc.org|"])
    assert parse_tests([]) == []  # a request may ask for imaging only


def test_every_shipped_window_is_a_lab_test_of_the_terminology_or_a_modality() -> None:
    windows = default_windows()
    labs = [w for w in windows.values() if w.kind == "lab"]
    assert labs and all(lab_test(w.code) is not None for w in labs)
    assert windows["718-7"].days == 7 and windows["2823-3"].days == 7  # blood count, electrolytes
    assert windows["1742-6"].days == 30 and windows["4548-4"].days == 90  # liver panel, HbA1c
    imaging = {w.code: w.days for w in windows.values() if w.kind == "imaging"}
    assert set(imaging) <= MODALITIES
    assert imaging["DX"] == imaging["CR"] == imaging["US"] == 30 and imaging["CT"] == imaging["MR"] == 90


def test_a_lab_test_never_takes_a_modality_window() -> None:
    """A bare lab code that spells a modality (``CT``) is a lab test without a window."""
    from datetime import UTC, datetime

    from rhip.api.prior_results import prior_results

    answer = prior_results(
        [RequestedTest(None, "CT")], [], default_windows(), lambda o: None, datetime.now(UTC)
    )
    assert [p["name"] for p in answer["parameter"][0]["part"]] == ["code", "found"]


def test_override_file_of_the_old_loinc_column_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("loinc,days,group,group_zh\n718-7,3,cbc,血常规\n", encoding="utf-8")
    windows = recognition_windows(path)
    assert windows["718-7"].days == 3 and windows["CT"].days == 90


def test_override_file_replaces_and_adds_rows(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text(
        "code,days,group,group_zh\n718-7,3,cbc,血常规\n99999-9,5,x,x\nCT,30,ct,CT\nXA,2,xa,DSA\n", "utf-8"
    )
    windows = recognition_windows(path)
    assert windows["718-7"].days == 3 and windows["99999-9"].days == 5 and windows["4548-4"].days == 90
    assert windows["CT"].days == 30 and windows["XA"].kind == "imaging" and windows["MR"].days == 90


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("loinc,days\n718-7,3\n", "missing column"),
        ("loinc,days,group,group_zh\n718-7,0,a,b\n", "line 2: days"),
        ("loinc,days,group,group_zh\n718-7,3,a,b\nCBC,3,a,b\n", "line 3: loinc"),
        ("code,days,group,group_zh\nCT,90,a,b\nMRI,90,a,b\n", "line 3: code: 'MRI' is neither"),
        ("code,days,group,group_zh\nCT,ninety,a,b\n", "line 2: days"),
        ("days,group,group_zh\n90,a,b\n", "missing column(s) code"),
    ],
)
def test_bad_override_file_names_the_file_and_line(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        recognition_windows(path)
    assert "RHIP_RECOGNITION_WINDOWS_FILE" in err.value.diagnostics and named in err.value.diagnostics
    with pytest.raises(ConfigurationError, match="no such file"):
        recognition_windows(tmp_path / "absent.csv")


def _study(
    rid: str, modality: str, started: str | None, site: dict[str, Any] | None = None, **extra: Any
) -> dict:
    series: dict[str, Any] = {"uid": "1.2", "modality": {"system": DCM, "code": modality}}
    if site is not None:
        series["bodySite"] = site
    body = {"resourceType": "ImagingStudy", "id": rid, "status": "available", "series": [series], **extra}
    return {**body, "started": started} if started else body


def test_parse_examinations_asks_every_modality_at_every_site() -> None:
    snomed = systems.SNOMED
    assert parse_examinations([f"{DCM}|CT,MR", "CT"], [f"{snomed}|51185008", "HEAD"]) == [
        RequestedExamination("CT", ((snomed, "51185008"),)),
        RequestedExamination("CT", ((None, "HEAD"),)),
        RequestedExamination("MR", ((snomed, "51185008"),)),
        RequestedExamination("MR", ((None, "HEAD"),)),
    ]
    assert parse_examinations(["US"], []) == [RequestedExamination("US")]
    assert parse_examinations([], []) == []
    for modalities, sites, named in (
        (["CTX"], [], "modality"),
        (["ct"], [], "modality"),
        ([], ["HEAD"], "bodysite"),
    ):
        with pytest.raises(InvalidRequest) as err:
            parse_examinations(modalities, sites)
        assert err.value.expression == (named,)


def test_cr_and_dx_are_one_examination_and_void_studies_are_not_results() -> None:
    dx = RequestedExamination("DX")
    assert is_examination(_study("1", "CR", "2024-01-01"), dx)
    assert is_examination(_study("1", "DX", "2024-01-01"), RequestedExamination("CR"))
    assert not is_examination(_study("1", "CT", "2024-01-01"), dx)
    assert not is_examination(_study("1", "DX", "2024-01-01", status="entered-in-error"), dx)
    assert not is_examination(_study("1", "DX", "2024-01-01", status="cancelled"), dx)
    # a study listing its modality without series counts when no site is asked
    bare = {"resourceType": "ImagingStudy", "id": "b", "status": "available", "modality": [{"code": "US"}]}
    assert is_examination(bare, RequestedExamination("US"))
    assert not is_examination(bare, RequestedExamination("US", ((None, "ABDOMEN"),)))


def test_body_site_matches_a_code_or_a_dicom_body_part() -> None:
    chest = {"system": systems.SNOMED, "code": "51185008"}
    coded, dicom = (
        _study("c", "CT", "2024-01-01", chest),
        _study("d", "CT", "2024-02-01", {"display": "CHEST"}),
    )
    assert is_examination(coded, RequestedExamination("CT", ((systems.SNOMED, "51185008"),)))
    assert is_examination(coded, RequestedExamination("CT", ((None, "51185008"),)))
    assert not is_examination(coded, RequestedExamination("CT", (("http://example.org/sites", "51185008"),)))
    assert is_examination(dicom, RequestedExamination("CT", ((None, "chest"),)))
    assert not is_examination(dicom, RequestedExamination("CT", ((systems.SNOMED, "CHEST"),)))
    studies = [coded, dicom, _study("u", "CT", None)]
    assert latest_study(studies, RequestedExamination("CT"))["id"] == "d"  # undated last
    assert latest_study(studies, RequestedExamination("CT", ((None, "51185008"),)))["id"] == "c"


def test_the_report_is_the_latest_not_void_one_citing_the_study() -> None:
    def report(rid: str, status: str, issued: str, study: str = "s1") -> dict[str, Any]:
        ref = {"reference": f"ImagingStudy/{study}"}
        return {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "status": status,
            "issued": issued,
            "imagingStudy": [ref],
        }

    reports = [
        report("old", "final", "2024-01-01T00:00:00Z"),
        report("new", "amended", "2024-01-03T00:00:00Z"),
        report("void", "entered-in-error", "2024-01-05T00:00:00Z"),
        report("other", "final", "2024-01-09T00:00:00Z", study="s2"),
    ]
    assert report_of(reports, "s1")["id"] == "new"
    assert report_of(reports, "s3") is None


def test_an_order_is_for_imaging_by_its_code_or_category() -> None:
    def order(**parts: Any) -> dict[str, Any]:
        return {"resourceType": "ServiceRequest", "subject": {"reference": "Patient/p"}, **parts}

    def concept(system: str, code: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code}]}

    assert order_examinations(order(code=concept(systems.LOINC, "718-7"))) is None
    assert order_examinations(order(code=concept(DCM, "MR"))) == [RequestedExamination("MR")]
    sites = [concept(systems.SNOMED, "51185008"), concept(systems.SNOMED, "818981001")]
    assert order_examinations(order(code=concept(systems.SNOMED, "77477000"), bodySite=sites)) == [
        RequestedExamination("CT", ((systems.SNOMED, "51185008"),)),
        RequestedExamination("CT", ((systems.SNOMED, "818981001"),)),
    ]
    imaging = [concept(systems.SNOMED, "363679005")]
    with pytest.raises(InvalidRequest) as err:
        order_examinations(order(category=imaging, code=concept(systems.LOINC, "24627-2")))
    assert err.value.expression == ("ServiceRequest.code",)


def test_the_operation_definition_is_valid_r4_and_names_every_parameter(schema_errors: Any) -> None:
    definition = prior_results_definition()
    assert validate_resource(definition) == [] and schema_errors(definition) == []
    assert definition["url"] == systems.PRIOR_RESULTS_OPERATION and definition["id"] == "prior-results"
    inputs = [p["name"] for p in definition["parameter"] if p["use"] == "in"]
    assert inputs == ["code", "modality", "bodysite"]
    for param in definition["parameter"]:  # opd-1: a type or parts; opd-2: searchType only on strings
        assert ("type" in param) != ("part" in param)
        assert "searchType" not in param or param["type"] == "string"
    outputs = {
        p["name"]: [part["name"] for part in p["part"]] for p in definition["parameter"] if p["use"] == "out"
    }
    assert {"study", "report", "conclusion", "recognised", "studyModality"} <= set(outputs["examination"])
    assert {"result", "value", "recognised"} <= set(outputs["test"])


def test_capability_statement_declares_the_operations() -> None:
    resources = {r["type"]: r for r in statement_body()["rest"][0]["resource"]}
    assert [op["name"] for op in resources["Observation"]["operation"]] == ["lastn"]
    assert [op["name"] for op in resources["Patient"]["operation"]] == ["everything", "prior-results"]
    assert [op["name"] for op in resources["ServiceRequest"]["operation"]] == ["prior-results"]


def test_openapi_lists_the_operations(tmp_path: Path) -> None:
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.store import Store

    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        paths = create_app(store, Settings(data_dir=tmp_path, auth_enabled=False)).openapi()["paths"]
    finally:
        store.close()
    assert {"get", "post"} <= set(paths["/fhir/Observation/$lastn"])
    assert "get" in paths["/fhir/Patient/{patient_id}/$prior-results"]
    assert "get" in paths["/fhir/ServiceRequest/{order_id}/$prior-results"]
    assert "get" in paths["/fhir/OperationDefinition/prior-results"]


def test_docs_list_every_shipped_window() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    table = doc.split("| 检验组 group |", 1)[1].split("```", 1)[0]
    table += doc.split("| 检查 examination |", 1)[1].split("```", 1)[0]
    for code, window in default_windows().items():
        row = next(
            (
                line
                for line in table.splitlines()
                if f" {code}," in line or f" {code} |" in line or f" {code};" in line
            ),
            "",
        )
        assert row and f"| {window.days} day" in row, code
