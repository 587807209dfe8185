"""CSV extracts of community and township health centres, laid out as data/csv_layout.yaml says.

The layout file is the contract with the ingest CSV mapping: column order, names and meaning come
from it, and each facility writes in its configured encoding (GBK or UTF-8).
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources
from typing import Any

import yaml

from rhip.fhir import systems
from rhip.synth.model import Encounter, Life, SourcePatient
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

_KIND_ZH = {
    "outpatient": "门诊",
    "emergency": "急诊",
    "inpatient": "住院",
    "followup": "慢病随访",
    "vaccination": "预防接种",
    "antenatal": "产前检查",
    "delivery": "分娩住院",
}


@functools.cache
def layout() -> dict[str, Any]:
    """The CSV layout description (tables and their columns)."""
    text = resources.files("rhip.synth.data").joinpath("csv_layout.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _columns(table: str) -> list[str]:
    return [c["name"] for c in layout()["tables"][table]["columns"]]


def _dt(enc: Encounter, end: bool = False) -> str:
    return (enc.end if end else enc.start).isoformat(sep=" ")


def _person(sp: SourcePatient) -> dict[str, str]:
    ids = {kind: value for _s, value, kind in sp.identifiers}
    by_sys = {s: value for s, value, _k in sp.identifiers}
    r = sp.resident
    return {
        "档案编号": sp.source_id,
        "姓名": sp.name,
        "性别代码": "1" if sp.sex == "male" else "2",
        "出生日期": sp.birth.isoformat(),
        "身份证件类别代码": "01" if sp.citizen_id else "",
        "身份证件号码": sp.citizen_id or "",
        "居民健康卡号": ids.get("HC", ""),
        "社会保障卡号": ids.get("SS", ""),
        "就诊卡号": ids.get("VC", ""),
        "预防接种证号": by_sys.get(systems.IMMUNIZATION_CARD, ""),
        "母子健康手册号": by_sys.get(systems.MATERNAL_CHILD_CARD, ""),
        "无偿献血证号": by_sys.get(systems.BLOOD_DONATION_CERT, ""),
        "本人电话号码": sp.phone or "",
        "现住址": sp.address,
        "行政区划代码": r.district,
        "建档机构代码": sp.facility.code,
        "死亡日期": r.death.isoformat() if r.death else "",
    }


def _visit_rows(enc: Encounter, out: dict[str, list[dict[str, Any]]]) -> None:
    sp, doc = enc.patient, enc.practitioner
    out["visit"] = [
        {
            "就诊流水号": enc.id,
            "档案编号": sp.source_id,
            "就诊类型": _KIND_ZH[enc.kind],
            "就诊开始时间": _dt(enc),
            "就诊结束时间": _dt(enc, True),
            "科室名称": enc.department,
            "责任医生姓名": doc.name,
            "医师执业证书编码": doc.licence,
            "疾病诊断代码": ";".join(c for c, _ in enc.diagnoses),
            "疾病诊断名称": ";".join(n for _, n in enc.diagnoses),
            "离院方式": ("5" if enc.outcome == "died" else "1")
            if enc.kind in ("inpatient", "delivery")
            else "",
        }
    ]


def _followup_rows(enc: Encounter, out: dict[str, list[dict[str, Any]]]) -> None:
    sp, doc = enc.patient, enc.practitioner
    vit = {m.loinc: m.value for m in enc.vitals}
    if enc.followup is not None:
        disease, ok = enc.followup
        glucose = next((m.value for m in enc.labs if m.loinc == "14771-0"), "")
        out["followup"] = [
            {
                "随访编号": f"{enc.id}F",
                "就诊流水号": enc.id,
                "档案编号": sp.source_id,
                "随访日期": enc.start.date().isoformat(),
                "随访方式代码": "1",
                "随访疾病": "高血压" if disease == "hypertension" else "2型糖尿病",
                "收缩压": vit.get("8480-6", ""),
                "舒张压": vit.get("8462-4", ""),
                "心率": vit.get("8867-4", ""),
                "空腹血糖值": glucose,
                "此次随访分类": "1" if ok else "2",
                "用药名称": ";".join(m.name for m in enc.meds),
                "随访医生姓名": doc.name,
            }
        ]


def _result_rows(enc: Encounter, out: dict[str, list[dict[str, Any]]]) -> None:
    sp = enc.patient
    out["lab"] = [
        {
            "检验报告编号": f"{enc.id}L{i}",
            "就诊流水号": enc.id,
            "档案编号": sp.source_id,
            "检验日期": _dt(enc),
            "检验项目代码": m.loinc,
            "检验项目名称": m.name_zh,
            "检验结果": m.value,
            "计量单位": m.unit,
            "参考值下限": m.low,
            "参考值上限": m.high,
            "异常标志": m.flag,
        }
        for i, m in enumerate(enc.labs)
    ]
    out["vital_signs"] = [
        {
            "记录编号": f"{enc.id}V{i}",
            "就诊流水号": enc.id,
            "档案编号": sp.source_id,
            "检查日期": _dt(enc),
            "项目代码": m.loinc,
            "项目名称": m.name_zh,
            "结果": m.value,
            "计量单位": m.unit,
        }
        for i, m in enumerate(enc.vitals)
    ]


def _medication_rows(enc: Encounter, out: dict[str, list[dict[str, Any]]]) -> None:
    sp = enc.patient
    out["prescription"] = [
        {
            "处方明细编号": f"{enc.id}M{i}",
            "就诊流水号": enc.id,
            "档案编号": sp.source_id,
            "开方日期": _dt(enc),
            "药品代码": m.code,
            "药品名称": m.name,
            "ATC代码": m.atc,
            "药品规格": m.strength,
            "用药途径": m.route,
            "每日剂量": f"{m.dose:g}",
            "剂量单位": m.unit,
            "用药天数": m.days,
            "发药数量": f"{m.dose * m.days:g}",
        }
        for i, m in enumerate(enc.meds)
    ]
    if enc.vaccine is not None:
        v = enc.vaccine
        out["immunization"] = [
            {
                "接种记录编号": f"{enc.id}Z",
                "就诊流水号": enc.id,
                "档案编号": sp.source_id,
                "疫苗名称": v["vaccine_zh"],
                "疫苗简称": v["abbr"],
                "剂次": v["dose_no"],
                "接种日期": _dt(enc),
                "接种途径": v["route"],
            }
        ]


def _rows(enc: Encounter) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table for one encounter, keyed by table name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for part in (_visit_rows, _followup_rows, _result_rows, _medication_rows):
        part(enc, out)
    return out


@register_writer("csv")
class CsvWriter(Writer):
    """One CSV per table per community centre, in the centre's encoding."""

    def _facilities(self) -> list[Any]:
        return [f for f in self.region.facilities if f.native == "csv"]

    def headers(self) -> dict[str, bytes]:
        out = {}
        for fac in self._facilities():
            for table, spec in layout()["tables"].items():
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\r\n").writerow(_columns(table))
                out[f"csv/{fac.code}/{spec['file']}"] = buf.getvalue().encode(fac.encoding)
        return out

    def render(self, lives: list[Life], chunk: int) -> Appends:
        tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
        encodings: dict[str, str] = {}
        for life in lives:
            for sp in life.sources:
                if sp.facility.native == "csv":
                    tables.setdefault((sp.facility.code, "person"), []).append(_person(sp))
                    encodings[sp.facility.code] = sp.facility.encoding
            for enc in life.encounters:
                fac = enc.patient.facility
                if fac.native != "csv":
                    continue
                for table, rows in _rows(enc).items():
                    if rows:
                        tables.setdefault((fac.code, table), []).extend(rows)
        buf = Buffer()
        spec = layout()["tables"]
        for (code, table), rows in sorted(tables.items()):
            if list(rows[0]) != _columns(table):
                raise ValueError(f"csv_layout.yaml table {table}: columns differ from the writer's row keys")
            sio = io.StringIO()
            csv.writer(sio, lineterminator="\r\n").writerows([list(r.values()) for r in rows])
            buf.put(
                f"csv/{code}/{spec[table]['file']}",
                sio.getvalue().encode(encodings.get(code) or self.region.facility(code).encoding),
                len(rows),
            )
        return buf.result()
