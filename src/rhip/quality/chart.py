"""Data-quality charts: each facility's daily score over time, and the latest score of every rule.

Built from the same functions as ``/quality/scores`` (:func:`rhip.quality.scores.facility_scores`
and :func:`~rhip.quality.scores.rule_scores`), so the page and the JSON agree. The window is the
last ``days`` days up to the latest day that has tallies (not today: a back-load of historic
records has its days in the past).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine

from rhip.charts import Chart, render_page
from rhip.errors import InvalidRequest
from rhip.quality.rules import DIMENSIONS
from rhip.quality.scores import facility_scores, latest_day, rule_scores

__all__ = ["latest_rule_scores", "quality_charts", "quality_page"]

_DIMENSION_COLOURS = dict(zip(DIMENSIONS, ("#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e"), strict=False))
_DIMENSION_NAMES = {
    "completeness": "完整性 completeness",
    "conformance": "规范性 conformance",
    "plausibility": "合理性 plausibility",
    "timeliness": "及时性 timeliness",
}


def _day_from(engine: Engine, facility: str | None, days: int | None) -> str | None:
    if days is None:
        return None
    if days < 1:
        raise InvalidRequest("days must be at least 1")
    last = latest_day(engine, facility)
    return None if last is None else (dt.date.fromisoformat(last) - dt.timedelta(days=days - 1)).isoformat()


def latest_rule_scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule, the score over each facility's latest day with checks of that rule (facilities summed)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["facility"], r["rule"])
        if r["checked"] and (key not in latest or r["day"] > latest[key]["day"]):
            latest[key] = r
    per_rule: dict[str, dict[str, Any]] = {}
    for (_, rule), r in latest.items():
        m = per_rule.setdefault(rule, {"rule": rule, "checked": 0, "failed": 0, "facilities": 0})
        m["checked"] += r["checked"]
        m["failed"] += r["failed"]
        m["facilities"] += 1
    for m in per_rule.values():
        m["score"] = round(100.0 * (m["checked"] - m["failed"]) / m["checked"], 2)
    return sorted(per_rule.values(), key=lambda m: str(m["rule"]))


def _daily_figure(daily: list[dict[str, Any]]) -> dict[str, Any]:
    by_facility: dict[str, list[dict[str, Any]]] = {}
    for row in daily:
        by_facility.setdefault(row["facility"], []).append(row)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": facility,
            "x": [r["day"] for r in rows],
            "y": [r["score"] for r in rows],
            "marker": {"size": 4},
            "hovertemplate": facility + " %{x}: %{y:.1f}<extra></extra>",
        }
        for facility, rows in sorted(by_facility.items())
    ]
    layout = {
        "title": {"text": "各机构每日数据质量得分 / daily quality score per facility (0-100)"},
        "xaxis": {"title": {"text": "日期 / day"}, "type": "date", "gridcolor": "#eee"},
        "yaxis": {"title": {"text": "得分 / score"}, "range": [0, 101], "gridcolor": "#eee"},
        "plot_bgcolor": "white",
        "hovermode": "closest",
    }
    return {"data": data, "layout": layout}


def _rules_figure(latest: list[dict[str, Any]]) -> dict[str, Any]:
    data = []
    for dim in DIMENSIONS:
        rows = [r for r in latest if r["rule"].startswith(dim + ".")]
        if rows:
            data.append(
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": _DIMENSION_NAMES.get(dim, dim),
                    "y": [r["rule"] for r in rows],
                    "x": [r["score"] for r in rows],
                    "customdata": [[r["checked"], r["failed"]] for r in rows],
                    "marker": {"color": _DIMENSION_COLOURS.get(dim, "#7f7f7f")},
                    "hovertemplate": "%{y}: %{x:.1f} (%{customdata[0]} checked, %{customdata[1]} failed)"
                    "<extra></extra>",
                }
            )
    layout = {
        "title": {"text": "各规则最新得分 / latest score per rule (0-100)"},
        "xaxis": {"title": {"text": "得分 / score"}, "range": [0, 101], "gridcolor": "#eee"},
        "yaxis": {"automargin": True, "autorange": "reversed"},
        "height": max(360, 28 * len(latest) + 140),
        "plot_bgcolor": "white",
        "legend": {"orientation": "h", "y": -0.15},
    }
    return {"data": data, "layout": layout}


def quality_charts(
    engine: Engine, *, facility: str | None = None, days: int | None = None
) -> tuple[list[Chart], dict[str, Any]]:
    """The two figures and what they show (facilities, first and last day, rules)."""
    day_from = _day_from(engine, facility, days)
    daily = facility_scores(engine, by_day=True, facility=facility, day_from=day_from)
    latest = latest_rule_scores(rule_scores(engine, facility=facility, day_from=day_from))
    days_shown = sorted({r["day"] for r in daily})
    info = {
        "facilities": sorted({r["facility"] for r in daily}),
        "first_day": days_shown[0] if days_shown else None,
        "last_day": days_shown[-1] if days_shown else None,
        "rules": latest,
    }
    return [Chart(_daily_figure(daily)), Chart(_rules_figure(latest))], info


def quality_page(
    engine: Engine, *, facility: str | None = None, days: int | None = None, static_base: str | None = None
) -> str:
    """The HTML page of the quality charts (self-contained when ``static_base`` is None)."""
    charts, info = quality_charts(engine, facility=facility, days=days)
    who = facility or f"{len(info['facilities'])} 机构 facilities"
    span = (
        f"{info['first_day']} – {info['last_day']}"
        if info["first_day"]
        else "no quality records yet 暂无记录"
    )
    return render_page(
        f"数据质量 Data quality · {who}", charts, meta=[f"日期 days: {span}"], static_base=static_base
    )
