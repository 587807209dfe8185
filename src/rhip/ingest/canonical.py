"""Canonicalisation: one standard form for what facilities send in many local forms.

Local codes become standard codes through ConceptMaps held in the store (the local coding is kept
next to the standard one), units become UCUM, sex becomes FHIR gender plus the GB/T 2261.1 code,
timestamps become instants with an offset (Asia/Shanghai by default), and names and identifiers are
folded from full-width to half-width and trimmed. Citizen IDs are checksum-verified: a bad one is a
warning for the quality rules, never silently "fixed".
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from rhip.errors import Issue
from rhip.fhir import systems
from rhip.fhir.identifiers import check_citizen_id
from rhip.ingest.model import issue

#: Extension carrying the GB/T 2261.1 sex code next to FHIR ``gender``.
GB_SEX_EXTENSION = "https://rhip.example.org/fhir/StructureDefinition/gb-sex"

_SEX: dict[str, tuple[str, str]] = {}
for _codes, _value in (
    (("1", "m", "male", "男", "男性"), ("male", "1")),
    (("2", "f", "female", "女", "女性"), ("female", "2")),
    (("0", "u", "unknown", "未知", "未知的性别"), ("unknown", "0")),
    (("9", "o", "other", "未说明", "未说明的性别"), ("other", "9")),
):
    for _c in _codes:
        _SEX[_c] = _value

#: Local spellings of units -> UCUM code.
UCUM_UNITS: dict[str, str] = {
    "mmhg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "毫米汞柱": "mm[Hg]",
    "次/分": "/min",
    "次/min": "/min",
    "bpm": "/min",
    "/min": "/min",
    "beats/min": "/min",
    "℃": "Cel",
    "°c": "Cel",
    "cel": "Cel",
    "摄氏度": "Cel",
    "kg": "kg",
    "公斤": "kg",
    "g": "g",
    "cm": "cm",
    "厘米": "cm",
    "m": "m",
    "%": "%",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "μmol/l": "umol/L",
    "µmol/l": "umol/L",
    "g/l": "g/L",
    "mg/l": "mg/L",
    "mg/dl": "mg/dL",
    "u/l": "U/L",
    "iu/l": "[IU]/L",
    "10^9/l": "10*9/L",
    "×10^9/l": "10*9/L",
    "x10^9/l": "10*9/L",
    "10*9/l": "10*9/L",
    "10^12/l": "10*12/L",
    "×10^12/l": "10*12/L",
    "10*12/l": "10*12/L",
    "kg/m2": "kg/m2",
    "kg/m²": "kg/m2",
    "fl": "fL",
    "pg": "pg",
    "ml": "mL",
    "l": "L",
    "mmol/mol": "mmol/mol",
    "ng/ml": "ng/mL",
    "pmol/l": "pmol/L",
    "miu/ml": "m[IU]/mL",
    "s": "s",
    "/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/{1.73_m2}": "mL/min/{1.73_m2}",
}

_HL7_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$")
_ISO_NO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_ISO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def fold(value: str) -> str:
    """Full-width to half-width (NFKC), trimmed, inner whitespace collapsed to one space."""
    if value.isascii():
        return " ".join(value.split())
    return " ".join(unicodedata.normalize("NFKC", value).split())


#: Largest magnitude a number read from source text may have: its integral value must still fit
#: the store's 64-bit JSON integers (orjson cannot encode larger ones).
_NUMBER_LIMIT = float(2**63)


def finite_number(text: str) -> float:
    """The number in ``text``; ValueError when it is not one, or is NaN, infinite or beyond 2**63.

    ``float()`` reads "NaN", "inf" and "1e400" (infinity) as numbers, which FHIR decimals cannot
    be and JSON cannot carry, and an integral "9" * 40 would become an integer the store cannot
    encode; connectors reading numbers from text quarantine those like any other non-number.
    """
    number = float(text)
    if not -_NUMBER_LIMIT < number < _NUMBER_LIMIT:  # also False for NaN
        raise ValueError("not a finite number within 2**63")
    return number


def sex_codes(value: str | None) -> tuple[str, str] | None:
    """(FHIR gender, GB/T 2261.1 code) for a local sex value, or None if unknown."""
    if value is None:
        return None
    return _SEX.get(fold(str(value)).lower())


def ucum(unit: str | None) -> str | None:
    """The UCUM code of a local unit spelling, or None if not known."""
    if not unit:
        return None
    return UCUM_UNITS.get(fold(unit).lower())


def _tzinfo(tz: str) -> Any:
    return UTC if tz.upper() == "UTC" else ZoneInfo(tz)


def to_instant(value: str, tz: str = "Asia/Shanghai") -> str:
    """A FHIR dateTime with offset for HL7 (``YYYYMMDDHHMM[SS][+zzzz]``), ISO or dated values.

    Dates without a time stay dates (FHIR allows partial dates); a time without an offset is read
    in ``tz``. Raises ValueError when the value is not a timestamp.
    """
    return _to_instant(value, tz)


#: Distinct values remembered by the timestamp conversions: the times of one batch, visit dates
#: and birth dates repeat, and a conversion costs a few microseconds of regexes and datetimes.
_CACHED_TIMES = 16384


@lru_cache(maxsize=_CACHED_TIMES)
def _to_instant(value: str, tz: str) -> str:
    text = fold(value)
    if _ISO_OFFSET.match(text) or _DATE.match(text):
        return text
    if _ISO_NO_OFFSET.match(text):
        naive = datetime.fromisoformat(text.replace(" ", "T"))
        return _iso(naive.replace(tzinfo=_tzinfo(tz)))
    m = _HL7_TS.match(text)
    if not m:
        raise ValueError("not a timestamp")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    if hour is None:
        return "-".join(p for p in (year, month, day) if p)
    dt = datetime(int(year), int(month or 1), int(day or 1), int(hour), int(minute or 0), int(second or 0))
    if frac:
        dt = dt.replace(microsecond=int(float(frac) * 1_000_000))
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return _iso(dt.replace(tzinfo=timezone(sign * delta)))
    return _iso(dt.replace(tzinfo=_tzinfo(tz)))


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")


def epoch(value: str | None, tz: str = "Asia/Shanghai") -> float | None:
    """Epoch seconds of a FHIR date/dateTime (dates at local midnight), None if absent/invalid."""
    if not value:
        return None
    return _epoch(value, tz)


@lru_cache(maxsize=_CACHED_TIMES)
def _epoch(value: str, tz: str) -> float | None:
    try:
        text = _to_instant(value, tz)
        if _DATE.match(text):
            parts = [int(p) for p in text.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2], tzinfo=_tzinfo(tz)).timestamp()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ConceptTranslator:
    """Local code -> standard coding, from ConceptMap resources (``group.source`` -> ``group.target``)."""

    def __init__(self, concept_maps: list[dict[str, Any]] | None = None) -> None:
        self._map: dict[tuple[str, str], dict[str, str]] = {}
        for cm in concept_maps or []:
            self.add(cm)

    def add(self, concept_map: dict[str, Any]) -> None:
        """Learn every equivalent/wider mapping of one ConceptMap."""
        for group in concept_map.get("group", []):
            source, target = group.get("source"), group.get("target")
            if not source or not target:
                continue
            for element in group.get("element", []):
                for tgt in element.get("target", []):
                    if tgt.get("equivalence", "equivalent") in ("unmatched", "disjoint"):
                        continue
                    coding = {"system": target, "code": tgt["code"]}
                    if tgt.get("display"):
                        coding["display"] = tgt["display"]
                    self._map[(source, element["code"])] = coding
                    break

    def __len__(self) -> int:
        return len(self._map)

    def translate(self, system: str | None, code: str | None) -> dict[str, str] | None:
        """The standard coding for a local one, or None when there is no mapping."""
        if not system or code is None:
            return None
        found = self._map.get((system, code))
        if found is None and "/CodeSystem/local/" in system:
            head, _, rest = system.partition("/CodeSystem/local/")
            _facility, _, domain = rest.partition("/")
            found = self._map.get((f"{head}/CodeSystem/local/*/{domain}", code))
        return found

    def is_local(self, system: str | None) -> bool:
        """True for a facility's local code system (which must be mapped to be conformant)."""
        return bool(system) and "/CodeSystem/local/" in str(system)


#: Elements holding dateTime/instant values, per resource type (canonicalised to offsets).
_TIME_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Observation": (
        ("effectiveDateTime",),
        ("issued",),
        ("effectivePeriod", "start"),
        ("effectivePeriod", "end"),
    ),
    "Encounter": (("period", "start"), ("period", "end")),
    "Condition": (("onsetDateTime",), ("recordedDate",), ("abatementDateTime",)),
    "Procedure": (("performedDateTime",), ("performedPeriod", "start"), ("performedPeriod", "end")),
    "MedicationRequest": (("authoredOn",),),
    "MedicationDispense": (("whenHandedOver",), ("whenPrepared",)),
    "Immunization": (("occurrenceDateTime",), ("recorded",)),
    "DiagnosticReport": (("effectiveDateTime",), ("issued",)),
    "ImagingStudy": (("started",),),
    "AllergyIntolerance": (("recordedDate",), ("onsetDateTime",)),
}
#: CodeableConcept elements whose local codings are translated.
_CODE_PATHS: dict[str, tuple[str, ...]] = {
    "Observation": ("code",),
    "Condition": ("code",),
    "Procedure": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationDispense": ("medicationCodeableConcept",),
    "Immunization": ("vaccineCode",),
    "DiagnosticReport": ("code",),
    "AllergyIntolerance": ("code",),
}


class Canonicaliser:
    """Applies the canonical forms in place and returns the findings (warnings or errors)."""

    def __init__(self, translator: ConceptTranslator | None = None, tz: str = "Asia/Shanghai") -> None:
        self.translator = translator or ConceptTranslator()
        self.tz = tz

    def apply(self, resource: dict[str, Any]) -> list[Issue]:
        """Canonicalise one resource in place; errors make the record unusable (quarantine)."""
        found: list[Issue] = []
        rtype = resource.get("resourceType", "")
        if "identifier" in resource:
            self._identifiers(rtype, resource, found)
        if rtype == "Patient":
            self._patient(resource, found)
        for path in _TIME_PATHS.get(rtype, ()):
            if path[0] in resource:  # most of a type's time elements are absent from a resource
                self._time(rtype, resource, path, found)
        for name in _CODE_PATHS.get(rtype, ()):
            concept = resource.get(name)
            if isinstance(concept, dict):
                self._concept(concept)
        if rtype == "Encounter":
            stay = resource.get("hospitalization")
            disposition = stay.get("dischargeDisposition") if isinstance(stay, dict) else None
            if isinstance(disposition, dict):
                self._concept(disposition)
        if rtype == "Observation":
            self._quantity(resource.get("valueQuantity"))
            for comp in _items(resource.get("component")):
                if isinstance(comp, dict):
                    self._quantity(comp.get("valueQuantity"))
                    if isinstance(comp.get("code"), dict):
                        self._concept(comp["code"])
        return found

    def _identifiers(self, rtype: str, resource: dict[str, Any], found: list[Issue]) -> None:
        idents = resource.get("identifier")
        if not isinstance(idents, list):
            return
        for i, ident in enumerate(idents):
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                continue
            value = fold(ident["value"]).replace(" ", "")
            if ident.get("system") == systems.CITIZEN_ID:
                check = check_citizen_id(value)
                value = check.normalized
                for problem in check.problems:
                    found.append(
                        issue(
                            "citizen-id-" + problem,
                            f"{rtype}.identifier[{i}].value",
                            f"citizen ID fails GB 11643 rule '{problem}'",
                            "warning",
                        )
                    )
            ident["value"] = value

    def _patient(self, patient: dict[str, Any], found: list[Issue]) -> None:
        for name in _items(patient.get("name")):
            if not isinstance(name, dict):
                continue
            for key in ("text", "family"):
                if isinstance(name.get(key), str):
                    name[key] = fold(name[key])
            if isinstance(name.get("given"), list):
                name["given"] = [fold(g) for g in name["given"] if isinstance(g, str)]
        for tel in _items(patient.get("telecom")):
            if isinstance(tel, dict) and isinstance(tel.get("value"), str):
                tel["value"] = fold(tel["value"])
        gender = patient.get("gender")
        if gender is not None:
            codes = sex_codes(str(gender))
            if codes is None:
                found.append(issue("value-set", "Patient.gender", "gender is not a known sex code"))
                return
            patient["gender"] = codes[0]
            ext = [e for e in _items(patient.get("extension")) if not _is_extension(e, GB_SEX_EXTENSION)]
            ext.append({"url": GB_SEX_EXTENSION, "valueCoding": {"system": systems.GB_SEX, "code": codes[1]}})
            patient["extension"] = ext

    def _time(self, rtype: str, resource: dict[str, Any], path: tuple[str, ...], found: list[Issue]) -> None:
        holder: Any = resource
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or not isinstance(holder.get(path[-1]), str):
            return
        try:
            holder[path[-1]] = _to_instant(holder[path[-1]], self.tz)  # to_instant, one call less
        except ValueError:
            found.append(issue("datetime-format", ".".join((rtype, *path)), "not a valid date/time"))

    def _concept(self, concept: dict[str, Any]) -> None:
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return
        have = {(c.get("system"), c.get("code")) for c in codings if _is_coding(c)}
        for coding in list(codings):
            if not _is_coding(coding):  # a wrong type is left for the validator to name
                continue
            std = self.translator.translate(coding.get("system"), coding.get("code"))
            if std and (std["system"], std["code"]) not in have:
                codings.append(dict(std))
                have.add((std["system"], std["code"]))

    def _quantity(self, qty: Any) -> None:
        if not isinstance(qty, dict):
            return
        if qty.get("system") == systems.UCUM and qty.get("code"):
            return
        spelling = qty.get("code") or qty.get("unit")
        code = ucum(spelling) if isinstance(spelling, str) else None
        if code:
            qty["system"] = systems.UCUM
            qty["code"] = code


def _items(value: Any) -> list[Any]:
    """The elements of a repeating element; a value of the wrong type is the validator's to report."""
    return value if isinstance(value, list) else []


def _is_extension(element: Any, url: str) -> bool:
    return isinstance(element, dict) and element.get("url") == url


def _is_coding(coding: Any) -> bool:
    """A Coding whose system and code can be looked up (strings or absent)."""
    return (
        isinstance(coding, dict)
        and isinstance(coding.get("system", ""), str)
        and isinstance(coding.get("code", ""), str)
    )
