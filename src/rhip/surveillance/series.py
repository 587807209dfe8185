"""An alert's series: the weeks (or days) before and including its alarms, recomputed from the lake.

An officer judging an alert wants to see the alarm against the series it broke out of: the counts
of the weeks before, what the method expected and where its upper bound lay. The alert keeps only
its alarm periods, so the series is recomputed with the run's own pieces
(:func:`rhip.surveillance.runner.count_tables` and :func:`~rhip.surveillance.runner.detect_signal`)
over the window and with the signal recorded with the alert's evidence. Alerts recorded before
the signal was kept name only the method that raised them: the default signal is used when that
method is part of it, else the method with its registered defaults (``signal_recorded`` False).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from rhip.errors import InvalidRequest
from rhip.surveillance.areas import district_directory
from rhip.surveillance.counting import CountTable
from rhip.surveillance.definitions import list_definitions
from rhip.surveillance.result import DetectionResult
from rhip.surveillance.runner import DEFAULT_SIGNALS, Signal, count_tables, detect_signal, run_window

__all__ = ["DEFAULT_SERIES_PERIODS", "MAX_SERIES_PERIODS", "alert_series", "recent_counts", "signal_of"]

#: Periods shown before and including an alert's last period (one year of weeks).
DEFAULT_SERIES_PERIODS = 52
#: The most periods a series may ask for (ten years of weeks).
MAX_SERIES_PERIODS = 520


def _chain(signal: Signal) -> list[str]:
    return [signal.method] + (_chain(signal.fallback) if signal.fallback else [])


def signal_of(alert: dict[str, Any]) -> tuple[Signal, bool]:
    """The signal that raised the alert and whether it was recorded (False: inferred from its method)."""
    recorded = [e["signal"] for e in alert["evidence"] if e.get("signal")]
    if recorded:
        return Signal.from_json(recorded[-1]), True
    for signal in DEFAULT_SIGNALS:
        if alert["method"] in _chain(signal):
            return signal, False
    return Signal(alert["method"]), False


def _window(alert: dict[str, Any]) -> tuple[dt.date, dt.date]:
    """The days the recording run counted; for older alerts, a daily run ending with the alert."""
    recorded = [e["window"] for e in alert["evidence"] if e.get("window")]
    if recorded:
        start, end = recorded[-1]
        return dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    last = dt.date.fromisoformat(alert["last_period"])
    return run_window(last + dt.timedelta(days=6 if alert["unit"] == "week" else 0), alert["unit"], 6)


def _names(conn: sa.Connection, disease: str) -> dict[str, str]:
    for d in list_definitions(conn):
        if d["code"] == disease:
            return {"en": str(d.get("name") or disease), "zh": str(d.get("name_zh") or "")}
    return {"en": disease, "zh": ""}


def _point(
    table: CountTable, res: DetectionResult | None, methods: list[str], t: int, a: int
) -> dict[str, Any]:
    def value(arr: Any) -> float | None:
        v = arr[t, a]
        return None if not np.isfinite(v) else float(v)

    evaluated = res is not None and bool(res.evaluated[t])
    return {
        "period": table.periods[t].isoformat(),
        "observed": float(table.counts[t, a]),
        "expected": value(res.expected) if res is not None and evaluated else None,
        "upperbound": value(res.upperbound) if res is not None and evaluated else None,
        "score": value(res.score) if res is not None and evaluated else None,
        "alarm": bool(res.alarm[t, a]) if res is not None and evaluated else False,
        "method": methods[t] or None if evaluated else None,
    }


def alert_series(
    engine: sa.Engine, lake_dir: Path, alert: dict[str, Any], periods: int = DEFAULT_SERIES_PERIODS
) -> dict[str, Any]:
    """Observed, expected, upper bound, alarm and method per period for ``periods`` periods up to
    and including the alert's last period (``alert`` as :func:`rhip.surveillance.alerts.get_alert`).

    Raises:
        InvalidRequest: ``periods`` outside 1..:data:`MAX_SERIES_PERIODS`, or no lake views.
    """
    if not 1 <= periods <= MAX_SERIES_PERIODS:
        raise InvalidRequest(f"periods must be between 1 and {MAX_SERIES_PERIODS}")
    signal, recorded = signal_of(alert)
    start, end = _window(alert)
    _, tables, start = count_tables(engine, lake_dir, start, end, area=alert["area_kind"], unit=alert["unit"])
    notes: list[str] = []
    table = tables.get(alert["disease"])
    points: list[dict[str, Any]] = []
    if table is not None and alert["area"] in table.areas:
        res, methods = detect_signal({alert["disease"]: table}, signal, notes).get(
            alert["disease"], (None, [""] * len(table.periods))
        )
        a = table.areas.index(alert["area"])
        last = dt.date.fromisoformat(alert["last_period"])
        rows = [t for t, p in enumerate(table.periods) if p <= last][-periods:]
        points = [_point(table, res, methods, t, a) for t in rows]
    else:
        notes.append("no cases of this disease and area in the lake any more")
    with engine.connect() as conn:
        names = _names(conn, alert["disease"])
    area_label = alert["area"]
    if alert["area_kind"] == "district":
        area_label = district_directory(lake_dir).label(alert["area"])
    first = alert["first_period"]
    for p in points:
        p["in_alert"] = first <= p["period"] <= alert["last_period"]
    return {
        "alert": alert["id"],
        "disease": alert["disease"],
        "disease_name": names,
        "area_kind": alert["area_kind"],
        "area": alert["area"],
        "area_label": area_label,
        "unit": alert["unit"],
        "first_period": first,
        "last_period": alert["last_period"],
        "status": alert["status"],
        "signal": signal.label,
        "signal_recorded": recorded,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "notes": notes,
        "points": points,
    }


def recent_counts(
    engine: sa.Engine, lake_dir: Path, alerts: list[dict[str, Any]], periods: int = 12
) -> dict[str, list[float]]:
    """Observed counts of the ``periods`` periods up to each alert's last period, by alert id.

    One count of the lake per area kind and unit (a year more than shown is counted, so the
    episodes of the first periods shown are told apart as a run does).
    """
    out: dict[str, list[float]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault((alert["area_kind"], alert["unit"]), []).append(alert)
    for (area, unit), members in groups.items():
        step = dt.timedelta(days=7 if unit == "week" else 1)
        lasts = [dt.date.fromisoformat(a["last_period"]) for a in members]
        start = min(lasts) - step * periods - dt.timedelta(days=366)
        _, tables, _ = count_tables(engine, lake_dir, start, max(lasts) + step, area=area, unit=unit)
        for alert, last in zip(members, lasts, strict=True):
            table = tables.get(alert["disease"])
            if table is None or alert["area"] not in table.areas or last not in table.periods:
                continue
            t, a = table.periods.index(last), table.areas.index(alert["area"])
            counts = [float(v) for v in table.counts[max(0, t - periods + 1) : t + 1, a]]
            out[alert["id"]] = [0.0] * (periods - len(counts)) + counts
    return out
