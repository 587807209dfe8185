"""Minimal reproductions of the defects the ingest fuzz tests found (tests/ingest/test_ingest_fuzz_*.py).

Each test feeds the smallest input shape that crashed a mapper or lost a record, and checks that it
is now stored valid or quarantined with a specific reason (rule and element path).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fuzzing import assert_batch_sound, quarantine_reasons

from rhip.fhir.validation import validate_resource
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file


def _one(pipeline: Pipeline, connector: str, raw: bytes, **options: object) -> list[dict[str, str]]:
    """Run one record through the pipeline; the property holds; returns its quarantine reasons."""
    report = pipeline.run(SourceInfo("F1", connector, "t"), [Record(raw, "t:1")], options=dict(options))
    assert_batch_sound(pipeline, report, received=1)
    found = quarantine_reasons(pipeline, report.batch_id)
    return found[0] if found else []


ADT = "MSH|^~\\&|HIS|H1|RHIP|R|{ts}||ADT^A28^ADT_A05|C1|P|2.5\rPID|1||M1^^^H1^MR||Wu^Lan||19700101|F\r"


def test_unreadable_msh7_is_a_datetime_format_reason(sqlite_pipeline: Pipeline) -> None:
    """MSH-7 that is not a timestamp raised ValueError in the mapper (generic mapper-error)."""
    reasons = _one(sqlite_pipeline, "hl7v2", ADT.format(ts="2026110108:00").encode())
    assert [(r["rule"], r["path"]) for r in reasons] == [("datetime-format", "MSH-7")]


LAB = (
    "检验报告编号,就诊流水号,档案编号,检验日期,检验项目代码,检验项目名称,"
    "检验结果,计量单位,参考值下限,参考值上限,异常标志"
)


def _lab_file(tmp_path: Path, rows: list[str], header: str = LAB) -> Path:
    path = tmp_path / "lab.csv"
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode("utf-8"))
    return path


def _lab_row(low: str = "3.9", result: str = "7.9") -> str:
    return f"L1,E1,0000000001,2026-03-01 09:00:00,14771-0,空腹血糖,{result},mmol/L,{low},6.1,H"


@pytest.mark.parametrize("low", ["9" * 40, "NaN", "1e400", "-inf"])
def test_csv_decimal_that_is_no_storable_number_is_a_data_type_reason(
    sqlite_pipeline: Pipeline, tmp_path: Path, low: str
) -> None:
    """A decimal cell of 40 nines stopped the whole file (64-bit integer overflow in the store's
    encoder); NaN and infinity were stored as null."""
    report = ingest_file(sqlite_pipeline, _lab_file(tmp_path, [_lab_row(low=low), _lab_row()]), "F1")
    assert_batch_sound(sqlite_pipeline, report, received=2)
    (reasons,) = quarantine_reasons(sqlite_pipeline, report.batch_id)
    assert [(r["rule"], r["path"]) for r in reasons] == [("data-type", "参考值下限")]


def test_csv_result_that_is_no_storable_number_falls_back_to_text(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """A lab result 'NaN' was stored as a quantity whose value was null (else_path never taken)."""
    report = ingest_file(sqlite_pipeline, _lab_file(tmp_path, [_lab_row(result="NaN")]), "F1")
    assert_batch_sound(sqlite_pipeline, report, received=1)
    obs = next(b for b, *_ in sqlite_pipeline.store.iter_current("Observation") if b)
    assert obs["valueString"] == "NaN" and "valueQuantity" not in obs


@pytest.mark.parametrize("where", ["header", "row"])
def test_csv_line_with_a_lone_cr_is_a_csv_syntax_reason(
    sqlite_pipeline: Pipeline, tmp_path: Path, where: str
) -> None:
    """A lone CR inside an unquoted header name or cell raised csv.Error out of the connector
    (header: the whole file stopped; row: a generic mapper-error)."""
    header = LAB.replace("检验结果", "检验\r结果") if where == "header" else LAB
    row = _lab_row(result="7\r.9") if where == "row" else _lab_row()
    report = ingest_file(sqlite_pipeline, _lab_file(tmp_path, [row], header=header), "F1")
    assert_batch_sound(sqlite_pipeline, report, received=1)
    (reasons,) = quarantine_reasons(sqlite_pipeline, report.batch_id)
    assert [(r["rule"], r["path"]) for r in reasons] == [
        ("csv-syntax", "header" if where == "header" else "")
    ]


ORU = (
    "MSH|^~\\&|LIS|H1|RHIP|R|20261101090000||ORU^R01^ORU_R01|L1|P|2.5\r"
    "PID|1||M1^^^H1^MR||Wu^Lan||19700101|F\r"
    "OBR|1||F1|24331-1^Lipid panel^LN|||20261101083000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L|3.0-5.2|N|||F|||20261101083000\r"
)


@pytest.mark.parametrize("value", ["NaN", "inf", "1e400", "9" * 30])
def test_hl7_numeric_value_that_is_no_storable_number_is_a_data_type_reason(
    sqlite_pipeline: Pipeline, value: str
) -> None:
    """OBX-5 'NaN' or 'inf' (NM) was stored as a quantity with a null value; 30 nines stopped the
    whole chunk (64-bit integer overflow in the store's encoder)."""
    reasons = _one(sqlite_pipeline, "hl7v2", ORU.format(value=value).encode())
    assert [(r["rule"], r["path"]) for r in reasons] == [("data-type", "OBX[1]-5")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**20, -(2**63) - 1])
def test_validator_refuses_decimals_that_json_or_the_store_cannot_hold(value: float) -> None:
    """The validator passed NaN, infinity and integers beyond 64 bits in decimal elements."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    issues = validate_resource({**obs, "valueQuantity": {"value": value}})
    assert [(i.code, i.expression) for i in issues] == [("value", ("Observation.valueQuantity.value",))]


def _bundle(pipeline: Pipeline, tmp_path: Path, bundle: object) -> list[dict[str, str]]:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle))
    report = ingest_file(pipeline, path, "F1")
    assert_batch_sound(pipeline, report, received=1)
    found = quarantine_reasons(pipeline, report.batch_id)
    return found[0] if found else []


def _entry(request: object, resource: object | None = None) -> dict[str, object]:
    return {"resource": resource or {"resourceType": "Patient"}, "request": request}


@pytest.mark.parametrize(
    ("entries", "path"),
    [([_entry(True)], "Bundle.entry[0].request"), ({"resource": {}}, "Bundle.entry")],
)
def test_bundle_entry_or_request_of_the_wrong_type_is_a_structure_reason(
    sqlite_pipeline: Pipeline, tmp_path: Path, entries: object, path: str
) -> None:
    """An entry's request that is not an object raised AttributeError in the mapper, and an
    entry list that is an object mapped its keys as entries."""
    reasons = _bundle(
        sqlite_pipeline, tmp_path, {"resourceType": "Bundle", "type": "batch", "entry": entries}
    )
    assert [(r["rule"], r["path"]) for r in reasons][:1] == [("structure", path)]


def test_bundle_refused_by_the_store_is_quarantined_not_raised(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """A transaction the store refused (DELETE of an unknown resource) raised out of the pipeline
    and stopped the file: the record was neither stored nor quarantined."""
    delete = _entry({"method": "DELETE", "url": "Patient/unknown"})
    reasons = _bundle(
        sqlite_pipeline, tmp_path, {"resourceType": "Bundle", "type": "transaction", "entry": [delete]}
    )
    assert reasons and reasons[0]["rule"] == "not-found"


def test_invalid_resource_in_a_bundle_the_store_processes_is_quarantined(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """A batch entry with a conditional create (store-processed) was stored without validation."""
    entry = _entry(
        {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"},
        {"resourceType": "Patient", "birthDate": "not a date"},
    )
    reasons = _bundle(
        sqlite_pipeline, tmp_path, {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    )
    assert any(r["path"].endswith("birthDate") for r in reasons), reasons
    assert sqlite_pipeline.store.count("Patient") == 0


def test_batch_entry_the_store_fails_quarantines_the_bundle(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """A batch whose entry failed in the store (GET of an unknown id) counted as stored."""
    get = _entry({"method": "GET", "url": "Patient/unknown"})
    reasons = _bundle(sqlite_pipeline, tmp_path, {"resourceType": "Bundle", "type": "batch", "entry": [get]})
    assert [(r["rule"], r["path"]) for r in reasons] == [("not-found", "Bundle.entry[0]")]


def _dicom_file(path: Path, study: str, **raw: bytes) -> Path:
    """A valid DICOM file (tests/ingest/test_ingest_dicom.py) with elements replaced by raw bytes
    (written unchecked, as a faulty modality would) or removed (empty bytes)."""
    from pydicom import dcmread
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag
    from test_ingest_dicom import _dicom

    ds = dcmread(_dicom(path, study, "1.2.3.4", 1))
    for keyword, value in raw.items():
        tag = Tag(tag_for_keyword(keyword))
        if value:
            ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
        else:
            del ds[tag]
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("element", "value", "rule", "path"),
    [
        ("SeriesNumber", b"12a ", "data-type", "(0020,0011)"),
        ("InstanceNumber", b"1.5 ", "data-type", "(0020,0013)"),
        ("SOPClassUID", b"", "required", "(0008,0016)"),
    ],
)
def test_dicom_element_unreadable_or_missing_names_its_tag(
    sqlite_pipeline: Pipeline, tmp_path: Path, element: str, value: bytes, rule: str, path: str
) -> None:
    """A Series/Instance Number that is not an integer, or a missing SOP Class UID, was a generic
    mapper-error (ValueError, AttributeError)."""
    dcm = _dicom_file(tmp_path / "a.dcm", "1.2.3", **{element: value})
    report = ingest_file(sqlite_pipeline, dcm, "F1")
    assert_batch_sound(sqlite_pipeline, report, received=1)
    (reasons,) = quarantine_reasons(sqlite_pipeline, report.batch_id)
    assert [(r["rule"], r["path"]) for r in reasons] == [(rule, path)]


def test_bad_dicom_file_does_not_spoil_the_study_of_an_earlier_file(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """Two files of one study in a batch shared one ImagingStudy dict: the second, quarantined for
    a modality that is no FHIR code, left its series in the first file's resource (stored invalid)."""
    from rhip.ingest.dicom import iter_dicom_files

    good = _dicom_file(tmp_path / "a.dcm", "1.2.3")
    bad = _dicom_file(tmp_path / "b.dcm", "1.2.3", SeriesInstanceUID=b"1.2.3.5\x00", Modality=b"C  T")
    report = sqlite_pipeline.run(
        SourceInfo("F1", "dicom", "t"),
        iter_dicom_files([good, bad]),
        options={"store": sqlite_pipeline.store},
    )
    assert_batch_sound(sqlite_pipeline, report, received=2)
    assert (report.stored, report.quarantined) == (1, 1)
    (study,) = [b for b, *_ in sqlite_pipeline.store.iter_current("ImagingStudy") if b]
    assert [s["uid"] for s in study["series"]] == ["1.2.3.4"]


@pytest.mark.parametrize("meta", [None, "x", [], 1])
def test_ndjson_meta_that_is_not_an_object_is_a_structure_reason(
    sqlite_pipeline: Pipeline, meta: object
) -> None:
    """An NDJSON resource whose meta was null (or any non-object) raised TypeError out of the
    pipeline when meta.source was set, stopping the file."""
    line = orjson.dumps({"resourceType": "Patient", "id": "p1", "meta": meta})
    reasons = _one(sqlite_pipeline, "fhir-ndjson", line)
    assert [(r["rule"], r["path"]) for r in reasons] == [("structure", "Patient.meta")]


@pytest.mark.parametrize("reference", [["Patient/p1"], 5, None])
def test_reference_that_is_not_a_string_is_a_structure_reason(
    sqlite_pipeline: Pipeline, reference: object
) -> None:
    """The validator passed a bare {"reference": [...]} (its fast path skipped the type check), so
    the resource was accepted and the quality rules raised TypeError out of the pipeline."""
    line = orjson.dumps(
        {"resourceType": "Condition", "subject": {"reference": reference}, "code": {"text": "x"}}
    )
    reasons = _one(sqlite_pipeline, "fhir-ndjson", line)
    assert [(r["rule"], r["path"]) for r in reasons] == [("structure", "Condition.subject.reference")]


def test_facility_code_longer_than_its_columns_does_not_fail_the_chunk(pipeline: Pipeline) -> None:
    """On PostgreSQL an MSH-4 of 100 characters (the MLLP listener credits each message to its
    MSH-4) failed the chunk's quarantine insert (varchar(64)): the whole batch was refused."""
    facility = "H" * 100
    msg = ADT.format(ts="20261101083000").replace("|H1|RHIP|", f"|{facility}|RHIP|")
    bad = msg.replace("ADT^A28", "ADT^A99")
    records = [
        Record(raw.encode(), f"t:{n}", key=f"C{n}", source=SourceInfo(facility, "hl7v2", "mllp"))
        for n, raw in enumerate([msg, bad])
    ]
    report = pipeline.run(SourceInfo("unknown", "hl7v2", "mllp"), records)
    assert_batch_sound(pipeline, report, received=2)
    assert (report.stored, report.quarantined) == (1, 1)
    (reasons,) = quarantine_reasons(pipeline, report.batch_id)
    assert reasons[0]["rule"] == "unsupported-event"


def test_nul_character_in_a_value_is_quarantined_on_every_back_end(pipeline: Pipeline) -> None:
    """A NUL (U+0000) in a string value, escaped in NDJSON or a raw byte in HL7 v2, was stored on
    SQLite but stopped the whole file on PostgreSQL (text and jsonb cannot hold it)."""
    line = orjson.dumps({"resourceType": "Patient", "id": "p1", "name": [{"family": "Wa\x00ng"}]})
    reasons = _one(pipeline, "fhir-ndjson", line)
    assert [(r["rule"], r["path"]) for r in reasons] == [("value", "Patient.name[0].family")]
    assert "NUL" in reasons[0]["message"]
    message = ADT.format(ts="20261101083000").replace("Wu^Lan", "Wu\x00^Lan")
    reasons = _one(pipeline, "hl7v2", message.encode())
    assert [(r["rule"], r["path"]) for r in reasons] == [("value", "Patient.name[0].family")]


def test_facility_code_with_a_nul_does_not_fail_the_file(pipeline: Pipeline) -> None:
    """On PostgreSQL an MSH-4 holding a NUL failed the batch row's insert: the whole file stopped,
    nothing stored or quarantined. The code keeps a replacement character instead."""
    msg = ADT.format(ts="20261101083000").replace("|H1|RHIP|", "|\x00|RHIP|")
    source = SourceInfo("\x00", "hl7v2", "t")
    report = pipeline.run(source, [Record(msg.encode(), "t:1", key="C1", source=source)])
    assert_batch_sound(pipeline, report, received=1)
    assert report.source.facility == "\ufffd"
