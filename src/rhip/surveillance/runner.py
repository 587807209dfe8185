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

from rhip.store.engine import write_transaction
from rhip.surveillance.alerts import AlertEvidence, ensure_schema, record_alarm
from rhip.surveillance.counting import Case, CountTable, count_cases, lake_cases
from rhip.surveillance.definitions import active_definitions
from rhip.surveillance.methods import detect, get_method
from rhip.surveillance.result import DetectionResult

__all__ = [
    "DEFAULT_SIGNALS",
    "EARS_SHORT_HISTORY",
    "Alarm",
    "RunReport",
    "Signal",
    "count_tables",
    "daily_job",
    "detect_signal",
    "detect_tables",
    "run_surveillance",
    "run_window",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """A method, its parameter overrides and an optional fallback for periods it cannot evaluate.

    With a ``fallback``, a Farrington-type method keeps its full baseline of ``b`` years and the
    fallback (typically EARS, which needs only weeks of history) covers the periods before that
    history exists; each alarm names the method that raised it.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    fallback: Signal | None = None

    @property
    def label(self) -> str:
        """``method`` or ``method(k=v,...)`` for tables, then ``> fallback``."""
        own = self.method
        if self.params:
            own += "(" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items())) + ")"
        return f"{own} > {self.fallback.label}" if self.fallback else own

    def to_json(self) -> dict[str, Any]:
        """The signal as kept with an alert's evidence, so a chart can run it again."""
        out: dict[str, Any] = {"method": self.method, "params": dict(self.params)}
        if self.fallback is not None:
            out["fallback"] = self.fallback.to_json()
        return out

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Signal:
        """Inverse of :meth:`to_json`."""
        fallback = body.get("fallback")
        return cls(
            str(body["method"]), dict(body.get("params") or {}), cls.from_json(fallback) if fallback else None
        )


#: EARS C2 with a floor of 0.5 on the baseline standard deviation: after seven weeks without
#: cases it takes two cases in a week (not one) to alarm. Needs seven weeks of history.
EARS_SHORT_HISTORY = Signal("ears_c2", {"minSigma": 0.5})

#: Default signals, chosen from the evaluation table in docs/surveillance.md: Farrington with a
#: three-year baseline where that history exists, EARS C2 (minSigma 0.5) before.
DEFAULT_SIGNALS: tuple[Signal, ...] = (Signal("farrington", {"b": 3}, EARS_SHORT_HISTORY),)


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
    signal: Signal | None = None  # the signal (with its fallback) whose run raised the alarm


@dataclass
class RunReport:
    """What a run did."""

    cases: int = 0
    series: int = 0
    alarms: list[Alarm] = field(default_factory=list)
    alerts_created: int = 0
    alerts_extended: int = 0
    notes: list[str] = field(default_factory=list)
    area_years: float = 0.0  # areas × years evaluated (denominator of false-alarm rates)
    window: tuple[dt.date, dt.date] | None = None  # first and last day counted


def _fit_params(signal: Signal, n_periods: int, unit: str, notes: list[str]) -> dict[str, Any] | None:
    """Shorten a Farrington baseline to the history available; None when even one year is missing.

    A signal with a fallback keeps its baseline (None when no period can be evaluated).
    """
    params = {**get_method(signal.method).params, **signal.params}
    if "b" not in params:
        return params
    freq = 52 if unit == "week" else 365
    b_max = (n_periods - int(params.get("w", 3)) - 1) // freq
    if signal.fallback is not None:
        if b_max >= int(params["b"]):
            return params
        note = f"{signal.method}: less than b={params['b']} years of history, {signal.fallback.label} used"
        if note not in notes:
            notes.append(note)
        return None
    if int(params.get("noPeriods", 1)) > 1:  # seasonal factor levels need two years of baseline
        b_max = b_max if b_max >= 2 else 0
    if b_max < 1:
        notes.append(f"{signal.method}: less than one year of history, skipped")
        return None
    if b_max < int(params["b"]):
        notes.append(f"{signal.method}: b shortened from {params['b']} to {b_max} years (history)")
        params["b"] = b_max
    return params


def _clean(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _detect_one(
    table: CountTable, signal: Signal, notes: list[str]
) -> tuple[DetectionResult, list[str]] | None:
    params = _fit_params(signal, len(table.periods), table.unit, notes)
    res: DetectionResult | None = None
    if params is not None:
        freq = 52 if table.unit == "week" else 365
        if signal.method.startswith("cusum") and len(table.periods) <= int(params.get("baseline", 104)):
            params["baseline"] = max(1, len(table.periods) // 2)
        res = detect(signal.method, table.counts, freq=freq, dates=table.periods, **params)
    names = [signal.method if res is not None and res.evaluated[t] else "" for t in range(len(table.periods))]
    if signal.fallback is None:
        return None if res is None else (res, names)
    back = _detect_one(table, signal.fallback, notes)
    if back is None or res is None:
        return back if res is None else (res, names)
    fb, fb_names = back
    use = ~res.evaluated & fb.evaluated
    for t in np.nonzero(use)[0]:
        names[t] = fb_names[t]
    return _merge(res, fb, use), names


def _merge(res: DetectionResult, fb: DetectionResult, use: Any) -> DetectionResult:
    """``res`` with the periods in ``use`` taken from ``fb``."""

    def pick(a: Any, b: Any) -> Any:
        return np.where(use[:, None] if np.ndim(a) == 2 else use, b, a)

    return DetectionResult(
        res.method,
        res.observed,
        pick(res.expected, fb.expected),
        pick(res.upperbound, fb.upperbound),
        pick(res.alarm, fb.alarm),
        pick(res.score, fb.score),
        pick(res.pvalue, fb.pvalue),
        res.evaluated | fb.evaluated,
    )


def detect_signal(
    tables: dict[str, CountTable], signal: Signal, notes: list[str] | None = None
) -> dict[str, tuple[DetectionResult, list[str]]]:
    """Run one signal (with its fallback) on every disease table; per disease the result and the
    method that evaluated each period. Diseases no method can evaluate are absent."""
    notes = notes if notes is not None else []
    out = {}
    for disease, table in tables.items():
        got = _detect_one(table, signal, notes)
        if got is not None:
            out[disease] = got
    return out


def detect_tables(
    tables: dict[str, CountTable], signal: Signal, notes: list[str] | None = None
) -> dict[str, DetectionResult]:
    """Run one signal on every disease table (all areas at once); diseases skipped are absent."""
    return {d: res for d, (res, _) in detect_signal(tables, signal, notes).items()}


def _alarms(
    table: CountTable, res: DetectionResult, methods: Sequence[str], rows: Sequence[int], signal: Signal
) -> list[Alarm]:
    out = []
    for t in rows:
        method = methods[t]
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
                    signal,
                )
            )
    return out


def run_window(end: dt.date | None, unit: str, history_years: int) -> tuple[dt.date, dt.date]:
    """The days a run counts: ``history_years`` of baseline up to ``end`` (default yesterday),
    cut back to the last complete ISO week when counting weeks."""
    end = end or dt.date.today() - dt.timedelta(days=1)
    if unit == "week":  # last complete ISO week
        end = end - dt.timedelta(days=(end.weekday() + 1) % 7)
    return end - dt.timedelta(days=365 * history_years + history_years // 4 + 7), end


def count_tables(
    engine: sa.Engine, lake_dir: Path, start: dt.date, end: dt.date, *, area: str, unit: str
) -> tuple[list[Case], dict[str, CountTable], dt.date]:
    """Cases and count tables per disease (every active definition) as a run counts them; the
    start returned is moved to the lake's first case, since weeks before it are unknown, not zero."""
    with engine.connect() as conn:
        definitions = active_definitions(conn)
    cases = lake_cases(lake_dir, definitions, start, end)
    if cases:
        start = max(start, min(c.day for c in cases))
    return cases, count_cases(cases, area=area, unit=unit, start=start, end=end), start


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
    start, end = run_window(end, unit, history_years)
    report = RunReport()
    cases, tables, start = count_tables(engine, lake_dir, start, end, area=area, unit=unit)
    report.window = (start, end)
    report.cases = len(cases)
    report.series = sum(len(t.areas) for t in tables.values())
    for signal in signals:
        for disease, (res, methods) in detect_signal(tables, signal, report.notes).items():
            table = tables[disease]
            rows = [int(t) for t in np.nonzero(res.evaluated)[0]]
            per_year = 52.18 if unit == "week" else 365.25
            report.area_years = max(report.area_years, len(rows) * len(table.areas) / per_year)
            if report_periods:
                rows = rows[-report_periods:]
            report.alarms += _alarms(table, res, methods, rows, signal)
    _record(engine, report, tables, area, unit)
    return report


def _record(
    engine: sa.Engine, report: RunReport, tables: dict[str, CountTable], area: str, unit: str
) -> None:
    with write_transaction(engine) as conn:
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
            signal = al.signal.to_json() if al.signal is not None else None
            window = (report.window[0].isoformat(), report.window[1].isoformat()) if report.window else None
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
                    signal,
                    window,
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
