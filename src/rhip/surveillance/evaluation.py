"""Evaluation of the methods against the generator's injected outbreaks.

The generator writes ``truth/outbreaks.csv`` (disease, ICD-10, district code, first/last ISO week);
cases are counted by GB/T 2260 district code, as the truth is. For every method the weekly district series
are run over all evaluable weeks and compared with the truth:

- sensitivity: share of evaluable outbreaks with an alarm in the series between the outbreak's
  first week and two weeks after its last week;
- false alarms per area-year: alarms outside every outbreak window, per district per year
  evaluated (all diseases together);
- median delay: weeks from the outbreak's first week to its first alarm, over detected outbreaks.
"""

from __future__ import annotations

import csv
import datetime as dt
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rhip.errors import InvalidRequest
from rhip.surveillance.counting import CountTable
from rhip.surveillance.runner import Signal, detect_tables

__all__ = [
    "MethodScore",
    "Outbreak",
    "OutbreakFinding",
    "evaluate",
    "evaluate_region",
    "match_alerts",
    "read_outbreaks",
]

_GRACE_WEEKS = 2

#: Told the name of each step of an evaluation as it starts (reading the lake, counting, scoring a
#: method), so a command can show progress on a run of minutes.
OnStep = Callable[[str], None]


def _quiet(step: str) -> None:
    """The default of ``on_step``: nothing is shown."""


@dataclass(frozen=True)
class Outbreak:
    """An injected outbreak, placed on the case-definition code and GB/T 2260 district code."""

    outbreak_id: str
    disease: str
    district: str
    first_week: dt.date  # Monday
    last_week: dt.date
    extra_cases: int


@dataclass
class MethodScore:
    """One row of the evaluation table."""

    method: str
    outbreaks: int
    detected: int
    false_alarms: int
    area_years: float
    delays: list[int]

    @property
    def sensitivity(self) -> float:
        """Share of outbreaks detected."""
        return self.detected / self.outbreaks if self.outbreaks else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        """False alarms per district-year."""
        return self.false_alarms / self.area_years if self.area_years else float("nan")

    @property
    def median_delay(self) -> float:
        """Median weeks to detection (NaN when nothing was detected)."""
        return float(statistics.median(self.delays)) if self.delays else float("nan")


def _monday(iso_week: str) -> dt.date:
    year, week = iso_week.split("-W")
    return dt.date.fromisocalendar(int(year), int(week), 1)


def read_outbreaks(region_dir: Path) -> list[Outbreak]:
    """Outbreaks of a generated region, with ICD-10 mapped to the notifiable disease code."""
    from rhip.fhir.terminology import notifiable_disease_for_icd10

    truth = region_dir / "truth" / "outbreaks.csv"
    if not truth.is_file():
        raise InvalidRequest(
            f"{region_dir}: no truth/outbreaks.csv; give a folder written by `rhip generate`"
        )
    out = []
    with truth.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            disease = notifiable_disease_for_icd10(row["icd10"])
            if disease is None:
                continue
            out.append(
                Outbreak(
                    row["outbreak_id"],
                    disease.code,
                    row["district_code"],
                    _monday(row["first_week"]),
                    _monday(row["last_week"]),
                    int(row["extra_cases"] or 0),
                )
            )
    return out


def _in_window(ob: Outbreak, period: dt.date) -> bool:
    return ob.first_week <= period <= ob.last_week + dt.timedelta(weeks=_GRACE_WEEKS)


@dataclass(frozen=True)
class OutbreakFinding:
    """What the recorded alerts say about one injected outbreak."""

    outbreak: Outbreak
    method: str | None = None
    first_alarm: dt.date | None = None
    alert_id: str | None = None

    @property
    def delay(self) -> int | None:
        """Weeks from the outbreak's first week to the first alarm (None when not detected)."""
        return None if self.first_alarm is None else (self.first_alarm - self.outbreak.first_week).days // 7


def match_alerts(
    alerts: Sequence[Mapping[str, Any]], outbreaks: Sequence[Outbreak]
) -> tuple[list[OutbreakFinding], dict[str, str]]:
    """Match recorded alerts to outbreaks: same disease code, same district code and an alarm week
    between the outbreak's first week and two weeks after its last week.

    Returns one finding per outbreak (earliest alarm over all matching alerts) and alert id ->
    outbreak id for the alerts that matched; the other alerts are false alarms.
    """
    findings: list[OutbreakFinding] = []
    matched: dict[str, str] = {}
    for ob in outbreaks:
        best = OutbreakFinding(ob)
        for a in alerts:
            if a["disease"] != ob.disease or a["area"] != ob.district:
                continue
            weeks = sorted(dt.date.fromisoformat(str(e["period"])[:10]) for e in a["evidence"])
            hits = [w for w in weeks if _in_window(ob, w)]
            if not hits:
                continue
            matched.setdefault(str(a["id"]), ob.outbreak_id)
            if best.first_alarm is None or hits[0] < best.first_alarm:
                best = OutbreakFinding(ob, str(a["method"]), hits[0], str(a["id"]))
        findings.append(best)
    return findings, matched


def evaluate(
    tables: dict[str, CountTable],
    outbreaks: Sequence[Outbreak],
    signals: Sequence[Signal],
    on_step: OnStep = _quiet,
) -> list[MethodScore]:
    """Score each signal on the weekly district tables against the outbreaks (``on_step`` is told
    ``scoring <label>`` before each signal)."""
    scores = []
    for signal in signals:
        on_step(f"scoring {signal.label}")
        results = detect_tables(tables, signal)
        score = MethodScore(signal.label, 0, 0, 0, 0.0, [])
        covered: set[tuple[str, str, dt.date]] = set()
        for ob in outbreaks:
            table, res = tables.get(ob.disease), results.get(ob.disease)
            if table is None or res is None or ob.district not in table.areas:
                continue
            a = table.areas.index(ob.district)
            window = [t for t, p in enumerate(table.periods) if _in_window(ob, p)]
            if not window or not res.evaluated[window[0]]:
                continue
            score.outbreaks += 1
            covered.update((ob.disease, ob.district, table.periods[t]) for t in window)
            hits = [t for t in window if res.alarm[t, a]]
            if hits:
                score.detected += 1
                score.delays.append((table.periods[hits[0]] - ob.first_week).days // 7)
        areas: set[str] = set()
        weeks = 0
        for disease, res in results.items():
            table = tables[disease]
            areas.update(table.areas)
            weeks = max(weeks, int(res.evaluated.sum()))
            for t, a in zip(*np.nonzero(res.alarm), strict=True):
                if (disease, table.areas[a], table.periods[t]) not in covered:
                    score.false_alarms += 1
        score.area_years = len(areas) * weeks / 52.18
        scores.append(score)
    return scores


def evaluate_region(
    region_dir: Path, lake_dir: Path, methods: Sequence[str | Signal], on_step: OnStep = _quiet
) -> list[MethodScore]:
    """Count weekly district cases from the lake and score ``methods`` (names or signals with
    parameters) against the region's truth.

    ``on_step`` is told each step as it starts: ``reading cases from the lake``, ``counting weekly
    cases``, then ``scoring <label>`` per signal (2 + len(methods) steps in all).
    """
    signals = [m if isinstance(m, Signal) else Signal(m) for m in methods]
    from rhip.surveillance.counting import count_cases, default_definitions, lake_cases

    outbreaks = read_outbreaks(region_dir)  # first: a folder without truth is the likelier mistake
    on_step("reading cases from the lake")
    cases = lake_cases(lake_dir, default_definitions(), dt.date(1900, 1, 1), dt.date(2999, 12, 31))
    if not cases:
        return [MethodScore(s.label, 0, 0, 0, 0.0, []) for s in signals]
    on_step("counting weekly cases")
    tables = count_cases(cases, start=min(c.day for c in cases), end=max(c.day for c in cases))
    return evaluate(tables, outbreaks, signals, on_step)
