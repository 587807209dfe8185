"""Case definitions and case counting from the lake's materialised views.

A case definition maps diagnosis codes (ICD-10 codes or ranges, as in the notifiable-disease
list shipped by :mod:`rhip.fhir.terminology`) to a disease and says how many days separate two
episodes of the same resident. Counting reads the ``condition``, ``encounter`` and
``patient_demographics`` views (Parquet under ``<lake>/views``), resolves every case to its
resident (identity layer) and keeps the first diagnosis of each episode, so a patient seen at
three facilities in one week counts once. Cases are then counted by disease × area (district or
facility) × period (ISO week or day).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rhip.errors import InvalidRequest
from rhip.surveillance.areas import UNKNOWN_AREA, DistrictDirectory, district_directory, resident_districts

__all__ = [
    "Case",
    "CaseDefinition",
    "CountTable",
    "case_rows_sql",
    "count_cases",
    "default_definitions",
    "facility_districts",
    "lake_cases",
    "open_views",
    "read_cases",
]

log = logging.getLogger(__name__)

AREAS = ("district", "facility")
UNITS = ("week", "day")


@dataclass(frozen=True)
class CaseDefinition:
    """A disease: ICD-10 codes or ranges (``A20``, ``U07.1``, ``B20-B24``) and the episode gap."""

    code: str
    name: str
    icd10: tuple[str, ...]
    episode_days: int = 28
    name_zh: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form used by the API and the definitions table."""
        return {
            "code": self.code,
            "name": self.name,
            "name_zh": self.name_zh,
            "icd10": list(self.icd10),
            "episode_days": self.episode_days,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CaseDefinition:
        """Parse the JSON form; InvalidRequest names the missing or wrong field."""
        try:
            codes = tuple(str(c).strip().upper() for c in body["icd10"])
            episode = int(body.get("episode_days", 28))
            code, name = str(body["code"]), str(body.get("name") or body["code"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"case definition: missing or invalid field {exc}") from None
        if not codes or episode < 1 or not code:
            raise InvalidRequest(
                "case definition: code, at least one icd10 code and episode_days >= 1 are required"
            )
        return cls(code, name, codes, episode, str(body.get("name_zh", "")))


def default_definitions() -> list[CaseDefinition]:
    """The notifiable diseases in force today (40 plus hepatitis sub-types) as case definitions."""
    from rhip.fhir.terminology import notifiable_diseases

    return [CaseDefinition(d.code, d.name_en, tuple(d.icd10), 28, d.name_zh) for d in notifiable_diseases()]


def _token_predicate(token: str) -> tuple[str, list[Any]]:
    if "-" in token:
        low, high = token.split("-", 1)
        width = len(low)
        return f"substr(code_u, 1, {width}) BETWEEN ? AND ?", [low, high[:width]]
    return "starts_with(code_u, ?)", [token]


def case_rows_sql(
    definitions: Sequence[CaseDefinition], start: dt.date, end: dt.date
) -> tuple[str, list[Any]]:
    """SQL over the views ``condition``/``encounter``/``patient_demographics`` returning one row
    per (disease, resident, episode): the first diagnosis of each episode between start and end.

    The most specific code wins when definitions overlap (longest token first). Values are bound.
    """
    if not definitions:
        raise InvalidRequest("no case definitions")
    tokens = sorted(
        ((t, d) for d in definitions for t in d.icd10),
        key=lambda td: (-len(td[0].split("-")[0]), "-" in td[0]),
    )
    whens, params = [], []
    for token, d in tokens:
        pred, p = _token_predicate(token)
        whens.append(f"WHEN {pred} THEN ?")
        params += [*p, d.code]
    episodes = ", ".join("(?, ?)" for _ in definitions)
    ep_params = [v for d in definitions for v in (d.code, d.episode_days)]
    sql = (
        "WITH c AS (SELECT id AS condition_id, patient_id, encounter_id, "
        "TRY_CAST(substr(coalesce(onset, recorded_date), 1, 10) AS DATE) AS day, "
        f"CASE {' '.join(whens)} END AS disease "
        "FROM (SELECT *, upper(code) AS code_u FROM condition "
        "WHERE coalesce(verification_status, '') NOT IN ('refuted', 'entered-in-error'))), "
        "d AS (SELECT c.*, coalesce(p.resident_id, c.patient_id) AS resident_id, p.district, p.address, "
        "e.organization_id AS facility FROM c "
        "LEFT JOIN patient_demographics AS p ON p.patient_id = c.patient_id "
        "LEFT JOIN encounter AS e ON e.id = c.encounter_id "
        "WHERE c.disease IS NOT NULL AND c.day BETWEEN ? AND ?), "
        "g AS (SELECT d.*, lag(day) OVER (PARTITION BY disease, resident_id ORDER BY day, condition_id) "
        "AS prev FROM d) "
        "SELECT g.disease, g.resident_id, g.condition_id, g.patient_id, g.day, g.district, g.address, "
        "g.facility "
        f"FROM g JOIN (VALUES {episodes}) AS ep(disease, days) ON ep.disease = g.disease "
        "WHERE g.prev IS NULL OR g.day - g.prev > ep.days ORDER BY g.day, g.disease, g.condition_id"
    )
    return sql, [*params, start, end, *ep_params]


@dataclass(frozen=True)
class Case:
    """One counted case (first diagnosis of an episode)."""

    disease: str
    resident_id: str
    condition_id: str
    patient_id: str
    day: dt.date
    district: str
    facility: str


def open_views(lake_dir: Path) -> Any:
    """A DuckDB connection with every ``<lake>/views/*.parquet`` registered as a view of that name.

    Raises:
        InvalidRequest: the lake has no materialised ``condition`` view (run ``rhip lake build``).
    """
    import duckdb

    folder = Path(lake_dir) / "views"
    if not (folder / "condition.parquet").exists():
        raise InvalidRequest(
            f"{folder}: no materialised condition view; run `rhip export` to materialise the lake views"
        )
    con = duckdb.connect()
    for path in sorted(folder.glob("*.parquet")):
        if path.stem.isidentifier():
            escaped = str(path).replace("'", "''")
            con.execute(f"CREATE VIEW \"{path.stem}\" AS SELECT * FROM read_parquet('{escaped}')")
    return con


def read_cases(
    con: Any,
    definitions: Sequence[CaseDefinition],
    start: dt.date,
    end: dt.date,
    *,
    directory: DistrictDirectory | None = None,
) -> list[Case]:
    """Run :func:`case_rows_sql` and place every case in a GB/T 2260 district code.

    The district is the resident's (vote over all their linked records, see
    :func:`rhip.surveillance.areas.resident_districts`), else the code or a known district name in
    the patient's own record, else the district of the treating facility, else ``unknown``.
    """
    directory = directory or DistrictDirectory()
    sql, params = case_rows_sql(definitions, start, end)
    rows = con.execute(sql, params).fetchall()
    residents = resident_districts(con, directory)
    out = []
    for disease, resident, cond, patient, day, district, address, facility in rows:
        code = (
            residents.get(str(resident))
            or directory.code_of(district)
            or directory.find_in_text(address)
            or (directory.facilities.get(facility) if facility else None)
        )
        out.append(
            Case(disease, resident, cond, patient or "", day, code or UNKNOWN_AREA, facility or UNKNOWN_AREA)
        )
    log.info("counted %d cases", len(out))
    return out


def period_start(day: dt.date, unit: str) -> dt.date:
    """The Monday of the ISO week of ``day`` (unit week) or the day itself."""
    return day - dt.timedelta(days=day.weekday()) if unit == "week" else day


@dataclass
class CountTable:
    """Counts of one disease: ``counts[t, a]`` for ``periods[t]`` × ``areas[a]``; case ids per cell."""

    disease: str
    unit: str
    periods: list[dt.date]
    areas: list[str]
    counts: NDArray[np.float64]
    cases: dict[tuple[int, int], list[Case]] = field(default_factory=dict)


def count_cases(
    cases: Iterable[Case],
    *,
    area: str = "district",
    unit: str = "week",
    start: dt.date,
    end: dt.date,
    areas: Sequence[str] | None = None,
) -> dict[str, CountTable]:
    """Count cases by disease × area × period over the full period range start..end (zeros kept).

    Raises:
        InvalidRequest: unknown area or unit.
    """
    if area not in AREAS or unit not in UNITS:
        raise InvalidRequest(f"area must be one of {AREAS} and unit one of {UNITS}")
    step = 7 if unit == "week" else 1
    first, last = period_start(start, unit), period_start(end, unit)
    periods = [first + dt.timedelta(days=i * step) for i in range((last - first).days // step + 1)]
    p_index = {p: i for i, p in enumerate(periods)}
    by_disease: dict[str, list[Case]] = {}
    for c in cases:
        by_disease.setdefault(c.disease, []).append(c)
    all_areas = sorted(set(areas or []) | {getattr(c, area) for cs in by_disease.values() for c in cs})
    a_index = {a: i for i, a in enumerate(all_areas)}
    out = {}
    for disease, cs in by_disease.items():
        table = CountTable(disease, unit, periods, list(all_areas), np.zeros((len(periods), len(all_areas))))
        for c in cs:
            t = p_index.get(period_start(c.day, unit))
            if t is None:
                continue
            a = a_index[getattr(c, area)]
            table.counts[t, a] += 1
            table.cases.setdefault((t, a), []).append(c)
        out[disease] = table
    return out


def facility_districts(lake_dir: Path) -> dict[str, str]:
    """Organization id -> district code, from the lake's Organization resources (empty if none)."""
    return district_directory(lake_dir).facilities


def lake_cases(
    lake_dir: Path, definitions: Sequence[CaseDefinition], start: dt.date, end: dt.date
) -> list[Case]:
    """Cases (first diagnosis per resident episode) between start and end from a materialised lake."""
    con = open_views(lake_dir)
    try:
        return read_cases(con, definitions, start, end, directory=district_directory(lake_dir))
    finally:
        con.close()
