"""The ingest pipeline: map, canonicalise, validate, de-duplicate, write with provenance, quarantine.

Every connector feeds :class:`Record` objects to :meth:`Pipeline.run`. Records are handled in
chunks: one idempotency look-up, then one transaction that writes the chunk's resources, their
Provenance (per record, or one per chunk for bulk loads), the delivered keys, quarantined records,
source event times, quality tallies and the batch counts.

Crash safety comes from that single transaction and from deterministic ids: a process killed at
any moment leaves each chunk either wholly committed or not at all, and a restart on the same input
re-processes what did not commit; re-writing an identical resource is a no-op in the store
("unchanged"), so nothing is lost, duplicated, or left without its Provenance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, update

from rhip.config import get_settings
from rhip.errors import RhipError, VersionConflict
from rhip.fhir.search_params import registry_version
from rhip.ingest.canonical import ConceptTranslator
from rhip.ingest.chunkwrite import (
    ChunkWrite,
    delivered_keys,
    prepare_chunk,
    quarantine_row,
    write_chunk_provenance,
    write_counts,
    write_deliveries,
    write_quarantine,
    write_resources,
    write_source_times,
)
from rhip.ingest.hooks import RecordObserver, notify_merge, notify_patients, patient_sinks
from rhip.ingest.mappers import MAPPERS, MapContext, MapFn, chunks, record_key
from rhip.ingest.model import BatchReport, Mapped, Record, SourceInfo
from rhip.ingest.ordering import superseded
from rhip.ingest.prepare import RecordPreparer
from rhip.ingest.provenance import build_provenance, now_instant, stable_id
from rhip.ingest.repeats import ChunkRepeats, repeated_line
from rhip.ingest.schema import (
    ensure_schema,
    ingest_batch,
)
from rhip.ingest.store_bundle import apply_bundle
from rhip.ingest.validate import ResourceValidator
from rhip.store import bulk
from rhip.store.engine import truncate_wal, write_transaction

if TYPE_CHECKING:
    from rhip.ingest.producer import PreparedRecord, ProducerStats

log = logging.getLogger(__name__)


@dataclass
class _Accepted:
    record: Record
    key: str
    mapped: Mapped
    slot: int
    ready: list[Any]  # rhip.store.bulk.Ready of the resources, when prepared by a producer
    targets: list[dict[str, Any]] | None = None  # what the store's bundle processing wrote


@dataclass
class _ChunkState:
    """A chunk's records as they are sorted: outcomes (by slot), accepted records, quarantine rows."""

    arrival: float  # when the chunk arrived: quarantine rows, delivery keys, the quality rules' "now"
    delivered: set[str]  # keys an earlier chunk or delivery committed (tracked sources)
    track: bool
    keep_quarantine: bool
    outcomes: list[tuple[str, list[dict[str, str]]]] = dataclasses.field(default_factory=list)
    accepted: list[_Accepted] = dataclasses.field(default_factory=list)
    quarantined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seen: set[str] = dataclasses.field(default_factory=set)
    bad: dict[str, int] = dataclasses.field(default_factory=dict)  # key quarantined in this chunk -> slot


def _all_unchanged(acc: _Accepted, unchanged: set[tuple[str, str]]) -> bool:
    """Whether the store found every resource of a record unchanged (nothing of it written)."""
    if acc.mapped.bundle is not None or not acc.mapped.resources:
        return False
    return all((r["resourceType"], r["id"]) in unchanged for r in acc.mapped.resources)


class Pipeline:
    """Runs records of one source through mapping, canonicalisation, validation and storage.

    Args:
        store: a ``rhip.store.Store`` (uses ``engine`` and ``bulk_write``).
        tz: zone for local timestamps (default: settings).
        translator: ConceptMap translator (default: ConceptMaps held in the store).
        validator: resource validator (default: the platform validator).
        observers: record observers (quality rules).
        chunk_size: records per write transaction.
        producer: let :meth:`run` prepare records in a second process when they come from a
            :class:`rhip.ingest.producer.RecordSource` (bulk files; see :mod:`rhip.ingest.producer`).
    """

    def __init__(
        self,
        store: Any,
        *,
        tz: str | None = None,
        translator: ConceptTranslator | None = None,
        validator: ResourceValidator | None = None,
        observers: Sequence[RecordObserver] = (),
        chunk_size: int = 1000,
        producer: bool = True,
    ) -> None:
        self.store = store
        self.engine: Engine = store.engine
        ensure_schema(self.engine)
        self.tz = tz or get_settings().timezone
        if translator is None:
            from rhip.ingest.conceptmaps import load_translator

            translator = load_translator(store)
        self.translator = translator
        self.validator = validator or ResourceValidator()
        self.preparer = RecordPreparer(self.translator, self.tz, self.validator)
        self.canonicaliser = self.preparer.canonicaliser
        self.observers = list(observers)
        self.chunk_size = chunk_size
        self.producer = producer
        #: How the last run with a producer process shared its work (None: it ran in this process).
        self.producer_stats: ProducerStats | None = None
        #: WAL autocheckpoint of the chunks' write transactions (0: SQLite's; see _bulk_load).
        self._wal_pages = 0

    # -- batches -------------------------------------------------------------------------------
    def open_batch(self, source: SourceInfo) -> BatchReport:
        """Start a batch row for ``source`` and return its (empty) report."""
        report = BatchReport(uuid.uuid4().hex, source)
        with self.engine.begin() as conn:
            conn.execute(
                insert(ingest_batch).values(
                    batch_id=report.batch_id,
                    facility=source.facility,
                    connector=source.connector,
                    location=source.location[:512],
                    started=time.time(),
                    received=0,
                    stored=0,
                    quarantined=0,
                    duplicates=0,
                    stale=0,
                )
            )
        return report

    def _save_counts(self, conn: Any, report: BatchReport, finished: bool = False) -> None:
        values: dict[str, Any] = {
            "received": report.received,
            "stored": report.stored,
            "quarantined": report.quarantined,
            "duplicates": report.duplicates,
            "stale": report.stale,
        }
        if finished:
            values["finished"] = time.time()
            match = ingest_batch.c.batch_id == report.batch_id
            conn.execute(update(ingest_batch).where(match).values(**values))
            return
        # once per chunk: on the driver's cursor (SQLAlchemy's statement building and parameter
        # processing cost ≈ 0.5 ms a chunk, more than the update itself; docs/benchmarks.md)
        write_counts(conn, (*values.values(), report.batch_id))

    def close_batch(self, report: BatchReport) -> None:
        """Mark the batch finished with its final counts."""
        with self.engine.begin() as conn:
            self._save_counts(conn, report, finished=True)

    def run(
        self,
        source: SourceInfo,
        records: Iterable[Record],
        mapper: MapFn | None = None,
        *,
        track: bool = True,
        per_record_provenance: bool = True,
        options: dict[str, Any] | None = None,
        report: BatchReport | None = None,
    ) -> BatchReport:
        """Ingest ``records`` from ``source`` and return the reconciled counts.

        ``track=True`` records each record's key so re-delivery is counted as a duplicate (messages,
        rows); ``track=False`` relies on deterministic ids and the store's "unchanged" outcome
        (bulk files, one resource per record). ``per_record_provenance=False`` writes one Provenance
        per chunk (high-volume files and streams) instead of one per record (messages).
        """
        fn = mapper or MAPPERS.get(source.connector)
        if fn is None:
            raise RhipError(f"no mapper registered for connector '{source.connector}'")
        own = report is None
        rep = report or self.open_batch(source)
        ctx = MapContext(source, self.tz, self.translator, options or {})
        ahead = (
            [o for o in self.observers if hasattr(o, "split") and hasattr(o, "merge")] if not track else []
        )
        job = self._producer_job(ctx, records, fn, ahead)
        if job is not None:
            self._run_produced(job, rep, ctx, fn, ahead, track=track, per_record=per_record_provenance)
        else:
            from rhip.ingest.producer import RecordSource

            with self._bulk_load() if isinstance(records, RecordSource) else contextlib.nullcontext():
                for chunk in chunks(records, self.chunk_size):
                    self.process_chunk(
                        rep, ctx, chunk, fn, track=track, per_record_provenance=per_record_provenance
                    )
        if own:
            self.close_batch(rep)
        return rep

    def _run_produced(
        self,
        job: Any,
        report: BatchReport,
        ctx: MapContext,
        fn: MapFn,
        ahead: list[Any],
        *,
        track: bool,
        per_record: bool,
    ) -> None:
        """Write the chunks a producer process prepares (and the observers ``ahead`` scored there)."""
        from rhip.ingest.producer import Producer

        with self._bulk_load(), Producer(job) as produced:
            self.producer_stats = None
            for ready in produced:
                for obs, part in zip(ahead, ready.observed or (), strict=False):
                    obs.merge(part)
                self.process_chunk(
                    report,
                    ctx,
                    [p.record for p in ready.records],
                    fn,
                    track=track,
                    per_record_provenance=per_record,
                    prepared=ready.records,
                    observed_by=ahead if ready.observed is not None else (),
                )
            self.producer_stats = stats = produced.stats
            log.info(
                "ingest producer: %d chunks, producer %.1f CPU-s, waited %.1f s; writer waited %.1f s",
                stats.chunks,
                stats.producer_cpu,
                stats.producer_waited,
                stats.writer_waited,
            )

    @contextlib.contextmanager
    def _bulk_load(self) -> Iterator[None]:
        """While a bulk load runs: fewer collections and (SQLite) fewer WAL checkpoints.

        The chunks' write transactions checkpoint every ``RHIP_INGEST_WAL_AUTOCHECKPOINT`` pages
        instead of SQLite's 1,000 (each checkpoint rewrites the hot index pages to the database
        file); afterwards the grown WAL is checkpointed and truncated so the file does not stay big.
        """
        from rhip.ingest.producer import bulk_gc

        self._wal_pages = get_settings().ingest_wal_autocheckpoint
        try:
            with bulk_gc():
                yield
        finally:
            self._wal_pages = 0
            truncate_wal(self.engine)

    def _producer_job(self, ctx: MapContext, records: Iterable[Record], fn: MapFn, ahead: list[Any]) -> Any:
        """The job for a producer process, or None when records are prepared in this process.

        A producer needs records it can read itself (a RecordSource), a second core, and a
        mapper and validator that can be pickled. Index rows are left to the writer when this
        process has registered search parameters of its own (the child would not know them).
        Observers in ``ahead`` (with ``split``/``merge``, e.g. the quality collector) run their
        part in the producer; only untracked loads qualify, where every mapped record is stored.
        When every observer runs there, stored records come back compact (encoded, no dicts),
        except Patients while patient sinks listen; person types are encrypted in the producer
        when the store's keys come from a data directory it can open too.
        """
        from rhip.ingest.producer import ProducerJob, RecordSource, field_encryption, picklable

        if not isinstance(records, RecordSource) or not (self.producer and records.parallel):
            return None
        if (os.cpu_count() or 1) < 2:
            return None
        job = ProducerJob(
            source=ctx.source,
            records=records,
            connector=ctx.source.connector,
            mapper=fn,
            tz=self.tz,
            translator=self.translator,
            validator=self.validator,
            options=ctx.options,
            chunk_size=self.chunk_size,
            index_rows=registry_version() == 0,
            observers=tuple(obs.split() for obs in ahead),
            compact=len(ahead) == len(self.observers),
            whole_types=("Patient",) if patient_sinks() else (),
            **field_encryption(self.engine),
        )
        return job if picklable(job) else None

    # -- one chunk -----------------------------------------------------------------------------
    def process_chunk(
        self,
        report: BatchReport,
        ctx: MapContext,
        chunk: list[Record],
        mapper: MapFn,
        *,
        track: bool,
        per_record_provenance: bool = True,
        keep_quarantine: bool = True,
        prepared: Sequence[PreparedRecord] | None = None,
        observed_by: Sequence[Any] = (),
        written: list[int] | None = None,
    ) -> list[tuple[str, list[dict[str, str]]]]:
        """Process one chunk; returns each record's (outcome, quarantine reasons).

        The outcome is ``stored``, ``duplicate``, ``quarantined`` or ``stale``; a duplicate of a
        record that is quarantined (an identical record earlier in the chunk, in an earlier chunk or
        delivery) carries that record's reasons, so a resent bad message is answered as one, while
        the quarantine keeps one entry and the batch counts it once. ``prepared`` holds
        the chunk's records already mapped by a producer process (same order as ``chunk``);
        ``observed_by`` names the observers whose producer part has already seen them. ``written``,
        when given, is filled with the number of resources each record had created or updated, for
        callers that report per sender (the MLLP listener's per-facility counts).

        In steps: sort the records into duplicates, quarantined and accepted ones; set aside the
        accepted ones older than what the store applied (stale); commit the others with their
        bookkeeping rows; settle what only the commit tells (quarantine entries that existed
        already); then hand the stored records to the hooks.
        """
        observers = [o for o in self.observers if all(o is not done for done in observed_by)]
        source = ctx.source
        keys = [p.key for p in prepared] if prepared else [record_key(r, r.source or source) for r in chunk]
        delivered = self._delivered(keys) if track else set()
        state = _ChunkState(time.time(), delivered, track, keep_quarantine)
        self._sort(report, ctx, chunk, keys, mapper, prepared, state, observers)
        fresh = self._without_stale(report, state)
        result, known = self._commit(
            report,
            source,
            fresh,
            state.quarantined,
            track=track,
            per_record=per_record_provenance,
            now=state.arrival,
            score=self._scorer(observers, observed_by, fresh, source, state.arrival, track=track),
        )
        for key in known:  # quarantined before (an earlier chunk or delivery): a duplicate
            state.outcomes[state.bad[key]] = ("duplicate", state.outcomes[state.bad[key]][1])
        if written is not None:
            written[:] = _written_per_record(len(chunk), fresh, result.unchanged_keys)
        self._after_commit(source, fresh)
        return state.outcomes

    def _sort(
        self,
        report: BatchReport,
        ctx: MapContext,
        chunk: list[Record],
        keys: list[str],
        mapper: MapFn,
        prepared: Sequence[PreparedRecord] | None,
        state: _ChunkState,
        observers: list[Any],
    ) -> None:
        """Sort the chunk's records, in order, into duplicates, quarantined and accepted ones.

        A record is a duplicate when its key was delivered before or (tracked) seen earlier in the
        chunk, or when it repeats an identical record of the chunk (:mod:`rhip.ingest.repeats`,
        which also covers untracked loads). Otherwise it is mapped (or taken as the producer
        prepared it); a bundle needing server logic is applied by the store here.
        """
        contexts = self._contexts(ctx, chunk)
        repeats = ChunkRepeats()
        outcomes, seen, bad = state.outcomes, state.seen, state.bad
        for i, (rec, key) in enumerate(zip(chunk, keys, strict=True)):
            report.received += 1
            if key in state.delivered or (state.track and key in seen):
                report.duplicates += 1
                outcomes.append(("duplicate", outcomes[bad[key]][1] if key in bad else []))
                continue
            seen.add(key)
            src = rec.source or ctx.source
            if prepared is None:
                mapped, reasons = self.preparer.map_record(rec, key, contexts[src], mapper)
                ready: list[Any] = []
            else:
                mapped, reasons, ready = prepared[i].mapped, prepared[i].reasons, prepared[i].ready
            targets = None
            if mapped is not None and mapped.bundle is not None:
                targets, reasons = apply_bundle(self.store, mapped.bundle, mapped.entry)
                mapped = mapped if targets is not None else None
            if repeats.repeats(key, mapped):  # an identical record of this chunk counts, not this one
                report.duplicates += 1
                outcomes.append(("duplicate", reasons))
            elif mapped is None:
                self._reject(report, state, rec, key, src, reasons, observers)
            else:
                state.accepted.append(_Accepted(rec, key, mapped, len(outcomes), ready, targets))
                outcomes.append(("stored", []))

    @staticmethod
    def _contexts(ctx: MapContext, chunk: list[Record]) -> dict[SourceInfo, MapContext]:
        """The map context of each source in the chunk (records may name their own source)."""
        contexts: dict[SourceInfo, MapContext] = {ctx.source: ctx}
        for r in chunk:
            if r.source is not None and r.source not in contexts:
                contexts[r.source] = MapContext(r.source, ctx.tz, ctx.translator, ctx.options)
        return contexts

    @staticmethod
    def _reject(
        report: BatchReport,
        state: _ChunkState,
        rec: Record,
        key: str,
        src: SourceInfo,
        reasons: list[dict[str, str]],
        observers: list[Any],
    ) -> None:
        """Count a record that cannot be used as quarantined and keep its entry's row.

        Whether an entry for its key exists already (an earlier chunk or delivery) is known only in
        the chunk's transaction, which then turns it into a duplicate (:meth:`_finish_chunk`).
        """
        report.quarantined += 1
        state.bad[key] = len(state.outcomes)
        state.outcomes.append(("quarantined", reasons))
        if state.keep_quarantine:
            state.quarantined.append(quarantine_row(report.batch_id, rec, key, src, reasons, state.arrival))
        for obs in observers:
            obs.on_quarantined(rec, reasons, src)

    def _without_stale(self, report: BatchReport, state: _ChunkState) -> list[_Accepted]:
        """The accepted records minus those whose every resource the store has a newer source
        version of (``stale``, see :mod:`rhip.ingest.ordering`)."""
        accepted = state.accepted
        stale = superseded(self.engine, [a.mapped for a in accepted])
        for n in stale:
            report.stale += 1
            state.outcomes[accepted[n].slot] = ("stale", [])
        return [a for n, a in enumerate(accepted) if n not in stale]

    @staticmethod
    def _scorer(
        observers: list[Any],
        ahead: Sequence[Any],
        fresh: list[_Accepted],
        source: SourceInfo,
        arrival: float,
        *,
        track: bool,
    ) -> Callable[[set[tuple[str, str]]], None]:
        """What shows the observers the chunk's stored records, once the store's pre-read is known.

        Untracked, a record the store finds unchanged (a re-delivered line, which the batch counts
        as a duplicate) is not a new record, so it is not scored; observers that scored the chunk
        ``ahead`` in a producer process take back what they counted for it (``forget_stored``).
        """

        def score(unchanged: set[tuple[str, str]]) -> None:
            unchanged = unchanged if not track else set()
            repeated = []
            for acc in fresh:
                if unchanged and _all_unchanged(acc, unchanged):
                    repeated.append(acc.record.position)
                    continue
                for obs in observers:
                    obs.on_stored(acc.record, acc.mapped, acc.record.source or source, arrival)
            for obs in ahead if repeated else ():
                forget = getattr(obs, "forget_stored", None)
                if forget is not None:
                    forget(repeated)

        return score

    def _after_commit(self, source: SourceInfo, fresh: list[_Accepted]) -> None:
        """Hand the committed records to the patient sinks and let observers flush their counts.

        With no sink registered nobody is told anything, so the chunk's records are not walked
        (three passes over them cost a bulk load's writer ≈ 2 µs a record).
        """
        for src in {a.record.source or source for a in fresh} if patient_sinks() else ():
            self._notify(src, [a for a in fresh if (a.record.source or source) == src])
        for obs in self.observers:
            flush = getattr(obs, "on_chunk_end", None)
            if flush is not None:
                flush()

    def _delivered(self, keys: list[str]) -> set[str]:
        return delivered_keys(self.engine, keys) if keys else set()

    def _plan(self, source: SourceInfo, fresh: list[_Accepted], per_record: bool, track: bool) -> ChunkWrite:
        """Everything the chunk's transaction writes, pre-read and prepared before it opens.

        A bundle that needs server logic was already processed by the store, in a transaction of
        its own (:func:`rhip.ingest.store_bundle.apply_bundle`; see docs/ingest.md: its Provenance
        and delivery key commit with the chunk, so a crash in between re-delivers the bundle on
        restart). Untracked, a resource the store holds from another line of the same file, with
        the same content, is unchanged (:func:`rhip.ingest.repeats.repeated_line`).
        """
        targets: dict[int, list[dict[str, Any]]] = {}
        latest: dict[tuple[str, str], Any] = {}  # resource, or its bulk.Ready from a producer
        for acc in fresh:
            if acc.mapped.bundle is not None:
                targets[id(acc)] = acc.targets or []
                continue
            targets[id(acc)] = acc.mapped.resources
            ready = {r.key: r for r in acc.ready}
            for res in acc.mapped.resources:
                key = (res["resourceType"], res["id"])
                latest[key] = ready.get(key, res)
        recorded = now_instant()
        provs: list[dict[str, Any]] = []
        chunk_prov: list[dict[str, Any]] = []
        if per_record:
            provs = [
                build_provenance(
                    stable_id("prov", a.key),
                    targets[id(a)],
                    a.record.source or source,
                    [f"{(a.record.source or source).location}#{a.record.position}"],
                    recorded,
                )
                for a in fresh
                if targets[id(a)]
            ]
        else:
            first, last = fresh[0], fresh[-1]
            every = [r for a in fresh for r in targets[id(a)]]
            if every:
                chunk_prov = [
                    build_provenance(
                        stable_id("prov", first.key, last.key, str(len(fresh))),
                        every,
                        source,
                        [f"{source.location}#{first.record.position}..{last.record.position}"],
                        recorded,
                    )
                ]
        alike = None if track else repeated_line
        return prepare_chunk(self.engine, [*latest.values(), *provs], len(provs), chunk_prov, alike)

    def _commit(
        self,
        report: BatchReport,
        source: SourceInfo,
        fresh: list[_Accepted],
        quarantined: list[dict[str, Any]],
        *,
        track: bool,
        per_record: bool,
        now: float,
        score: Callable[[set[tuple[str, str]]], None] = lambda unchanged: None,
    ) -> tuple[bulk.BulkWriteResult, set[str]]:
        """Commit the chunk in one transaction: resources, their Provenance and the bookkeeping rows.

        A process killed at any moment therefore leaves either all of a chunk or none of it; the
        restart re-processes a chunk that did not commit. A transaction that lost a race with a
        concurrent writer is retried whole, with the report's counts put back first. ``score`` is
        called once, before the transaction, with the resources the pre-read found unchanged (what
        the write will count as unchanged unless a concurrent writer changes them in between).
        Returns the write's result and the keys of ``quarantined`` records that already had an entry.
        """
        plan = self._plan(source, fresh, per_record, track) if fresh else ChunkWrite([], 0, [])
        # outside the write transaction: the rules' work does not hold the database's write lock
        score({item.key for batch in plan.batches for item in batch if item.unchanged})
        before = dataclasses.replace(report)
        for attempt in range(1, bulk.BATCH_ATTEMPTS + 1):
            try:
                with write_transaction(self.engine, wal_pages=self._wal_pages) as conn:
                    result = self._write(conn, report, plan, fresh, track=track, lock=attempt > 1)
                    known = self._finish_chunk(conn, report, fresh, quarantined, track, now)
                return result, known
            except VersionConflict:
                for f in dataclasses.fields(BatchReport):
                    setattr(report, f.name, getattr(before, f.name))
                if attempt == bulk.BATCH_ATTEMPTS:
                    raise
                log.info("ingest chunk lost a race with a concurrent writer; retrying (%d)", attempt)
                time.sleep(random.uniform(0, 0.02 * attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _write(
        self,
        conn: Connection,
        report: BatchReport,
        plan: ChunkWrite,
        fresh: list[_Accepted],
        *,
        track: bool,
        lock: bool,
    ) -> bulk.BulkWriteResult:
        """Write the chunk's resources and Provenance in the caller's transaction; count them."""
        result = write_resources(conn, plan, lock=lock)
        # every Provenance is created or updated (its recorded time changes); count only resources
        report.resources_written += max(result.created + result.updated - plan.provenances, 0)
        if track:
            report.stored += len(fresh)
        else:
            # one resource per record: the store's unchanged count is the re-delivered lines
            report.stored += len(fresh) - result.unchanged
            report.duplicates += result.unchanged
        if result.created + result.updated or track:
            write_chunk_provenance(conn, plan, lock=lock)
        return result

    def _finish_chunk(
        self,
        conn: Connection,
        report: BatchReport,
        fresh: list[_Accepted],
        quarantined: list[dict[str, Any]],
        track: bool,
        now: float,
    ) -> set[str]:
        """The chunk's delivery keys, source times, quarantine rows, counts and quality tallies.

        Returns the keys of quarantined records that already had an entry (identical records of
        an earlier chunk or delivery): they count as duplicates, so a batch's ``quarantined`` is
        the number of its quarantine entries.
        """
        if track and fresh:
            write_deliveries(conn, [(a.key, report.batch_id, now) for a in fresh])
        times = {
            (r["resourceType"], r["id"]): t
            for a in fresh
            if a.mapped.ordered
            for r, t in zip(a.mapped.resources, a.mapped.source_times(), strict=True)
            if t is not None
        }
        if times:
            write_source_times(conn, [(k[0], k[1], t) for k, t in times.items()])
        known = write_quarantine(conn, quarantined) if quarantined else set()
        report.quarantined -= len(known)
        report.duplicates += len(known)
        if known:  # observers were told of them as quarantined: not new records after all
            for obs in self.observers:
                take_back = getattr(obs, "on_repeated_quarantine", None)
                if take_back is not None:
                    for row in quarantined:
                        if row["key"] in known:
                            take_back(row["facility"])
        self._save_counts(conn, report)
        for obs in self.observers:
            flush_into = getattr(obs, "flush_into", None)
            if flush_into is not None:
                flush_into(conn)  # quality counts commit with the chunk they describe
        return known

    def _notify(self, source: SourceInfo, fresh: list[_Accepted]) -> None:
        patients = [r for a in fresh for r in a.mapped.resources if r.get("resourceType") == "Patient"]
        if patients:
            notify_patients(self.store, patients, source)
        for acc in fresh:
            if acc.mapped.merge is not None:
                notify_merge(self.store, acc.mapped.merge[0], acc.mapped.merge[1], source)


def _written_per_record(slots: int, fresh: list[_Accepted], unchanged: set[bulk.Key]) -> list[int]:
    """The resources each record of a chunk had created or updated.

    A resource carried by several records of the chunk is written once, with the last record's
    content, so it is credited to that record; one found unchanged is credited to none. Records
    whose bundle the store processed on its own are not credited.
    """
    last_carrier: dict[bulk.Key, int] = {}
    for acc in fresh:
        for res in acc.mapped.resources:
            last_carrier[(res["resourceType"], res["id"])] = acc.slot
    counts = [0] * slots
    for key, slot in last_carrier.items():
        if key not in unchanged:
            counts[slot] += 1
    return counts
