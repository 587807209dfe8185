"""The chart of an alert: observed cases as bars, expected and upper bound as lines, alarms marked.

Built from :func:`rhip.surveillance.series.alert_series`, so the page shows exactly the numbers
the JSON series serves. Labels are bilingual (病例数 / cases); the disease is named in Chinese
and English where the case definition has both names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rhip.charts import Chart, render_page

__all__ = ["alert_figure", "alert_page", "alert_title"]

_OBSERVED = "#7f9fbf"
_ALARM = "#d62728"
_IN_ALERT = "#ff9896"


def alert_title(series: dict[str, Any]) -> str:
    """``流行性腮腺炎 Mumps · 330402 南湖区 · 预警 alert 2024-10-07 – 2024-10-21``."""
    names = series["disease_name"]
    disease = " ".join(n for n in (names.get("zh"), names.get("en")) if n) or series["disease"]
    span = series["first_period"]
    if series["last_period"] != span:
        span += f" – {series['last_period']}"
    return f"{disease} · {series['area_label']} · 预警 alert {span}"


def _alarm_shapes(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A shaded band behind every alarm period (half a period either side of its day)."""
    half = dt.timedelta(hours=84 if series["unit"] == "week" else 12)
    shapes = []
    for p in series["points"]:
        if p["alarm"]:
            day = dt.datetime.fromisoformat(p["period"])
            shapes.append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "paper",
                    "x0": (day - half).isoformat(),
                    "x1": (day + half).isoformat(),
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": "rgba(214, 39, 40, 0.12)",
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
    return shapes


def alert_figure(series: dict[str, Any]) -> dict[str, Any]:
    """The plotly figure (as a dict) of an alert series."""
    pts = series["points"]
    x = [p["period"] for p in pts]
    colours = [_ALARM if p["alarm"] else _IN_ALERT if p["in_alert"] else _OBSERVED for p in pts]
    methods = [p["method"] or "-" for p in pts]
    unit = "周 / week (ISO, Monday)" if series["unit"] == "week" else "日 / day"
    alarms = [p for p in pts if p["alarm"]]
    data = [
        {
            "type": "bar",
            "name": "病例数 observed",
            "x": x,
            "y": [p["observed"] for p in pts],
            "marker": {"color": colours},
            "customdata": methods,
            "hovertemplate": "%{x}: %{y} 例 cases (%{customdata})<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "期望值 expected",
            "x": x,
            "y": [p["expected"] for p in pts],
            "line": {"color": "#2ca02c", "dash": "dash"},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "上限 upper bound",
            "x": x,
            "y": [p["upperbound"] for p in pts],
            "line": {"color": "#ff7f0e"},
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": "预警 alarm",
            "x": [p["period"] for p in alarms],
            "y": [p["observed"] for p in alarms],
            "marker": {"color": _ALARM, "symbol": "triangle-down", "size": 12},
            "hovertemplate": "%{x}: 预警 alarm<extra></extra>",
        },
    ]
    layout = {
        "title": {"text": alert_title(series)},
        "xaxis": {"title": {"text": unit}, "type": "date", "gridcolor": "#eee"},
        "yaxis": {"title": {"text": "病例数 / cases"}, "rangemode": "tozero", "gridcolor": "#eee"},
        "legend": {"orientation": "h", "y": -0.2},
        "shapes": _alarm_shapes(series),
        "bargap": 0.15,
        "hovermode": "x",
        "plot_bgcolor": "white",
    }
    return {"data": data, "layout": layout}


def alert_page(series: dict[str, Any], *, static_base: str | None = None) -> str:
    """The HTML page of an alert's chart (self-contained when ``static_base`` is None)."""
    meta = [
        f"信号 signal: {series['signal']}"
        + ("" if series["signal_recorded"] else " (inferred from the alert's method)")
        + f" · 状态 status: {series['status']} · alert {series['alert']}",
        f"计数区间 counted: {series['window']['start']} – {series['window']['end']}",
        *series["notes"],
    ]
    return render_page(alert_title(series), [Chart(alert_figure(series))], meta=meta, static_base=static_base)
