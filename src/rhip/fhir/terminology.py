"""Reference code lists the platform ships: Chinese ICD-10 / ICD-9-CM-3, notifiable diseases, lab tests.

The generator draws realistic diagnoses and lab results from these tables, surveillance maps
diagnoses to the notifiable diseases, and the store loads them as CodeSystem/ValueSet resources
so ``$lookup``-style displays work offline. Tables are package data (see
``data/terminology/ORIGIN.md`` for sources and licences) loaded lazily on first use.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any, Final

from rhip.fhir import systems

_LEGAL_CLASSES: Final = ("甲类", "乙类", "丙类")
_CODE_TOKEN = re.compile(r"[A-Z]\d\d(?:\.\d+)?(?:-[A-Z]\d\d(?:\.\d+)?)?")


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("rhip.fhir").joinpath("data", "terminology", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


# --- ICD-10 (Chinese clinical 2.0 / insurance 2.0) and ICD-9-CM-3 ------------------------------


@cache
def _icd10() -> dict[str, tuple[str, str]]:
    return {r["code"]: (r["name_zh"], r["insurance2_code"]) for r in _rows("icd10_cn_diagnoses.csv")}


@cache
def _icd9() -> dict[str, tuple[str, str]]:
    return {r["code"]: (r["name_zh"], r["insurance2_code"]) for r in _rows("icd9cm3_cn_procedures.csv")}


def _normalize_icd10(code: str) -> str:
    """Upper-case, except the ``x`` of Chinese extension codes (``I10.x00x002``)."""
    code = code.strip().upper()
    return code[:1] + code[1:].replace("X", "x")


def _icd10_key(code: str) -> str | None:
    table = _icd10()
    code = _normalize_icd10(code)
    if code in table:
        return code
    # WHO-style codes: A01 -> A01.x00, A01.0 -> A01.000 (the clinical edition's base rows)
    candidates = [f"{code}.x00"] if "." not in code else [code + "0" * (7 - len(code))]
    return next((c for c in candidates if c in table), None)


def icd10_display(code: str) -> str | None:
    """Chinese name of an ICD-10 code of 国家临床版 2.0 / 医保版 2.0 (``I10.x00x002`` → ``高血压``).

    WHO-style codes are tried against the edition's base rows (``E11.9`` → ``E11.900``,
    ``J09`` → ``J09.x00``). None when unknown.
    """
    key = _icd10_key(code)
    return _icd10()[key][0] if key else None


def icd10_insurance_code(code: str) -> str | None:
    """The 医保版 2.0 code the national grouper maps a clinical-edition code to (None if unmapped)."""
    key = _icd10_key(code)
    return (_icd10()[key][1] or None) if key else None


def icd9cm3_display(code: str) -> str | None:
    """Chinese name of an ICD-9-CM-3 procedure code (``36.0601`` → ``冠状动脉药物涂层支架置入术``)."""
    entry = _icd9().get(code.strip())
    return entry[0] if entry else None


def icd10_codes() -> list[str]:
    """All diagnosis codes, in file order (chapter order)."""
    return list(_icd10())


def icd9cm3_codes() -> list[str]:
    """All procedure codes, in file order."""
    return list(_icd9())


# --- Lab tests (LOINC) --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceRange:
    """An adult reference interval for one sex/age band; ``low``/``high`` None when open-ended."""

    sex: str  # all | male | female
    age: str  # adult | all | 20-59 | <75y ...
    low: float | None
    high: float | None
    source: str


@dataclass(frozen=True)
class LabTest:
    """A common lab test or vital sign: LOINC code, names, UCUM unit and reference intervals."""

    loinc: str
    loinc_name: str
    name_zh: str
    abbr: str
    unit: str
    ranges: tuple[ReferenceRange, ...]

    def reference_range(self, sex: str = "all") -> ReferenceRange | None:
        """The interval for ``sex`` (``male``/``female``), else the one for all; first age band."""
        for wanted in (sex, "all"):
            for band in self.ranges:
                if band.sex == wanted:
                    return band
        return self.ranges[0] if self.ranges else None


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def _lab_tests() -> dict[str, LabTest]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in _rows("lab_tests_cn.csv"):
        grouped.setdefault(row["loinc"], []).append(row)
    tests: dict[str, LabTest] = {}
    for loinc, rows in grouped.items():
        first = rows[0]
        ranges = tuple(
            ReferenceRange(r["sex"], r["age"], _number(r["ref_low"]), _number(r["ref_high"]), r["ref_source"])
            for r in rows
        )
        tests[loinc] = LabTest(
            loinc, first["loinc_long_name"], first["name_zh"], first["abbr"], first["ucum_unit"], ranges
        )
    return tests


def lab_test(loinc: str) -> LabTest | None:
    """The lab test with this LOINC code (``718-7`` → 血红蛋白, g/L), or None."""
    return _lab_tests().get(loinc.strip())


def lab_tests() -> list[LabTest]:
    """All 64 lab tests and vital signs, in file order."""
    return list(_lab_tests().values())


# --- Notifiable infectious diseases ------------------------------------------------------------


@dataclass(frozen=True)
class NotifiableDisease:
    """One row of the notifiable-disease list.

    ``legal_class`` is 甲类, 乙类, 丙类 or 其他监测 (monitored, class not fixed by law);
    ``parent`` is set for the hepatitis sub-types reported under 病毒性肝炎; ``icd10`` holds WHO
    ICD-10 codes or ranges (``B20-B24``).
    """

    code: str
    legal_class: str
    name_zh: str
    name_en: str
    icd10: tuple[str, ...]
    valid_from: str
    valid_to: str
    parent: str | None = None

    def valid_on(self, day: date) -> bool:
        """True when the disease was on the list on ``day`` (year-only bounds cover the whole year)."""
        start = self.valid_from or "0000"
        end = self.valid_to or "9999"
        text = day.isoformat()
        return start[: len(text)] <= text[: len(start)] and text[: len(end)] <= end


def _slug(name_en: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name_en.lower()).strip("-")


@cache
def _diseases() -> tuple[NotifiableDisease, ...]:
    out: list[NotifiableDisease] = []
    for row in _rows("notifiable_diseases_cn.csv"):
        parent = "病毒性肝炎" if "病毒性肝炎亚类" in row["notes"] else None
        out.append(
            NotifiableDisease(
                code=_slug(row["name_en"]),
                legal_class=row["class"],
                name_zh=row["name_zh"],
                name_en=row["name_en"],
                icd10=tuple(_CODE_TOKEN.findall(row["icd10_who"])),
                valid_from=row["valid_from"],
                valid_to=row["valid_to"],
                parent=parent,
            )
        )
    return tuple(out)


def notifiable_diseases(
    *, on: date | None = None, include_monitored: bool = False
) -> list[NotifiableDisease]:
    """The diseases on the list (today's list unless ``on`` is given), hepatitis sub-types included.

    ``include_monitored`` adds the 其他监测 diseases (MERS, Ebola, ...). Without sub-types the
    current legal list has 40 diseases.
    """
    chosen = []
    for disease in _diseases():
        if disease.legal_class not in _LEGAL_CLASSES and not include_monitored:
            continue
        if disease.valid_on(on) if on is not None else not disease.valid_to:
            chosen.append(disease)
    return chosen


def _match_length(code: str, token: str) -> int:
    """Length of the ICD-10 bound matching ``code`` (0 = no match)."""
    if "-" in token:
        low, high = token.split("-", 1)
        width = len(low)
        return width if low <= code[:width] <= high[:width] else 0
    return len(token) if code.startswith(token) else 0


def notifiable_disease_for_icd10(
    code: str, *, on: date | None = None, include_monitored: bool = False
) -> NotifiableDisease | None:
    """The notifiable disease a diagnosis code belongs to, the most specific one (``B16.900`` → 乙型肝炎).

    Works with WHO codes and the Chinese extended codes (their first characters are WHO codes).
    A single code beats a range of the same length (J09 → 人感染新亚型流感, not 流行性感冒).
    """
    normalized = _normalize_icd10(code)
    best: tuple[int, int, NotifiableDisease] | None = None
    for disease in notifiable_diseases(on=on, include_monitored=include_monitored):
        for token in disease.icd10:
            length = _match_length(normalized, token)
            if length and (best is None or (length, "-" not in token) > best[:2]):
                best = (length, int("-" not in token), disease)
    return best[2] if best else None


# --- FHIR resources ----------------------------------------------------------------------------


def _code_system(
    url: str, rid: str, title: str, concepts: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "id": rid,
        "url": url,
        "name": rid.replace("-", "_").upper(),
        "title": title,
        "status": "active",
        "language": "zh-CN",
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }
    resource.update(extra)
    return resource


def code_system(name: str) -> dict[str, Any]:
    """A CodeSystem resource for ``icd10-cn``, ``icd9cm3-cn`` or ``notifiable-disease`` (valid R4).

    Raises:
        KeyError: unknown name.
    """
    insurance = [{"code": "insurance2", "description": "医保版 2.0 code", "type": "code"}]
    if name == "icd10-cn":
        concepts = [_concept(code, zh, ins) for code, (zh, ins) in _icd10().items()]
        return _code_system(
            systems.ICD10_CN, name, "疾病分类与代码 国家临床版 2.0 / 医保版 2.0", concepts, property=insurance
        )
    if name == "icd9cm3-cn":
        concepts = [_concept(code, zh, ins) for code, (zh, ins) in _icd9().items()]
        return _code_system(
            systems.ICD9CM3_CN,
            name,
            "手术操作分类代码 国家临床版 3.0 / 医保版 2.0",
            concepts,
            property=insurance,
        )
    if name == "notifiable-disease":
        concepts = [
            {
                "code": d.code,
                "display": d.name_zh,
                "designation": [{"language": "en", "value": d.name_en}],
                "property": [{"code": "class", "valueString": d.legal_class}],
            }
            for d in _diseases()
        ]
        prop = [{"code": "class", "description": "甲类 / 乙类 / 丙类 / 其他监测", "type": "string"}]
        return _code_system(systems.NOTIFIABLE_DISEASE, name, "法定传染病", concepts, property=prop)
    raise KeyError(name)


def _concept(code: str, display: str, insurance: str) -> dict[str, Any]:
    concept: dict[str, Any] = {"code": code, "display": display}
    if insurance and insurance != code:
        concept["property"] = [{"code": "insurance2", "valueCode": insurance}]
    return concept


def lab_tests_value_set() -> dict[str, Any]:
    """A ValueSet of the lab tests (LOINC codes, Chinese names as designations), valid R4."""
    concepts = [
        {"code": t.loinc, "display": t.loinc_name, "designation": [{"language": "zh-CN", "value": t.name_zh}]}
        for t in lab_tests()
    ]
    return {
        "resourceType": "ValueSet",
        "id": "common-lab-tests",
        "url": systems.COMMON_LAB_TESTS,
        "name": "COMMON_LAB_TESTS",
        "title": "常用检验项目",
        "status": "active",
        "copyright": (
            "This material contains content from LOINC (http://loinc.org). LOINC is copyright "
            "Regenstrief Institute, Inc. and the LOINC Committee and is available at no cost under "
            "the license at http://loinc.org/license."
        ),
        "compose": {"include": [{"system": systems.LOINC, "concept": concepts}]},
    }
