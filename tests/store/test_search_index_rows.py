"""The derived search-parameter table, index extraction and value conversions (no database)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rhip.errors import InvalidRequest
from rhip.fhir.search_params import (
    PathSpec,
    SearchParamDef,
    all_resource_types,
    excluded_params,
    register_search_param,
    search_params_for,
    unregister_search_param,
)
from rhip.store.index_schema import INDEX_TABLES, index_rows
from rhip.store.search_sql import split_prefix, split_values
from rhip.store.search_values import date_range, normalize, number_range

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "fhir-r4-examples"
REQUIRED = [
    "Patient",
    "Person",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "Specimen",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
    "Medication",
    "Immunization",
    "Procedure",
    "AllergyIntolerance",
    "ImagingStudy",
    "DocumentReference",
    "Composition",
    "Appointment",
    "Slot",
    "Schedule",
    "ServiceRequest",
    "Task",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Coverage",
    "CarePlan",
    "CareTeam",
    "Consent",
    "AuditEvent",
    "Provenance",
    "Flag",
    "Device",
    "Questionnaire",
    "QuestionnaireResponse",
    "Group",
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
]


def _utc(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("res_type", REQUIRED)
def test_table_covers_required_types(res_type: str) -> None:
    params = search_params_for(res_type)
    assert len(params) >= 5
    assert {"_tag", "_profile", "_security"} <= set(params)
    for sp in params.values():
        assert sp.paths or sp.contexts, f"{res_type}.{sp.name} has nothing to index"


def test_table_has_all_r4_types_and_known_params() -> None:
    assert len(all_resource_types()) >= 145
    obs = search_params_for("Observation")
    assert obs["code"].type == "token" and obs["patient"].targets == ("Patient",)
    assert [p.steps for p in obs["date"].paths][:2] == [("effectiveDateTime",), ("effectivePeriod",)]
    assert obs["patient"].paths[0].is_type == "Patient"
    phone = search_params_for("Patient")["phone"].paths[0]
    assert phone.steps == ("telecom", ("system", "phone"))
    assert search_params_for("Observation")["code-value-quantity"].type == "composite"


def test_excluded_params_are_not_advertised() -> None:
    excluded = excluded_params()
    assert any(e["code"] == "near" for e in excluded)
    whole = {(e["resource"], e["code"]) for e in excluded if e["reason"] in ("special parameter",)}
    for res_type, code in whole:
        assert code not in search_params_for(res_type)


def test_index_rows_shape_for_patient() -> None:
    body = json.loads((EXAMPLES / "patient-example.json").read_text())
    rows = index_rows(body)
    assert set(rows) <= {t.name for t in INDEX_TABLES}
    for table_rows in rows.values():
        for row in table_rows:
            assert row["res_type"] == "Patient" and row["res_id"] == "example" and row["param"]
    families = {r["norm"] for r in rows["idx_string"] if r["param"] == "family"}
    assert families == {"chalmers", "windsor"}
    birth = [r for r in rows["idx_date"] if r["param"] == "birthdate"]
    assert len(birth) == 1 and birth[0]["high"] - birth[0]["low"] == 86400
    assert {"system": "urn:oid:1.2.36.146.595.217.0.1", "code": "12345"}.items() <= next(
        r for r in rows["idx_token"] if r["param"] == "identifier"
    ).items()


def test_index_rows_cover_official_examples() -> None:
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) > 50
    total = 0
    for path in files:
        body = json.loads(path.read_text())
        if "resourceType" not in body:
            continue
        rows = index_rows(body)
        total += sum(len(v) for v in rows.values())
        for table_rows in rows.values():
            for row in table_rows:
                assert row["param"] in search_params_for(body["resourceType"]), (path.name, row["param"])
    assert total > 500


def test_index_rows_skip_bad_values_and_missing_ids() -> None:
    assert index_rows({"resourceType": "Patient"}) == {}
    rows = index_rows({"resourceType": "Patient", "id": "x", "birthDate": "not a date", "gender": "male"})
    assert "idx_date" not in rows and rows["idx_token"][0]["code"] == "male"


def test_register_search_param_hook() -> None:
    """A region's own parameter is indexed after registration and gone after unregistering."""
    sp = SearchParamDef(
        name="ethnicity",
        type="token",
        expression="Patient.extension.where(url='x').value",
        paths=(PathSpec(("extension", ("url", "http://example.org/eth"), "valueCoding"), "Coding"),),
    )
    body = {
        "resourceType": "Patient",
        "id": "e",
        "extension": [
            {"url": "http://example.org/eth", "valueCoding": {"system": "urn:gb3304", "code": "01"}}
        ],
    }
    register_search_param("Patient", sp)
    try:
        assert "ethnicity" in search_params_for("Patient")
        rows = [r for r in index_rows(body)["idx_token"] if r["param"] == "ethnicity"]
        assert [(r["system"], r["code"]) for r in rows] == [("urn:gb3304", "01")]
    finally:
        unregister_search_param("Patient", "ethnicity")
    assert "ethnicity" not in search_params_for("Patient")
    assert all(r["param"] != "ethnicity" for r in index_rows(body).get("idx_token", []))
    with pytest.raises(ValueError):
        register_search_param("Patient", SearchParamDef(name="x", type="token", expression="x"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Müller", "muller"), ("ＺＨＡＮＧ", "zhang"), ("张三", "张三"), ("ÉCOLE", "ecole"), ("abc", "abc")],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_phonetic_key() -> None:
    from rhip.store.search_values import phonetic_key

    assert phonetic_key("张三") == phonetic_key("Zhang San") == phonetic_key("ＺＨＡＮＧＳＡＮ") == "zhangsan"
    assert phonetic_key("Müller") == "muller"
    rows = index_rows({"resourceType": "Patient", "id": "c", "name": [{"text": "李四"}]})["idx_string"]
    assert {(r["param"], r["norm"]) for r in rows} == {("name", "李四"), ("phonetic", "lisi")}


@pytest.mark.parametrize(
    ("text", "low", "width"),
    [
        ("2020", "2020-01-01T00:00:00+08:00", 366 * 86400),
        ("2021-02", "2021-02-01T00:00:00+08:00", 28 * 86400),
        ("2021-02-03", "2021-02-03T00:00:00+08:00", 86400),
        ("2021-02-03T04:05Z", "2021-02-03T04:05:00+00:00", 60),
        ("2021-02-03T04:05:06+08:00", "2021-02-03T04:05:06+08:00", 1),
        ("2021-02-03T04:05:06.120Z", "2021-02-03T04:05:06.120+00:00", 0.001),
    ],
)
def test_date_range_precision(text: str, low: str, width: float) -> None:
    rng = date_range(text)
    assert rng is not None
    assert rng[0] == pytest.approx(_utc(low))
    assert rng[1] - rng[0] == pytest.approx(width, abs=1e-5)


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [("100", 99.5, 100.5), ("1e2", 50, 150), ("5.40", 5.395, 5.405), ("-3", -3.5, -2.5)],
)
def test_number_precision(text: str, lo: float, hi: float) -> None:
    _, low, high = number_range(text)
    assert (low, high) == (pytest.approx(lo), pytest.approx(hi))


def test_number_rejects_text() -> None:
    with pytest.raises(InvalidRequest):
        number_range("many")


def test_value_splitting() -> None:
    assert split_values(r"a,b\,c") == ["a", r"b\,c"]
    assert split_prefix("ge2020") == ("ge", "2020")
    assert split_prefix("2020") == ("eq", "2020")
    assert split_prefix("sa-5") == ("sa", "-5")
    assert split_prefix("apple") == ("eq", "apple")


def test_no_fhirpath_left_in_paths() -> None:
    """Compiled steps are plain JSON keys or (field, value) filters, never FHIRPath text."""
    key = re.compile(r"[a-zA-Z]+")
    for res_type in ("Patient", "Observation", "Encounter", "Appointment", "AuditEvent"):
        for sp in search_params_for(res_type).values():
            for p in sp.paths:
                for step in p.steps:
                    assert isinstance(step, tuple) or key.fullmatch(step), (res_type, sp.name, step)


def test_reference_forms_in_index() -> None:
    from rhip.config import get_settings

    own = get_settings().base_url.rstrip("/") + "/Patient/p1"
    body = {
        "resourceType": "Observation",
        "id": "x",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": own},
        "performer": [
            {"reference": "http://elsewhere.example/fhir/Practitioner/d1"},
            {"reference": "Practitioner/d2/_history/3"},
            {"reference": "#contained"},
            {"identifier": {"system": "urn:lic", "value": "L9"}},
        ],
    }
    rows = index_rows(body)["idx_reference"]
    subject = next(r for r in rows if r["param"] == "subject")
    assert (subject["target_type"], subject["target_id"], subject["url"]) == ("Patient", "p1", None)
    performers = sorted(
        (r["target_type"] or "", r["target_id"] or "", r["url"] or "", r["ident_value"] or "")
        for r in rows
        if r["param"] == "performer"
    )
    assert performers == [
        ("", "", "", "L9"),
        ("Practitioner", "", "http://elsewhere.example/fhir/Practitioner/d1", ""),
        ("Practitioner", "d2", "", ""),
    ]


def test_token_check_covers_the_elements_encryption_writes() -> None:
    """Person rows are checked for SM4 tokens only in parameters read from identifier/telecom/contact.

    Those must include every parameter over the encrypted elements, and the dict rows used by
    re-encryption must be the writer's tuple rows.
    """
    from rhip.store.index_extract import params_reading
    from rhip.store.indexing import SEALED_ELEMENTS, rows_for, tuple_rows_for

    for res_type in ("Patient", "RelatedPerson", "Practitioner"):
        checked = set().union(*params_reading(res_type, SEALED_ELEMENTS).values())
        assert {"identifier", "telecom", "phone"} <= checked, res_type
        assert "name" not in checked
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": "sm4:v1:abc"}],
        "telecom": [{"system": "phone", "value": "sm4:v1:def"}],
        "name": [{"family": "Li"}],
    }
    rows = tuple_rows_for(patient)
    assert ("Patient", "p1", "identifier", "urn:oid:2.16.156.10011.1.1", None, None) in rows["idx_token"]
    assert not any(isinstance(v, str) and v.startswith("sm4:") for r in rows["idx_token"] for v in r)
    assert rows_for(patient) == {
        table: [dict(zip([c.name for c in t.columns], r, strict=True)) for r in rows[table]]
        for t in INDEX_TABLES
        for table in [t.name]
        if table in rows
    }
