"""CSV extracts: the shipped community-centre mapping, GBK/UTF-8, and malformed rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from rhip.errors import InvalidRequest
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.ingest.csvmap import load_mapping
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.ingest.schema import ingest_quarantine

PERSON_HEADER = (
    "档案编号,姓名,性别代码,出生日期,身份证件类别代码,身份证件号码,居民健康卡号,社会保障卡号,就诊卡号,"
    "预防接种证号,母子健康手册号,无偿献血证号,本人电话号码,现住址,行政区划代码,建档机构代码,死亡日期"
)
CID = make_citizen_id("330402", __import__("datetime").date(1980, 5, 6), 123, "female")


def _person_row(no: str, name: str = "王　芳 ", sex: str = "2") -> str:
    return f"{no},{name},{sex},1980-05-06,01,{CID},,,,,,,13800000000,浙江省嘉兴市,330402,330402C01,"


def _write(path: Path, lines: list[str], encoding: str) -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _reasons(pipeline: Pipeline) -> list[list[dict[str, str]]]:
    with pipeline.engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(select(ingest_quarantine.c.reasons).order_by("q_id"))]


def test_gbk_person_file_maps_to_patients(pipeline: Pipeline, tmp_path: Path) -> None:
    folder = tmp_path / "330402C01"
    folder.mkdir()
    path = _write(
        folder / "person.csv",
        [PERSON_HEADER, _person_row("0000000001"), _person_row("0000000002", "李四", "1")],
        "gbk",
    )
    rep = ingest_file(pipeline, path, "330402C01")
    assert (rep.received, rep.stored, rep.quarantined) == (2, 2, 0), _reasons(pipeline)
    patients = {p["name"][0]["text"]: p for p, *_ in pipeline.store.iter_current("Patient") if p}
    assert set(patients) == {"王 芳", "李四"}  # full-width space folded, trailing space trimmed
    wang = patients["王 芳"]
    assert wang["gender"] == "female" and wang["birthDate"] == "1980-05-06"
    assert {"system": systems.CITIZEN_ID, "value": CID} in [
        {"system": i["system"], "value": i["value"]} for i in wang["identifier"]
    ]
    assert any(e["valueCoding"]["code"] == "2" for e in wang["extension"])  # GB/T 2261.1


def test_visit_lab_prescription_tables(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    visit = _write(
        tmp_path / "visit.csv",
        [
            "就诊流水号,档案编号,就诊类型,就诊开始时间,就诊结束时间,科室名称,责任医生姓名,医师执业证书编码,疾病诊断代码,疾病诊断名称,离院方式",
            "E1,0000000001,门诊,2026-03-01 09:00:00,2026-03-01 09:20:00,全科,赵医生,110330000000001,"
            "I10.x00x002;E11.900,高血压;2型糖尿病,",
        ],
        "utf-8",
    )
    lab = _write(
        tmp_path / "lab.csv",
        [
            "检验报告编号,就诊流水号,档案编号,检验日期,检验项目代码,检验项目名称,检验结果,计量单位,参考值下限,参考值上限,异常标志",
            "E1L0,E1,0000000001,2026-03-01 09:00:00,14771-0,空腹血糖,7.9,mmol/L,3.9,6.1,H",
            "E1L1,E1,0000000001,2026-03-01 09:00:00,5804-0,尿蛋白,阴性,mmol/L,,,N",
        ],
        "utf-8",
    )
    rx = _write(
        tmp_path / "prescription.csv",
        [
            "处方明细编号,就诊流水号,档案编号,开方日期,药品代码,药品名称,ATC代码,药品规格,用药途径,每日剂量,剂量单位,用药天数,发药数量",
            "E1M0,E1,0000000001,2026-03-01 09:10:00,D004,盐酸二甲双胍片,,0.5g,口服,3,片,30,90",
        ],
        "utf-8",
    )
    for path in (visit, lab, rx):
        rep = ingest_file(sqlite_pipeline, path, "330402C01")
        assert rep.quarantined == 0, _reasons(sqlite_pipeline)
    store = sqlite_pipeline.store
    assert store.count("Encounter") == 1 and store.count("Condition") == 2
    enc = next(iter(store.iter_current("Encounter")))[0]
    assert (
        enc is not None
        and enc["period"]["start"] == "2026-03-01T09:00:00+08:00"
        and enc["class"]["code"] == "AMB"
    )
    obs = {o["code"]["coding"][0]["code"]: o for o, *_ in store.iter_current("Observation") if o}
    assert obs["14771-0"]["valueQuantity"]["code"] == "mmol/L"
    assert obs["5804-0"]["valueString"] == "阴性" and "valueQuantity" not in obs["5804-0"]
    med = next(iter(store.iter_current("MedicationRequest")))[0]
    assert med is not None
    codes = {(c["system"], c["code"]) for c in med["medicationCodeableConcept"]["coding"]}
    assert (systems.ATC, "A10BA02") in codes  # local D004 translated by the shipped ConceptMap


def test_missing_and_extra_columns_and_bad_values(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    no_birth = _write(tmp_path / "person.csv", ["档案编号,姓名,性别代码", "0001,张三,1"], "utf-8")
    rep = ingest_file(sqlite_pipeline, no_birth, "F1")
    assert rep.quarantined == 1 and _reasons(sqlite_pipeline)[0][0] == {
        "rule": "missing-column",
        "path": "出生日期",
        "message": "column absent from header",
        "severity": "error",
    }
    (tmp_path / "sub").mkdir()
    rows = _write(
        tmp_path / "sub" / "person.csv",
        [
            PERSON_HEADER,
            _person_row("0002") + ",extra-cell",
            _person_row("0003")[:20],
            _person_row("0004", sex="X"),
            _person_row("0005").replace("1980-05-06", "1980-13-45"),
            _person_row("0006"),
        ],
        "utf-8",
    )
    rep = ingest_file(sqlite_pipeline, rows, "F1")
    assert (rep.received, rep.stored, rep.quarantined) == (5, 1, 4)
    rules = [r[0]["rule"] for r in _reasons(sqlite_pipeline)[1:]]
    assert rules == ["column-count", "column-count", "value-map", "data-type"]


def _mapping(folder: Path, encoding: str, key: str, name: str, required: str = "") -> Path:
    """A one-table mapping (person.csv -> Patient) in ``encoding``, for the encoding tests."""
    path = folder / "person-mapping.yaml"
    path.write_text(
        f"name: person\nencoding: {encoding}\ntables:\n  person.csv:\n"
        + (f"    required_columns: [{required}]\n" if required else "")
        + f"    resources:\n      - type: Patient\n        id_from: [{key}]\n        fields:\n"
        f"          name[0].text: {{column: {name}}}\n",
        encoding="utf-8",
    )
    return path


def test_wrong_encoding_is_quarantined(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, "utf-8", "档案编号", "姓名")
    path = tmp_path / "person.csv"
    path.write_bytes("档案编号,姓名\r\n".encode() + "0001,王芳\r\n".encode("gbk"))
    rep = ingest_file(sqlite_pipeline, path, "F1", mapping=str(mapping))
    assert rep.quarantined == 1 and _reasons(sqlite_pipeline)[0][0]["rule"] == "encoding"


def test_unmapped_file_is_quarantined(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = _write(tmp_path / "unknown.csv", ["a,b", "1,2"], "utf-8")
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert rep.quarantined == 1 and _reasons(sqlite_pipeline)[0][0]["rule"] == "unmapped-table"


def test_redelivered_csv_is_duplicate(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = _write(tmp_path / "person.csv", [PERSON_HEADER, _person_row("0009")], "gbk")
    ingest_file(sqlite_pipeline, path, "F1")
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert (rep.stored, rep.duplicates) == (0, 1)


def test_header_in_another_encoding_is_named_and_replays_once_the_mapping_is_fixed(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    from rhip.ingest.quarantine import list_entries, replay

    mapping = _mapping(tmp_path, "gbk", "档案编号", "姓名", required="档案编号, 姓名")
    path = _write(tmp_path / "person.csv", ["档案编号,姓名", "0001,王芳", "0002,李四"], "utf-8")
    rep = ingest_file(sqlite_pipeline, path, "F1", mapping=str(mapping))
    assert (rep.received, rep.quarantined) == (2, 2) and rep.reconciled
    reasons = _reasons(sqlite_pipeline)
    assert reasons[0][0]["rule"] == "encoding" and reasons[0][0]["path"] == "header"
    assert "reads as utf-8" in reasons[0][0]["message"]  # not "column 档案编号 missing"
    mapping.write_text(mapping.read_text(encoding="utf-8").replace("gbk", "utf-8"), encoding="utf-8")
    fixed = replay(sqlite_pipeline, list_entries(sqlite_pipeline.engine))
    assert (fixed.stored, fixed.quarantined) == (2, 0)
    names = {p["name"][0]["text"] for p, *_ in sqlite_pipeline.store.iter_current("Patient") if p}
    assert names == {"王芳", "李四"}


def test_undecodable_header_is_an_encoding_reason(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, "utf-8", "id", "name")
    path = tmp_path / "person.csv"
    path.write_bytes("id,name,备注\r\n".encode("gb18030") + b"1,Wang,x\r\n")
    rep = ingest_file(sqlite_pipeline, path, "F1", mapping=str(mapping))
    assert rep.quarantined == 1
    assert _reasons(sqlite_pipeline)[0][0] == {
        "rule": "encoding",
        "path": "header",
        "message": "header is not utf-8",
        "severity": "error",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntables:\n  person.csv:\n    resources: [\n", "is not valid YAML at line 5, column 1"),
        (
            "name: x\nencoding: latin9x\ntables:\n  person.csv:\n    resources: []\n",
            "encoding 'latin9x' is not known",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - id_from: [id]\n",
            "tables.person.csv.resources[0].type is missing",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields:\n"
            "          name[0].text: {colum: name}\n",
            "tables.person.csv.resources[0].fields.name[0].text needs one of column, const or reference",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields:\n"
            "          name[0].text: {colum: name}\n",
            "(found keys colum)",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n    fields: [\n",
            "at line 7, column 1: expected the node content, but found '<stream end>'",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    required_columns: id\n    resources: []\n",
            "tables.person.csv.required_columns must be a list of column names",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        id_from: id\n",
            "tables.person.csv.resources[0].id_from must be a list of column names",
        ),
        (
            "name: x\ndate_formats: '%Y%m%d'\ntables:\n  person.csv:\n    resources: []\n",
            "date_formats must be a list of formats",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields:\n"
            "          gender: {column: sex, map: [male, female]}\n",
            "tables.person.csv.resources[0].fields.gender map must map source values to FHIR values",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields:\n"
            "          birthDate: {column: born, type: str}\n",
            "fields.birthDate type 'str' is not one of string, date, datetime, decimal, integer, boolean",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields: [a]\n",
            "tables.person.csv.resources[0].fields must map FHIR paths to rules",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        id_form: [id]\n",
            "tables.person.csv.resources[0]: unknown key 'id_form' (known: fields, foreach, id_from,",
        ),
        (
            "name: x\nencodng: gbk\ntables:\n  person.csv:\n    resources: []\n",
            "unknown key 'encodng' (known: date_formats, datetime_formats, delimiter, encoding,",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    required_column: [id]\n    resources: []\n",
            "tables.person.csv: unknown key 'required_column'",
        ),
        (
            "name: x\ntables:\n  person.csv:\n    resources:\n      - type: Patient\n        fields:\n"
            "          gender: {column: sex, maps: {'1': male}}\n",
            "tables.person.csv.resources[0].fields.gender: unknown key 'maps'",
        ),
    ],
    ids=[
        "yaml-syntax",
        "encoding",
        "no-type",
        "field-rule",
        "field-rule-found",
        "yaml-problem",
        "required-columns-text",
        "id-from-text",
        "date-formats-text",
        "map-list",
        "field-type",
        "fields-list",
        "resource-key",
        "top-key",
        "table-key",
        "rule-key",
    ],
)
def test_an_unusable_mapping_is_refused_with_its_place(tmp_path: Path, text: str, message: str) -> None:
    """A typo in a mapping stops the load naming where it is, instead of failing every row.

    Wrong types (a text where a list goes) used to load: ``id_from: id`` gave every row the same
    id, ``date_formats: '%Y%m%d'`` tried each character as a format, a ``map`` list failed inside
    every row; a YAML syntax error named its place but not the problem. An unknown key (a typo such
    as ``id_form``) was ignored: every row then got one id and overwrote the last.
    """
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidRequest) as err:
        load_mapping(str(mapping))
    assert message in err.value.diagnostics


def test_the_shipped_mapping_passes_the_load_checks() -> None:
    assert load_mapping("community-centre").table("person.csv") is not None
