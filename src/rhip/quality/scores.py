"""Quality scores from the tallies: per facility, day and rule, and per facility and day overall.

A rule's score is the share of checks that passed (0-100). A facility's score for a day is the
mean of its rule scores, and per dimension the mean of that dimension's rule scores, so a rule
with many checks does not drown the others.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from rhip.quality.rules import DIMENSIONS
from rhip.quality.schema import ensure_schema, quality_tally


def rule_scores(
    engine: Engine, *, facility: str | None = None, day_from: str | None = None, day_to: str | None = None
) -> list[dict[str, Any]]:
    """One row per facility, day and rule: checked, failed, score (0-100)."""
    ensure_schema(engine)
    t = quality_tally
    stmt = select(t).order_by(t.c.facility, t.c.day, t.c.rule)
    if facility:
        stmt = stmt.where(t.c.facility == facility)
    if day_from:
        stmt = stmt.where(t.c.day >= day_from)
    if day_to:
        stmt = stmt.where(t.c.day <= day_to)
    out = []
    with engine.connect() as conn:
        for r in conn.execute(stmt):
            row = {
                "facility": r.facility,
                "day": r.day,
                "rule": r.rule,
                "checked": r.checked,
                "failed": r.failed,
                "score": round(100.0 * (r.checked - r.failed) / r.checked, 2) if r.checked else None,
            }
            if r.rule.startswith("timeliness.") and r.checked:
                row["mean_delay_seconds"] = round(r.delay_sum / r.checked, 1)
            out.append(row)
    return out


def _merge_days(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum the days of each facility and rule; the day shown is the facility's first..last.

    The span is the facility's, not the rule's: rules that apply on different days (Patients
    one day, Observations the next) still give the facility one row over all days.
    """
    span: dict[str, tuple[str, str]] = {}
    for r in rows:
        first, last = span.get(r["facility"], (r["day"], r["day"]))
        span[r["facility"]] = (min(first, r["day"]), max(last, r["day"]))
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        m = merged.setdefault((r["facility"], r["rule"]), {**r, "checked": 0, "failed": 0})
        m["checked"] += r["checked"]
        m["failed"] += r["failed"]
        first, last = span[r["facility"]]
        m["day"] = first if first == last else f"{first}..{last}"
    for m in merged.values():
        m["score"] = round(100.0 * (m["checked"] - m["failed"]) / m["checked"], 2) if m["checked"] else None
    return list(merged.values())


def known_facilities(engine: Engine) -> list[str]:
    """The facility codes that have quality tallies, sorted."""
    ensure_schema(engine)
    t = quality_tally
    with engine.connect() as conn:
        return list(conn.execute(select(t.c.facility).distinct().order_by(t.c.facility)).scalars())


def latest_day(engine: Engine, facility: str | None = None) -> str | None:
    """The latest day with tallies (of ``facility``), None when there are none."""
    ensure_schema(engine)
    t = quality_tally
    stmt = select(func.max(t.c.day))
    if facility:
        stmt = stmt.where(t.c.facility == facility)
    with engine.connect() as conn:
        day = conn.execute(stmt).scalar()
    return None if day is None else str(day)


def facility_known(engine: Engine, facility: str) -> bool:
    """Whether ``facility`` has ever sent anything: a quality tally or an ingest batch.

    A facility whose batches were all quarantined or duplicates has batches but perhaps no tally:
    it is known, and its scores are an empty list rather than "unknown facility".
    """
    from rhip.ingest.batches import facility_has_batches

    ensure_schema(engine)
    t = quality_tally
    with engine.connect() as conn:
        if conn.execute(select(t.c.facility).where(t.c.facility == facility).limit(1)).first():
            return True
    return facility_has_batches(engine, facility)


def facility_scores(engine: Engine, *, by_day: bool = True, **filters: str | None) -> list[dict[str, Any]]:
    """One row per facility and day (or per facility over all days): overall and per-dimension score."""
    rows = rule_scores(engine, **filters)
    if not by_day:
        rows = _merge_days(rows)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["score"] is not None:
            groups.setdefault((row["facility"], row["day"]), []).append(row)
    out = []
    for (facility, day), rows in sorted(groups.items()):
        entry: dict[str, Any] = {
            "facility": facility,
            "day": day,
            "score": round(sum(r["score"] for r in rows) / len(rows), 2),
            "checks": sum(r["checked"] for r in rows),
        }
        for dim in DIMENSIONS:
            part = [r["score"] for r in rows if r["rule"].startswith(dim + ".")]
            entry[dim] = round(sum(part) / len(part), 2) if part else None
        out.append(entry)
    return out
