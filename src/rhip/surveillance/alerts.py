"""Alerts: one per (disease, area, method) signal, extended over consecutive alarm periods.

An alarm in period ``t`` joins the open alert of the same disease, area and method whose last
period is ``t`` or the period before; otherwise it opens a new alert. So a four-week outbreak is
one alert, not four. Each alert keeps its evidence (count, expected, bound, score per period)
and the contributing cases (condition and resident ids); officers acknowledge and close alerts,
and every action is kept in ``surveillance_alert_action`` (who, when, what, note).

Tables live in their own SQLAlchemy metadata and are created by the platform's migrations
(revision ``0005``, with the case-definition table of :mod:`rhip.surveillance.definitions`); a
change here needs a new revision.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.store.meta import format_instant

__all__ = [
    "ALERT_STATUSES",
    "AlertEvidence",
    "alert_table",
    "count_by_status",
    "ensure_schema",
    "get_alert",
    "list_alerts",
    "record_alarm",
    "set_status",
]

ALERT_STATUSES = ("open", "acknowledged", "closed")

METADATA = sa.MetaData()

alert_table = sa.Table(
    "surveillance_alert",
    METADATA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("disease", sa.String(128), nullable=False),
    sa.Column("area_kind", sa.String(16), nullable=False),
    sa.Column("area", sa.String(128), nullable=False),
    sa.Column("unit", sa.String(8), nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("first_period", sa.String(10), nullable=False),
    sa.Column("last_period", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("max_score", sa.Float),
    sa.Column("evidence", sa.LargeBinary, nullable=False),  # orjson list of per-period rows
    sa.Column("cases", sa.LargeBinary, nullable=False),  # orjson list of {condition, resident, patient, day}
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Index("ix_surveillance_alert_signal", "disease", "area_kind", "area", "method", "unit"),
)

action_table = sa.Table(
    "surveillance_alert_action",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)


def ensure_schema(engine: sa.Engine) -> None:
    """Make sure the database is at the newest migration (cheap after the first call per engine)."""
    from rhip.store.migrations import ensure_head

    ensure_head(engine)


@dataclass(frozen=True)
class AlertEvidence:
    """What a method said about one period of one series."""

    disease: str
    area_kind: str
    area: str
    unit: str
    method: str
    period: dt.date
    observed: float
    expected: float | None
    upperbound: float | None
    score: float | None
    cases: list[dict[str, str]]
    signal: dict[str, Any] | None = None  # Signal.to_json() of the run, so the series can be rebuilt
    window: tuple[str, str] | None = None  # first and last day the run counted

    def row(self) -> dict[str, Any]:
        """The evidence row kept with the alert (with the run's signal and window when known)."""
        out: dict[str, Any] = {
            "period": self.period.isoformat(),
            "observed": self.observed,
            "expected": self.expected,
            "upperbound": self.upperbound,
            "score": self.score,
        }
        if self.signal is not None:
            out["signal"] = self.signal
        if self.window is not None:
            out["window"] = list(self.window)
        return out


def _previous(period: dt.date, unit: str) -> str:
    return (period - dt.timedelta(days=7 if unit == "week" else 1)).isoformat()


def record_alarm(conn: sa.Connection, ev: AlertEvidence) -> tuple[str, bool]:
    """Add one alarm: extend the signal's current alert or open a new one; return (id, created).

    An alarm already recorded (same period) changes nothing.
    """
    t = alert_table
    p = ev.period.isoformat()
    q = sa.select(t).where(
        t.c.disease == ev.disease,
        t.c.area_kind == ev.area_kind,
        t.c.area == ev.area,
        t.c.method == ev.method,
        t.c.unit == ev.unit,
        t.c.first_period <= p,
        t.c.last_period >= _previous(ev.period, ev.unit),
    )
    row = conn.execute(q.order_by(t.c.last_period.desc()).limit(1)).mappings().first()
    now = time.time()
    if row is not None:
        evidence = orjson.loads(row["evidence"])
        if any(e["period"] == p for e in evidence):
            return str(row["id"]), False
    if row is not None and row["status"] != "closed":  # a closed alert is not reopened silently
        evidence.append(ev.row())
        cases = orjson.loads(row["cases"]) + ev.cases
        conn.execute(
            t.update()
            .where(t.c.id == row["id"])
            .values(
                last_period=max(p, row["last_period"]),
                evidence=orjson.dumps(evidence),
                cases=orjson.dumps(cases),
                max_score=max(row["max_score"] or 0.0, ev.score or 0.0),
                updated=now,
            )
        )
        return str(row["id"]), False
    alert_id = uuid.uuid4().hex
    conn.execute(
        t.insert().values(
            id=alert_id,
            disease=ev.disease,
            area_kind=ev.area_kind,
            area=ev.area,
            unit=ev.unit,
            method=ev.method,
            first_period=p,
            last_period=p,
            status="open",
            max_score=ev.score,
            evidence=orjson.dumps([ev.row()]),
            cases=orjson.dumps(ev.cases),
            created=now,
            updated=now,
        )
    )
    return alert_id, True


def _public(row: Any, *, with_cases: bool) -> dict[str, Any]:
    out = {
        k: row[k]
        for k in (
            "id",
            "disease",
            "area_kind",
            "area",
            "unit",
            "method",
            "first_period",
            "last_period",
            "status",
            "max_score",
            "created",
            "updated",
        )
    }
    out["created"], out["updated"] = format_instant(row["created"]), format_instant(row["updated"])
    out["evidence"] = orjson.loads(row["evidence"])
    cases = orjson.loads(row["cases"])
    out["case_count"] = len(cases)
    if with_cases:
        out["cases"] = cases
    return out


def list_alerts(
    conn: sa.Connection,
    *,
    status: str | None = None,
    disease: str | None = None,
    area: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Alerts, newest period first, optionally filtered (cases omitted; see :func:`get_alert`)."""
    t = alert_table
    q = sa.select(t)
    if status:
        if status not in ALERT_STATUSES:
            raise InvalidRequest(f"status must be one of {ALERT_STATUSES}")
        q = q.where(t.c.status == status)
    if disease:
        q = q.where(t.c.disease == disease)
    if area:
        q = q.where(t.c.area == area)
    q = q.order_by(t.c.last_period.desc(), t.c.disease, t.c.area).limit(limit)
    return [_public(r, with_cases=False) for r in conn.execute(q).mappings()]


def count_by_status(conn: sa.Connection) -> dict[str, int]:
    """Alerts per status, every status present (0 when none): open ones await an officer."""
    t = alert_table
    rows = conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
    found = {str(status): int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in ALERT_STATUSES}


def get_alert(conn: sa.Connection, alert_id: str) -> dict[str, Any]:
    """One alert with its cases and officer actions; ResourceNotFound if unknown."""
    row = conn.execute(sa.select(alert_table).where(alert_table.c.id == alert_id)).mappings().first()
    if row is None:
        raise ResourceNotFound(f"surveillance alert {alert_id} not found")
    out = _public(row, with_cases=True)
    acts = conn.execute(
        sa.select(action_table).where(action_table.c.alert_id == alert_id).order_by(action_table.c.seq)
    ).mappings()
    out["actions"] = [
        {"action": a["action"], "actor": a["actor"], "note": a["note"], "at": format_instant(a["at"])}
        for a in acts
    ]
    return out


_TRANSITIONS = {"acknowledged": ("open",), "closed": ("open", "acknowledged")}


def set_status(
    conn: sa.Connection, alert_id: str, status: str, *, actor: str, note: str | None = None
) -> dict[str, Any]:
    """Acknowledge or close an alert, recording who did it; InvalidRequest on a wrong transition."""
    if status not in _TRANSITIONS:
        raise InvalidRequest("status must be 'acknowledged' or 'closed'")
    current = get_alert(conn, alert_id)
    if current["status"] not in _TRANSITIONS[status]:
        raise InvalidRequest(f"alert is {current['status']}; cannot set it {status}")
    now = time.time()
    conn.execute(alert_table.update().where(alert_table.c.id == alert_id).values(status=status, updated=now))
    conn.execute(
        action_table.insert().values(alert_id=alert_id, action=status, actor=actor, note=note, at=now)
    )
    return get_alert(conn, alert_id)
