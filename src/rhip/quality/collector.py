"""Scores sources while they are ingested: an ingest observer that tallies rule outcomes.

The collector sees every stored record (its canonical resources) and every quarantined one, runs
the rule catalogue, and adds the counts to ``quality_tally`` once per ingest chunk with an
upsert that increments, so parallel writers and restarts never lose counts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.quality.rules import RULES, Check, RuleContext
from rhip.quality.schema import ensure_schema
from rhip.store import fastinsert

TIMELY_SECONDS = 24 * 3600
_PATIENT_CACHE = 200_000
#: Adds a chunk's counts to a (facility, day, rule) row, creating it when it is the first.
_ADD_TALLY = (
    "INSERT INTO quality_tally (facility, day, rule, checked, failed, delay_sum) "
    "VALUES ({m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT (facility, day, rule) DO UPDATE SET "
    "checked = quality_tally.checked + excluded.checked, failed = quality_tally.failed + excluded.failed, "
    "delay_sum = quality_tally.delay_sum + excluded.delay_sum"
)


TallyKey = tuple[str, str, str]  # facility, day, rule
#: What one record added: (key, checked, failed, delay sum) per tally it touched.
Outcome = tuple[tuple[TallyKey, float, float, float], ...]
#: A producer part's drained counts: tallies, patients seen, each stored record's position ->
#: index of its outcome, the distinct outcomes.
Drained = tuple[dict[TallyKey, list[float]], dict[str, Any], dict[str, int], list[Outcome]]


def _zero() -> list[float]:
    return [0, 0, 0.0]


class _Tallies:
    """The rule runs and counts, without a database: shared by the collector and its producer part."""

    def __init__(self, tz: str) -> None:
        self.zone = ZoneInfo(tz)
        self.ctx = RuleContext()
        self._tally: dict[tuple[str, str, str], list[float]] = defaultdict(_zero)
        #: resource type -> (rule id, check) of every rule that applies to it
        self._by_type: dict[str, list[tuple[str, Check]]] = defaultdict(list)
        for r in RULES.values():
            for t in r.resource_types:
                self._by_type[t].append((r.id, r.check))
        self._last_day: tuple[float, str] | None = None

    def _day(self, when: float) -> str:
        """The local date of ``when``; a chunk's records share their arrival time, so the last is kept."""
        last = self._last_day
        if last is not None and last[0] == when:
            return last[1]
        day = datetime.fromtimestamp(when, self.zone).date().isoformat()
        self._last_day = (when, day)
        return day

    def _count(self, facility: str, day: str, rule: str, ok: bool, delay: float = 0.0) -> None:
        entry = self._tally[(facility, day, rule)]
        entry[0] += 1
        if not ok:
            entry[1] += 1
        entry[2] += delay

    def _patient_seen(self, ref: str, summary: dict[str, Any]) -> None:
        patients = self.ctx.patients
        if len(patients) > _PATIENT_CACHE:
            patients.clear()
        patients[ref] = summary

    def on_stored(self, record: Record, mapped: Mapped, source: SourceInfo, arrival: float) -> None:
        """Run every applicable rule on the record's resources."""
        day = self._day(mapped.event_time if mapped.event_time is not None else arrival)
        fac = source.facility
        self._count(fac, day, "conformance.record-accepted", True)
        if mapped.event_time is not None:
            delay = max(arrival - mapped.event_time, 0.0)
            self._count(fac, day, "timeliness.arrival-24h", delay <= TIMELY_SECONDS, delay)
        ctx = self.ctx
        ctx.now = arrival
        tally = self._tally
        for res in mapped.resources:
            rtype = res.get("resourceType", "")
            if rtype == "Patient":
                summary = {"gender": res.get("gender"), "birthDate": res.get("birthDate")}
                self._patient_seen(f"Patient/{res.get('id')}", summary)
            for rule_id, check in self._by_type.get(rtype, ()):
                outcome = check(res, ctx)
                # what _count does, inline: this runs for every rule of every resource
                if outcome is not None:
                    entry = tally[(fac, day, rule_id)]
                    entry[0] += 1
                    if not outcome:
                        entry[1] += 1

    def on_quarantined(self, record: Record, reasons: list[dict[str, str]], source: SourceInfo) -> None:
        """A quarantined record fails the record-accepted rule."""
        self._count(source.facility, self._day(time.time()), "conformance.record-accepted", False)

    def on_repeated_quarantine(self, facility: str) -> None:
        """Take back an :meth:`on_quarantined` of this chunk: the record repeats one quarantined
        before (an earlier chunk or delivery), which the batch counts as a duplicate."""
        entry = self._tally[(facility, self._day(time.time()), "conformance.record-accepted")]
        entry[0] -= 1
        entry[1] -= 1


class QualityCollector(_Tallies):
    """Ingest observer (``rhip.ingest.hooks.RecordObserver``) that tallies quality rules.

    A bulk load whose records are prepared by a producer process runs the rules there too:
    :meth:`split` gives the producer its part, whose counts come back with every chunk and are
    added by :meth:`merge` before the chunk's transaction writes them.
    """

    def __init__(self, engine: Engine, tz: str = "Asia/Shanghai") -> None:
        super().__init__(tz)
        self.engine = engine
        #: what each record of the last merged part added (see merge, forget_stored)
        self._merged: tuple[dict[str, int], list[Outcome]] = ({}, [])
        ensure_schema(engine)

    def split(self) -> QualityPart:
        """A database-free copy for a producer process (with the patients seen so far)."""
        return QualityPart(self.zone.key, dict(self.ctx.patients))

    def merge(self, drained: Drained) -> None:
        """Add what a :class:`QualityPart` counted (and the patients it saw) to this collector.

        What each record added is kept until the next merge, so that :meth:`forget_stored` can
        take back the records the store then finds unchanged.
        """
        tally, patients, by_position, outcomes = drained
        for key, (checked, failed, delay) in tally.items():
            entry = self._tally[key]
            entry[0] += checked
            entry[1] += failed
            entry[2] += delay
        for ref, summary in patients.items():
            self._patient_seen(ref, summary)
        self._merged = (by_position, outcomes)

    def forget_stored(self, positions: Iterable[str]) -> None:
        """Take back what the last merged part counted for the records at ``positions``.

        The producer scores every record it maps; the writer learns only later that the store
        already held some of them unchanged (a re-delivered line, a duplicate), which the rules
        must not count again, as they are not in one process.
        """
        by_position, outcomes = self._merged
        for position in positions:
            found = by_position.get(position)
            if found is None:
                continue
            for key, checked, failed, delay in outcomes[found]:
                entry = self._tally[key]
                entry[0] -= checked
                entry[1] -= failed
                entry[2] -= delay

    def on_chunk_end(self) -> None:
        """Add the pending counts to the table in a transaction of its own."""
        if self._tally:
            with self.engine.begin() as conn:
                self.flush_into(conn)

    def flush_into(self, conn: Any) -> None:
        """Add the pending counts inside the caller's transaction (the ingest chunk's own)."""
        if not self._tally:
            return
        # counts taken back to nothing (records found duplicates) leave the table as it was
        rows = [(f, d, r, int(v[0]), int(v[1]), v[2]) for (f, d, r), v in self._tally.items() if any(v)]
        self._tally.clear()
        if not rows:
            return
        # tuples to the driver's executemany: SQLAlchemy's per-row parameter processing cost more
        # than the database's work on these rows, once per ingest chunk
        fastinsert.update_rows(conn, _ADD_TALLY.format(m=fastinsert.placeholder(conn)), rows)


class QualityPart(_Tallies):
    """The rules of a :class:`QualityCollector` run in a producer process; see ``split``/``merge``."""

    def __init__(self, tz: str, patients: dict[str, Any]) -> None:
        super().__init__(tz)
        self.ctx.patients = patients
        self._new_patients: dict[str, Any] = {}
        self._by_position: dict[str, int] = {}
        self._outcome_ids: dict[Outcome, int] = {}
        self._records_with: list[int] = []  # records per outcome, by its index
        self._own: defaultdict[TallyKey, list[float]] = defaultdict(_zero)  # one record's counts

    def _patient_seen(self, ref: str, summary: dict[str, Any]) -> None:
        super()._patient_seen(ref, summary)
        self._new_patients[ref] = summary

    def on_stored(self, record: Record, mapped: Mapped, source: SourceInfo, arrival: float) -> None:
        """Run the rules and keep what this record added, by its position (see ``drain``).

        Records of one type mostly add the same counts, so each distinct outcome is kept once
        with the number of records that had it; the chunk's counts are summed from them on drain.
        """
        chunk, own = self._tally, self._own
        self._tally = own
        try:
            super().on_stored(record, mapped, source, arrival)
        finally:
            self._tally = chunk
        # the record's own counts: the entries it touched (each counted a check), then zeroed
        # again (kept, not cleared: the next record mostly touches the same ones)
        outcome = tuple([(key, v[0], v[1], v[2]) for key, v in own.items() if v[0]])
        for v in own.values():
            v[0] = v[1] = 0
            v[2] = 0.0
        found = self._outcome_ids.get(outcome)
        if found is None:
            found = self._outcome_ids[outcome] = len(self._records_with)
            self._records_with.append(0)
        self._records_with[found] += 1
        self._by_position[record.position] = found

    def drain(self) -> Drained:
        """The counts and patients since the last drain, for :meth:`QualityCollector.merge`, with
        what each stored record added (its position -> one of the distinct outcomes)."""
        chunk = self._tally
        for outcome, records in zip(self._outcome_ids, self._records_with, strict=True):
            for key, checked, failed, delay in outcome:
                entry = chunk[key]
                entry[0] += records * checked
                entry[1] += records * failed
                entry[2] += records * delay
        out = (dict(chunk), self._new_patients, self._by_position, list(self._outcome_ids))
        chunk.clear()
        self._new_patients = {}
        self._by_position = {}
        self._outcome_ids = {}
        self._records_with = []
        return out
