"""Ground-truth files: who every source record really is, chronic onsets, deteriorations, claims.

Every other capability measures itself against these files, so they are written from the same
records the format writers serialise, never recomputed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rhip.synth.model import Life
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

HEADERS = {
    "truth/patient_links.csv": [
        "source_system",
        "facility_code",
        "source_patient_id",
        "resident_id",
        "noise",
    ],
    "truth/residents.csv": [
        "resident_id",
        "citizen_id",
        "name",
        "sex",
        "birth_date",
        "district",
        "household_id",
        "death_date",
        "household_role",
        "mother_id",
        "father_id",
        "spouse_id",
        "twin_id",
        "phone",
        "address",
        "health_card",
        "social_security_card",
    ],
    "truth/chronic.csv": ["resident_id", "disease", "onset_date"],
    "truth/deteriorations.csv": ["resident_id", "device_id", "start", "end", "kind"],
    "truth/claim_anomalies.csv": ["claim_id", "kind", "facility_code", "duplicate_of"],
    "truth/notifiable_cases.csv": [
        "resident_id",
        "facility_code",
        "encounter_id",
        "disease",
        "icd10",
        "date",
        "district_code",
        "outbreak_id",
    ],
}


def _rows(rows: Sequence[Sequence[object]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _rid(index: int) -> str:
    return f"R{index + 1:08d}" if index >= 0 else ""


_TABLES = ("patient_links", "residents", "chronic", "deteriorations", "claim_anomalies", "notifiable_cases")


def _resident_rows(life: Life, tables: dict[str, list[list[object]]]) -> None:
    r = life.resident
    tables["residents"].append([
        r.resident_id, r.citizen_id, r.name, r.sex, r.birth.isoformat(), r.district, r.household,
        r.death.isoformat() if r.death else "", r.role, _rid(r.mother), _rid(r.father), _rid(r.spouse),
        _rid(r.twin), r.phone, r.address, r.health_card, r.social_security or "",
    ])  # fmt: skip
    for sp in life.sources:
        tables["patient_links"].append(
            [sp.facility.native, sp.facility.code, sp.source_id, r.resident_id, ";".join(sp.noise)]
        )
    for disease, onset in life.chronic:
        tables["chronic"].append([r.resident_id, disease, onset.isoformat()])
    if life.wearable is not None:
        for start, end, kind in life.wearable.episodes:
            tables["deteriorations"].append(
                [
                    r.resident_id,
                    life.wearable.device_id,
                    start.isoformat() + "+08:00",
                    end.isoformat() + "+08:00",
                    kind,
                ]
            )


def _event_rows(life: Life, tables: dict[str, list[list[object]]]) -> None:
    r = life.resident
    for enc in life.encounters:
        code = enc.patient.facility.code
        for c in enc.claims:
            if c.anomaly:
                tables["claim_anomalies"].append([c.id, c.anomaly, code, c.duplicate_of or ""])
        if enc.notifiable:
            tables["notifiable_cases"].append([
                r.resident_id, code, enc.id, enc.notifiable, enc.diagnoses[0][0],
                enc.start.date().isoformat(), r.district, enc.outbreak or "",
            ])  # fmt: skip


@register_writer("truth")
class TruthWriter(Writer):
    """Always on: the ground truth of every chunk."""

    def headers(self) -> dict[str, bytes]:
        return {path: _rows([cols]) for path, cols in HEADERS.items()}

    def render(self, lives: list[Life], chunk: int) -> Appends:
        tables: dict[str, list[list[object]]] = {name: [] for name in _TABLES}
        for life in lives:
            _resident_rows(life, tables)
            _event_rows(life, tables)
        buf = Buffer()
        for name, rows in tables.items():
            if rows:
                buf.put(f"truth/{name}.csv", _rows(rows), len(rows))
        return buf.result()
