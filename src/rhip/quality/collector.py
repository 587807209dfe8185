"""Scores sources while they are ingested: an ingest observer that tallies rule outcomes.

The collector sees every stored record (its canonical resources) and every quarantined one, runs
the rule catalogue, and adds the counts to ``quality_tally`` once per ingest chunk with an
upsert that increments, so parallel writers and restarts never lose counts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.quality.rules import RULES, RuleContext
from rhip.quality.schema import ensure_schema, quality_tally

TIMELY_SECONDS = 24 * 3600
_PATIENT_CACHE = 200_000


class QualityCollector:
    """Ingest observer (``rhip.ingest.hooks.RecordObserver``) that tallies quality rules."""

    def __init__(self, engine: Engine, tz: str = "Asia/Shanghai") -> None:
        self.engine = engine
        ensure_schema(engine)
        self.zone = ZoneInfo(tz)
        self.ctx = RuleContext()
        self._tally: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self._by_type: dict[str, list[Any]] = defaultdict(list)
        for r in RULES.values():
            for t in r.resource_types:
                self._by_type[t].append(r)

    def _day(self, when: float) -> str:
        return datetime.fromtimestamp(when, self.zone).date().isoformat()

    def _count(self, facility: str, day: str, rule: str, ok: bool, delay: float = 0.0) -> None:
        entry = self._tally[(facility, day, rule)]
        entry[0] += 1
        if not ok:
            entry[1] += 1
        entry[2] += delay

    def on_stored(self, record: Record, mapped: Mapped, source: SourceInfo, arrival: float) -> None:
        """Run every applicable rule on the record's resources."""
        day = self._day(mapped.event_time if mapped.event_time is not None else arrival)
        fac = source.facility
        self._count(fac, day, "conformance.record-accepted", True)
        if mapped.event_time is not None:
            delay = max(arrival - mapped.event_time, 0.0)
            self._count(fac, day, "timeliness.arrival-24h", delay <= TIMELY_SECONDS, delay)
        self.ctx.now = arrival
        patients = self.ctx.patients
        for res in mapped.resources:
            rtype = res.get("resourceType", "")
            if rtype == "Patient":
                if len(patients) > _PATIENT_CACHE:
                    patients.clear()
                patients[f"Patient/{res.get('id')}"] = {
                    "gender": res.get("gender"),
                    "birthDate": res.get("birthDate"),
                }
            for r in self._by_type.get(rtype, ()):
                outcome = r.check(res, self.ctx)
                if outcome is not None:
                    self._count(fac, day, r.id, outcome)

    def on_quarantined(self, record: Record, reasons: list[dict[str, str]], source: SourceInfo) -> None:
        """A quarantined record fails the record-accepted rule."""
        self._count(source.facility, self._day(time.time()), "conformance.record-accepted", False)

    def on_chunk_end(self) -> None:
        """Add the pending counts to the table in a transaction of its own."""
        if self._tally:
            with self.engine.begin() as conn:
                self.flush_into(conn)

    def flush_into(self, conn: Any) -> None:
        """Add the pending counts inside the caller's transaction (the ingest chunk's own)."""
        if not self._tally:
            return
        rows = [
            {"facility": f, "day": d, "rule": r, "checked": int(v[0]), "failed": int(v[1]), "delay_sum": v[2]}
            for (f, d, r), v in self._tally.items()
        ]
        self._tally.clear()
        stmt: Any
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(quality_tally)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(quality_tally)
        stmt = stmt.on_conflict_do_update(
            index_elements=["facility", "day", "rule"],
            set_={
                "checked": quality_tally.c.checked + stmt.excluded.checked,
                "failed": quality_tally.c.failed + stmt.excluded.failed,
                "delay_sum": quality_tally.c.delay_sum + stmt.excluded.delay_sum,
            },
        )
        conn.execute(stmt, rows)
