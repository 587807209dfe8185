"""Running the signals: counts → methods → alarms → alerts (``rhip surveil run``, scheduler hook).

A signal is (method, parameters) applied to every disease × area series at one time unit. The
run counts cases from the lake, runs each signal on all series of a disease at once and records
the alarms of the report window (by default the last complete period) as alerts. History that is
too short for a Farrington baseline of ``b`` years shortens ``b`` (at least one year) and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from rhip.surveillance.alerts import AlertEvidence, ensure_schema, record_alarm
from rhip.surveillance.counting import CountTable, count_cases, lake_cases
from rhip.surveillance.definitions import active_definitions
from rhip.surveillance.methods import detect, get_method
from rhip.surveillance.result import DetectionResult

__all__ = [
    "DEFAULT_SIGNALS",
    "Alarm",
    "RunReport",
    "Signal",
    "daily_job",
    "detect_tables",
    "run_surveillance",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """A method and its parameter overrides."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)


#: Default signals, chosen from the evaluation table in docs/surveillance.md.
DEFAULT_SIGNALS: tuple[Signal, ...] = (Signal("farrington"),)


@dataclass(frozen=True)
class Alarm:
    """One alarm of one series in one period."""

    disease: str
    area: str
    period: dt.date
    method: str
    observed: float
    expected: float | None
    upperbound: float | None
    score: float | None


@dataclass
class RunReport:
    """What a run did."""

    cases: int = 0
    series: int = 0
    alarms: list[Alarm] = field(default_factory=list)
    alerts_created: int = 0
    alerts_extended: int = 0
    notes: list[str] = field(default_factory=list)


def _fit_params(signal: Signal, n_periods: int, unit: str, notes: list[str]) -> dict[str, Any] | None:
    """Shorten a Farrington baseline to the history available; None when even one year is missing."""
    params = {**get_method(signal.method).params, **signal.params}
    if "b" not in params:
        return params
    freq = 52 if unit == "week" else 365
    b_max = (n_periods - int(params.get("w", 3)) - 1) // freq
    if b_max < 1:
        notes.append(f"{signal.method}: less than one year of history, skipped")
        return None
    if b_max < int(params["b"]):
        notes.append(f"{signal.method}: b shortened from {params['b']} to {b_max} years (history)")
        params["b"] = b_max
    return params


def _clean(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def detect_tables(
    tables: dict[str, CountTable], signal: Signal, notes: list[str] | None = None
) -> dict[str, DetectionResult]:
    """Run one signal on every disease table (all areas at once); diseases skipped are absent."""
    out: dict[str, DetectionResult] = {}
    notes = notes if notes is not None else []
    for disease, table in tables.items():
        params = _fit_params(signal, len(table.periods), table.unit, notes)
        if params is None:
            continue
        freq = 52 if table.unit == "week" else 365
        if signal.method.startswith("cusum") and len(table.periods) <= int(params.get("baseline", 104)):
            params["baseline"] = max(1, len(table.periods) // 2)
        res = detect(
            signal.method, table.counts, freq=freq, dates=table.periods, **{k: v for k, v in params.items()}
        )
        out[disease] = res
    return out


def _alarms(table: CountTable, res: DetectionResult, method: str, rows: Sequence[int]) -> list[Alarm]:
    out = []
    for t in rows:
        for a in np.nonzero(res.alarm[t])[0]:
            out.append(
                Alarm(
                    table.disease,
                    table.areas[a],
                    table.periods[t],
                    method,
                    float(table.counts[t, a]),
                    _clean(res.expected[t, a]),
                    _clean(res.upperbound[t, a]),
                    _clean(res.score[t, a]),
                )
            )
    return out


def run_surveillance(
    engine: sa.Engine,
    lake_dir: Path,
    *,
    end: dt.date | None = None,
    history_years: int = 6,
    report_periods: int = 1,
    signals: Sequence[Signal] = DEFAULT_SIGNALS,
    area: str = "district",
    unit: str = "week",
) -> RunReport:
    """Count, detect and record alerts for the last ``report_periods`` complete periods before ``end``.

    Args:
        engine: database for alerts and case definitions (the store's engine).
        lake_dir: lake root with materialised views.
        end: last day considered (default yesterday); the period containing it must be complete.
        history_years: years of counts before ``end`` used as baseline.
        report_periods: how many of the latest periods produce alerts (0 = all evaluated periods).
        signals: methods to run. area: ``district`` or ``facility``. unit: ``week`` or ``day``.
    """
    ensure_schema(engine)
    end = end or dt.date.today() - dt.timedelta(days=1)
    if unit == "week":  # last complete ISO week
        end = end - dt.timedelta(days=(end.weekday() + 1) % 7)
    start = end - dt.timedelta(days=365 * history_years + history_years // 4 + 7)
    report = RunReport()
    with engine.connect() as conn:
        definitions = active_definitions(conn)
    cases = lake_cases(lake_dir, definitions, start, end)
    if cases:  # weeks before the lake's first case are unknown, not zero
        start = max(start, min(c.day for c in cases))
    tables = count_cases(cases, area=area, unit=unit, start=start, end=end)
    report.cases = len(cases)
    report.series = sum(len(t.areas) for t in tables.values())
    for signal in signals:
        results = detect_tables(tables, signal, report.notes)
        for disease, res in results.items():
            table = tables[disease]
            rows = [int(t) for t in np.nonzero(res.evaluated)[0]]
            if report_periods:
                rows = rows[-report_periods:]
            report.alarms += _alarms(table, res, signal.method, rows)
    _record(engine, report, tables, area, unit)
    return report


def _record(
    engine: sa.Engine, report: RunReport, tables: dict[str, CountTable], area: str, unit: str
) -> None:
    with engine.begin() as conn:
        for al in sorted(report.alarms, key=lambda x: x.period):
            table = tables[al.disease]
            t, a = table.periods.index(al.period), table.areas.index(al.area)
            cases = [
                {
                    "condition": c.condition_id,
                    "resident": c.resident_id,
                    "patient": c.patient_id,
                    "day": c.day.isoformat(),
                }
                for c in table.cases.get((t, a), [])
            ]
            _, created = record_alarm(
                conn,
                AlertEvidence(
                    al.disease,
                    area,
                    al.area,
                    unit,
                    al.method,
                    al.period,
                    al.observed,
                    al.expected,
                    al.upperbound,
                    al.score,
                    cases,
                ),
            )
            if created:
                report.alerts_created += 1
            else:
                report.alerts_extended += 1


def daily_job(settings: Any = None) -> RunReport:
    """Scheduler hook: run the default signals for yesterday with the platform's settings.

    Call it from cron/systemd timers (``rhip surveil run``) or any scheduler once a day after the
    lake has been refreshed.
    """
    from rhip.config import get_settings
    from rhip.store import Store

    settings = settings or get_settings()
    store = Store.from_settings(settings)
    try:
        return run_surveillance(store.engine, Path(settings.lake_dir))
    finally:
        store.close()
