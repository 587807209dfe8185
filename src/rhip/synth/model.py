"""Plain records the model produces and the writers consume: one resident's whole life in the data.

The model layer knows nothing about formats; every writer (FHIR, HL7 v2, CSV, DICOM, wearables,
truth) turns these records into its own bytes, so a new format is a new writer, not a new model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(slots=True)
class Practitioner:
    """A doctor or nurse of a facility, with a licence number (医师执业证书编码)."""

    id: str
    name: str
    sex: str
    licence: str
    department: str
    role: str  # "doctor" | "nurse"


@dataclass(slots=True)
class Facility:
    """A facility of the region and the native system it exports from."""

    code: str
    name: str
    tier: str  # tertiary | secondary | primary | cdc
    district: str
    native: str  # fhir | hl7v2 | csv | none
    encoding: str
    beds: int
    departments: list[str]
    practitioners: list[Practitioner] = field(default_factory=list)
    salt: int = 0


@dataclass(slots=True)
class Resident:
    """The true person behind every source record (the ground truth of identity)."""

    index: int
    resident_id: str
    citizen_id: str
    surname: str
    given: str
    sex: str  # male | female
    birth: date
    district: str
    household: str
    role: str
    address: str
    old_address: str | None
    phone: str
    old_phone: str | None
    health_card: str
    social_security: str | None
    immunization_card: str | None
    maternal_child_card: str | None
    blood_donation: str | None
    death: date | None
    mother: int
    father: int
    spouse: int
    twin: int

    @property
    def name(self) -> str:
        return self.surname + self.given


@dataclass(slots=True)
class SourcePatient:
    """One facility's record of a resident, with the noise that facility's data entry introduced."""

    facility: Facility
    source_id: str
    resident: Resident
    name: str
    sex: str
    birth: date
    citizen_id: str | None
    phone: str | None
    address: str
    identifiers: list[tuple[str, str, str]]  # (system, value, kind)
    noise: list[str]
    merged_into: str | None = None  # for a duplicate record later merged (ADT^A40)


@dataclass(slots=True)
class Measure:
    """A lab result or vital sign: LOINC code, value, UCUM unit, reference range and H/L/N flag."""

    loinc: str
    display: str
    name_zh: str
    value: float | str
    unit: str
    low: str
    high: str
    flag: str


@dataclass(slots=True)
class Medication:
    """A prescribed drug and its dispense: (local code, name, ATC, strength, daily dose, unit, route)."""

    code: str
    name: str
    atc: str
    strength: str
    dose: float
    unit: str
    route: str
    days: int


@dataclass(slots=True)
class Imaging:
    """An imaging study; DICOM writers emit one tiny instance per study."""

    uid: str
    series_uid: str
    instance_uid: str
    modality: str
    code: str
    name: str
    body_part: str  # DICOM Body Part Examined of the procedure (CHEST, HEAD, ABDOMEN)


@dataclass(slots=True)
class Claim:
    """The insurance settlement of one encounter (医保结算), possibly with an injected anomaly."""

    id: str
    items: list[tuple[str, float]]
    diagnoses: list[tuple[str, str]]
    total: float
    anomaly: str | None = None
    duplicate_of: str | None = None


@dataclass(slots=True)
class Encounter:
    """A contact of a resident with a facility and all that was recorded during it."""

    id: str
    patient: SourcePatient
    kind: str  # outpatient | emergency | inpatient | followup | vaccination | antenatal | delivery
    start: datetime
    end: datetime
    department: str
    practitioner: Practitioner
    diagnoses: list[tuple[str, str]]
    procedures: list[tuple[str, str]] = field(default_factory=list)
    labs: list[Measure] = field(default_factory=list)
    vitals: list[Measure] = field(default_factory=list)
    meds: list[Medication] = field(default_factory=list)
    imaging: Imaging | None = None
    vaccine: dict[str, str] | None = None
    outcome: str = "discharged"
    claims: list[Claim] = field(default_factory=list)
    notifiable: str | None = None
    outbreak: int | None = None
    followup: tuple[str, bool] | None = None  # (chronic disease, controlled)
    id_seq: int = 0


@dataclass(slots=True)
class WearableStream:
    """A device's minute-level stream: timestamps are local (+08:00) minutes."""

    device_id: str
    resident: Resident
    patient_identifier: tuple[str, str]
    start: datetime
    minutes: int
    episodes: list[tuple[datetime, datetime, str]]


@dataclass(slots=True)
class Life:
    """Everything generated for one resident."""

    resident: Resident
    sources: list[SourcePatient]
    encounters: list[Encounter]
    chronic: list[tuple[str, date]]
    wearable: WearableStream | None = None
