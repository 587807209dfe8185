"""The data-quality rule catalogue: completeness, conformance, plausibility and timeliness.

Each rule is an entry in :data:`RULES` (a region adds its own with :func:`register_rule`). A rule
looks at one canonical resource and answers True (passes), False (fails) or None (does not apply).
Rules are cheap on purpose: they run inside the ingest hot path on every stored resource.
docs/quality.md lists the catalogue; a test keeps the two in step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from rhip.fhir import systems
from rhip.fhir.identifiers import check_citizen_id
from rhip.ingest.canonical import epoch

#: dimensions, in display order
DIMENSIONS = ("completeness", "conformance", "plausibility", "timeliness")


@dataclass
class RuleContext:
    """What a rule may use besides the resource: time, and patients seen so far (id -> body)."""

    now: float = field(default_factory=time.time)
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)


Check = Callable[[dict[str, Any], RuleContext], bool | None]


@dataclass(frozen=True)
class Rule:
    """One quality rule."""

    id: str
    dimension: str
    resource_types: tuple[str, ...]
    description: str
    check: Check


RULES: dict[str, Rule] = {}
#: Record-level rules evaluated by the collector itself (not per resource).
RECORD_RULES: dict[str, str] = {
    "conformance.record-accepted": "The record was parsed, mapped and validated (else it is quarantined).",
    "timeliness.arrival-24h": "Arrived within 24 hours of the event it reports (MSH-7, reading time).",
}


def register_rule(rule: Rule) -> None:
    """Add or replace a rule."""
    if rule.dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {rule.dimension}")
    RULES[rule.id] = rule


def rule(rule_id: str, dimension: str, types: tuple[str, ...], description: str) -> Callable[[Check], Check]:
    """Decorator registering a check function as a rule."""

    def wrap(fn: Check) -> Check:
        register_rule(Rule(rule_id, dimension, types, description, fn))
        return fn

    return wrap


_CLINICAL = (
    "Observation",
    "Condition",
    "Encounter",
    "Procedure",
    "MedicationRequest",
    "MedicationDispense",
    "DiagnosticReport",
    "ImagingStudy",
)
_CODED = {
    "Observation": "code",
    "Condition": "code",
    "Procedure": "code",
    "DiagnosticReport": "code",
    "MedicationRequest": "medicationCodeableConcept",
    "Immunization": "vaccineCode",
}
_STANDARD = (
    systems.LOINC,
    systems.ICD10,
    systems.ICD10_CN,
    systems.ICD9CM3_CN,
    systems.ATC,
    systems.SNOMED,
    "http://hl7.org/fhir/sid/cvx",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/ndc",
    systems.UCUM,
)
#: LOINC -> plausible range (inclusive) in the canonical UCUM unit
VITAL_RANGES: dict[str, tuple[float, float]] = {
    "8867-4": (20, 250),
    "9279-1": (4, 70),
    "59408-5": (50, 100),
    "2708-6": (50, 100),
    "8310-5": (30, 43),
    "29463-7": (0.3, 350),
    "8302-2": (30, 250),
    "39156-5": (8, 80),
    "8480-6": (50, 260),
    "8462-4": (25, 160),
    "15074-8": (1, 40),
    "2339-0": (18, 720),
    "2345-7": (18, 720),
    "4548-4": (3, 20),
}
_FEMALE_ONLY_ICD = ("O",)
_MALE_ONLY_LOINC = ("2857-1",)
_ICD10_SYSTEMS = (systems.ICD10, systems.ICD10_CN)
_LOINC = systems.LOINC


def _codes(concept: Any) -> list[tuple[str, str]]:
    """(system, code) of each coding of a CodeableConcept.

    The rules that run on every stored resource (standard code, vital range, sex) walk
    ``concept["coding"]`` themselves instead: a list of pairs per rule cost more than the check.
    They read the same values in the same order.
    """
    if not isinstance(concept, dict):
        return []
    return [
        (c.get("system", ""), c.get("code", "")) for c in concept.get("coding", []) if isinstance(c, dict)
    ]


class _Today:
    """The local date and its ISO form, recomputed only once the local day has changed.

    ``date.today()`` reads the clock and converts it to local time on every call; the birth-date
    rule runs for every Patient, so the day is kept until the local midnight after it.
    """

    __slots__ = ("day", "iso", "since", "until")

    def __init__(self) -> None:
        self.day, self.iso, self.since, self.until = date.min, "", 0.0, 0.0

    def get(self) -> tuple[date, str]:
        now = time.time()
        if not self.since <= now < self.until:  # another day, or the clock was set back
            day = date.fromtimestamp(now)
            self.day, self.iso = day, day.isoformat()
            self.since = datetime.combine(day, datetime.min.time()).timestamp()
            self.until = datetime.combine(day + timedelta(days=1), datetime.min.time()).timestamp()
        return self.day, self.iso


_TODAY = _Today()


@rule("completeness.patient-identifier", "completeness", ("Patient",), "Patient has at least one identifier.")
def _patient_identifier(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return bool(r.get("identifier"))


@rule("completeness.patient-name", "completeness", ("Patient",), "Patient has a name.")
def _patient_name(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return any(n.get("text") or n.get("family") for n in r.get("name", []) if isinstance(n, dict))


@rule("completeness.patient-birthdate", "completeness", ("Patient",), "Patient has a birth date.")
def _patient_birth(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return bool(r.get("birthDate"))


@rule("completeness.patient-gender", "completeness", ("Patient",), "Patient has a gender.")
def _patient_gender(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return bool(r.get("gender"))


@rule(
    "completeness.subject",
    "completeness",
    (*_CLINICAL, "Immunization"),
    "Clinical resources name their patient (subject or patient).",
)
def _subject(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return bool(r.get("subject") or r.get("patient"))


@rule(
    "completeness.observation-value",
    "completeness",
    ("Observation",),
    "Observation has a value, components or a dataAbsentReason.",
)
def _obs_value(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    if "valueQuantity" in r:  # the usual value[x], found without a scan of the keys
        return True
    for key in r:
        if key.startswith("value"):
            return True
    return bool(r.get("component") or r.get("dataAbsentReason"))


@rule("completeness.encounter-period", "completeness", ("Encounter",), "Encounter has a start time.")
def _enc_period(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    return bool((r.get("period") or {}).get("start"))


@rule(
    "conformance.citizen-id",
    "conformance",
    ("Patient",),
    "Citizen ID numbers pass GB 11643 (format, checksum, birth date, region).",
)
def _citizen(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    values = [i.get("value", "") for i in r.get("identifier", []) if i.get("system") == systems.CITIZEN_ID]
    if not values:
        return None
    return all(check_citizen_id(v).valid for v in values)


@rule(
    "conformance.gender-value-set",
    "conformance",
    ("Patient",),
    "gender is in the FHIR AdministrativeGender value set.",
)
def _gender_vs(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    g = r.get("gender")
    return None if g is None else g in ("male", "female", "other", "unknown")


@rule(
    "conformance.standard-code",
    "conformance",
    tuple(_CODED),
    "The main code has a coding in a standard system (LOINC, ICD-10, ATC, ...), local codes mapped.",
)
def _standard(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    concept = r.get(_CODED[r["resourceType"]])
    if not isinstance(concept, dict):
        return None
    found: bool | None = None  # None while no coding has been seen
    for c in concept.get("coding", []):
        if isinstance(c, dict):
            if c.get("system", "") in _STANDARD:
                return True
            found = False
    return found


@rule("conformance.ucum-unit", "conformance", ("Observation",), "Quantities carry a UCUM unit code.")
def _ucum(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    qty = r.get("valueQuantity")
    if not isinstance(qty, dict):
        return None
    return qty.get("system") == systems.UCUM and bool(qty.get("code"))


@rule(
    "plausibility.birthdate-range",
    "plausibility",
    ("Patient",),
    "Birth date is not in the future and not more than 120 years ago.",
)
def _birth_range(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    b = r.get("birthDate")
    if not isinstance(b, str) or len(b) < 4:
        return None
    today, iso = _TODAY.get()
    year = int(b[:4])
    return today.year - 120 <= year and b[:10] <= iso


@rule(
    "plausibility.vital-range",
    "plausibility",
    ("Observation",),
    "Vital signs and common labs lie in physiologically possible ranges.",
)
def _vital_range(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    parts = [(r.get("code"), r.get("valueQuantity"))]
    if "component" in r:  # most Observations have none: no second list for them
        parts += [(c.get("code"), c.get("valueQuantity")) for c in r["component"] if isinstance(c, dict)]
    checked: bool | None = None
    for concept, qty in parts:
        if not isinstance(qty, dict) or not isinstance(qty.get("value"), (int, float)):
            continue
        if not isinstance(concept, dict):
            continue
        for c in concept.get("coding", []):
            if not isinstance(c, dict):
                continue
            code = c.get("code", "")
            if c.get("system", "") == _LOINC and code in VITAL_RANGES:
                low, high = VITAL_RANGES[code]
                if not low <= qty["value"] <= high:
                    return False
                checked = True
    return checked


@rule("plausibility.period-order", "plausibility", ("Encounter",), "Encounter ends after it starts.")
def _period_order(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    period = r.get("period") or {}
    if not (period.get("start") and period.get("end")):
        return None
    start, end = epoch(period["start"]), epoch(period["end"])
    return None if start is None or end is None else end >= start


_WHEN = (
    "effectiveDateTime",
    "occurrenceDateTime",
    "onsetDateTime",
    "authoredOn",
    "started",
    "performedDateTime",
)


@rule(
    "plausibility.not-future",
    "plausibility",
    (*_CLINICAL, "Immunization"),
    "Clinical event times are not in the future (one day of clock skew allowed).",
)
def _not_future(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    for key in _WHEN:
        value = r.get(key)
        if isinstance(value, str):
            t = epoch(value)
            return None if t is None else t <= ctx.now + 86400
    return None


@rule(
    "plausibility.sex-appropriate",
    "plausibility",
    ("Condition", "Observation"),
    "Sex-specific codes match the patient's sex (pregnancy ICD-10 O* only for women, PSA only for men).",
)
def _sex_appropriate(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    ref = (r.get("subject") or {}).get("reference", "")
    patient = ctx.patients.get(ref)
    if patient is None or patient.get("gender") not in ("male", "female"):
        return None
    concept = r.get("code")
    for c in concept.get("coding", []) if isinstance(concept, dict) else ():
        if not isinstance(c, dict):
            continue
        system, code = c.get("system", ""), c.get("code", "")
        if system in _ICD10_SYSTEMS and code.startswith(_FEMALE_ONLY_ICD):
            return patient["gender"] == "female"
        if system == _LOINC and code in _MALE_ONLY_LOINC:
            return patient["gender"] == "male"
    return None


def _age_years(patient: dict[str, Any], when: str | None) -> float | None:
    """Age in years at ``when`` (FHIR date/dateTime) of a patient with a birth date, else None."""
    born, at = patient.get("birthDate"), when
    if not (isinstance(born, str) and len(born) >= 10 and isinstance(at, str) and len(at) >= 10):
        return None
    try:
        b, e = _date_of(born[:10]), _date_of(at[:10])
    except ValueError:
        return None
    return (e - b).days / 365.25


#: ``date.fromisoformat``, remembering the distinct days it has read (birth and visit days repeat).
_date_of = lru_cache(maxsize=16384)(date.fromisoformat)


_EVENT_KEYS = (*_WHEN, "recordedDate")


def _event_time(r: dict[str, Any]) -> str | None:
    for key in _EVENT_KEYS:
        value = r.get(key)
        if isinstance(value, str):
            return str(value)
    period = r.get("period") or {}
    return period.get("start") if isinstance(period, dict) else None


def _patient_of(r: dict[str, Any], ctx: RuleContext) -> dict[str, Any] | None:
    ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
    return ctx.patients.get(ref)


#: NIP childhood vaccines (local abbreviations and their CVX codes) given before 18 years of age
_CHILD_VACCINES = {
    "BCG",
    "bOPV",
    "IPV",
    "DTaP",
    "MMR",
    "JE-L",
    "MPSV-A",
    "HepA-L",
    "19",
    "10",
    "178",
    "20",
    "03",
}


@rule(
    "plausibility.age-appropriate",
    "plausibility",
    ("Condition", "Immunization"),
    "Age-specific codes fit the patient's age at the event (perinatal ICD-10 P* under 1 year, "
    "pregnancy O* at 10-60 years, childhood NIP vaccines under 18 years).",
)
def _age_appropriate(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    patient = _patient_of(r, ctx)
    age = _age_years(patient, _event_time(r)) if patient else None
    if age is None:
        return None
    if r["resourceType"] == "Immunization":
        codes = {c for _s, c in _codes(r.get("vaccineCode"))}
        return age < 18 if codes & _CHILD_VACCINES else None
    for system, code in _codes(r.get("code")):
        if system in (systems.ICD10, systems.ICD10_CN):
            if code.startswith("P"):
                return age < 1
            if code.startswith("O"):
                return 10 <= age <= 60
    return None


@rule(
    "plausibility.after-birth",
    "plausibility",
    (*_CLINICAL, "Immunization"),
    "Clinical events happen on or after the patient's birth date.",
)
def _after_birth(r: dict[str, Any], ctx: RuleContext) -> bool | None:
    patient = _patient_of(r, ctx)
    age = _age_years(patient, _event_time(r)) if patient else None
    return None if age is None else age >= 0


def catalogue() -> list[dict[str, str]]:
    """Every rule (resource rules and record rules) with its dimension and description."""
    out = [
        {
            "id": r.id,
            "dimension": r.dimension,
            "applies_to": ", ".join(r.resource_types),
            "description": r.description,
        }
        for r in RULES.values()
    ]
    out += [
        {"id": k, "dimension": k.split(".")[0], "applies_to": "every record", "description": v}
        for k, v in RECORD_RULES.items()
    ]
    return out
