"""A producer process that prepares records for the pipeline, so a bulk load uses two cores.

Reading, parsing, mapping, canonicalisation, validation and the store's per-resource preparation
(:func:`rhip.store.bulk.encode_resource`: field encryption of person types, the encoded body and
the index rows) depend on the record alone, so a second process can do them while the pipeline's
own process writes the previous chunk. The producer reads the records itself from a
:class:`RecordSource` (a picklable recipe such as "the lines of this NDJSON file") and hands back
one chunk of :class:`PreparedRecord` at a time through a bounded queue, which keeps memory flat
whatever the file size.

What crosses the pipe is kept to what the writer needs: when nothing in the writer looks at the
resources themselves (no patient sink, every observer ran here), a stored record travels as its
key, position and :class:`rhip.store.bulk.Encoded` resources (body bytes around the version
stamps, index tuples) in one ``marshal`` blob of plain tuples (:func:`to_wire`), not as nested
dicts or pickled objects; pickling and unpickling those dicts cost each side ≈ 30-45 µs per
resource. Person types are encrypted here with the keys of the store's data
directory (the same program and directory; key creation is safe across processes).

Everything that must stay ordered or transactional stays in the writing process: idempotency and
ordering checks, quality observers, the store's version look-ups and writes, delivery keys,
quarantine rows and batch counts. The producer commits nothing, so a crash of either process
loses nothing that was acknowledged (the writer commits a chunk before counting it), and a
producer whose parent died (``kill -9``) notices within a second and exits, also when it has
already queued its last chunk (a watchdog thread).
The child is forked when the writer runs a single thread on Linux (see :func:`start_method`),
otherwise started with ``spawn`` (no inherited threads or connections).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import marshal
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rhip.errors import RhipError
from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.ingest.repeats import ChunkRepeats
from rhip.store.bulk import Encoded

log = logging.getLogger(__name__)

#: Chunks prepared ahead of the writer (each holds ``chunk_size`` records): bounds the memory.
QUEUE_CHUNKS = 2
#: Seconds between checks that the other process is still alive while waiting on the queue.
POLL_SECONDS = 1.0
#: A put that waited longer than this found the queue full: the producer is ahead of the writer.
BLOCKED_SECONDS = 0.005
#: Collector thresholds while a bulk load runs: a chunk creates some hundred thousand short-lived,
#: acyclic objects, and the default (a collection every 700 allocations, a full one every 100
#: of those) spent a fifth of the writer's CPU time walking them (measured with ``gc`` stats).
BULK_GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Collect less often for the duration of a bulk load (restored afterwards)."""
    before = gc.get_threshold()
    gc.set_threshold(*BULK_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@dataclass(frozen=True)
class RecordSource:
    """A picklable recipe for records: ``function(*args)`` yields them (in whichever process runs it).

    Records given this way are a bulk load: the pipeline collects garbage less often while it runs
    them, and with ``parallel`` prepares them in a producer process.
    """

    function: Callable[..., Iterable[Record]]
    args: tuple[Any, ...] = ()
    parallel: bool = True

    def __iter__(self) -> Iterator[Record]:
        return iter(self.function(*self.args))


@dataclass
class PreparedRecord:
    """One record after mapping, canonicalisation and validation.

    ``mapped`` is None when the record is to be quarantined for ``reasons``; ``ready`` holds the
    store's prepared form (``rhip.store.bulk.Encoded`` or ``Ready``) of each mapped resource, or
    is empty when the writer must prepare them itself. ``key`` is the record's idempotency key
    (``record_key``). A compact record (see the module docstring) has no ``raw`` bytes and its
    ``mapped.resources`` are only ``{"resourceType", "id"}`` stubs naming what ``ready`` holds.
    """

    record: Record
    mapped: Any
    reasons: list[dict[str, str]]
    ready: list[Any] = field(default_factory=list)
    key: str = ""


@dataclass(frozen=True)
class ProducerJob:
    """Everything the producer needs, pickled into the child process."""

    source: SourceInfo
    records: RecordSource
    connector: str
    mapper: Callable[..., Any] | None
    tz: str
    translator: Any
    validator: Any
    options: dict[str, Any]
    chunk_size: int
    index_rows: bool  # False when the parent registered its own search parameters (the child has not)
    observers: tuple[Any, ...] = ()  # observer parts run here (``split()`` of the writer's observers)
    compact: bool = False  # the writer needs no resource dicts of stored records (see PreparedRecord)
    whole_types: tuple[str, ...] = ()  # ... except of these types (Patient, when patient sinks listen)
    # The store encrypts person types on write (see :func:`field_encryption`); by default assumed
    # so, and with no keys here the writer prepares person types itself: never plaintext stored.
    encrypts: bool = True
    field_keys: str | None = None  # ... with the keys of this data directory (None: the writer does it)


@dataclass
class PreparedChunk:
    """One chunk from the producer; ``observed``: each observer part's ``drain()``, or None when
    the parts did not see this chunk (records with event-time ordering: the writer observes them)."""

    records: list[PreparedRecord]
    observed: list[Any] | None


@dataclass
class Balance:
    """Which share of the records the producer computes the index rows of, chunk by chunk.

    Index rows are the largest per-resource step after mapping and validation; whichever process
    computes them gives the same rows. With everything in the producer the writer idled for
    two thirds of a 20,000-resource load (14.7 of 22 s), so the share follows who waits: the
    writer found the queue empty (it waits for the producer) → compute fewer here; the producer
    found the queue full (it waits for the writer) → compute more. Every record is encoded here
    (encrypted, its bytes); one whose rows are left to the writer travels without them and the
    writer computes them from the bytes (one ``orjson.loads``), so moving work either way costs
    little besides the work itself. (Records left to the writer used to travel as dicts, whose
    pickling both ways cost more than the encoding they moved.)
    """

    share: float = 0.5
    step: float = 0.1

    def update(self, writer_starved: bool, producer_blocked: bool) -> None:
        """Move the share one step towards the side that is idle."""
        if writer_starved and not producer_blocked:
            self.share = max(0.0, self.share - self.step)
        elif producer_blocked:
            self.share = min(1.0, self.share + self.step)


@dataclass
class ProducerStats:
    """How a load shared its work: seconds each side waited for the other, the producer's CPU."""

    producer_cpu: float = 0.0  # CPU seconds of the producer process (start-up included)
    producer_waited: float = 0.0  # the producer blocked on a full queue: the writer was slower
    writer_waited: float = 0.0  # the writer blocked on an empty queue: the producer was slower
    chunks: int = 0
    encoded_share: float = 0.0  # mean share of the records whose index rows the producer computed


def picklable(job: ProducerJob) -> bool:
    """True when the job can be sent to a child process (custom mappers or validators may not be)."""
    try:
        pickle.dumps(job)
    except Exception:  # lambdas, closures, open handles: run in-process instead
        return False
    return True


def prepare_chunk(
    job: ProducerJob, preparer: Any, chunk: list[Record], share: float = 1.0
) -> list[PreparedRecord]:
    """Map and prepare one chunk of records (what the producer process runs; also usable in-process).

    Every record's resources are encoded for the store here (encrypted, bytes); the index rows
    of the first ``share`` of the records too, the writer computes the others' from their bytes
    (see :class:`Balance`). With search parameters this process does not know
    (``job.index_rows`` false) the writer computes every record's rows.
    """
    from rhip.ingest.mappers import MAPPERS, MapContext, record_key

    fn = job.mapper or MAPPERS[job.connector]
    contexts: dict[SourceInfo, Any] = {}
    crypt = field_crypt(job)
    out: list[PreparedRecord] = []
    with_rows = round(share * len(chunk)) if job.index_rows else 0
    writer_encrypts = job.encrypts and job.field_keys is None
    for i, rec in enumerate(chunk):
        src = rec.source or job.source
        ctx = contexts.get(src)
        if ctx is None:
            ctx = contexts[src] = MapContext(src, job.tz, job.translator, job.options)
        key = record_key(rec, src)
        mapped, reasons = preparer.map_record(rec, key, ctx, fn)
        ready = _ready(mapped, crypt, writer_encrypts, rows=i < with_rows)
        out.append(PreparedRecord(rec, mapped, reasons, ready, key))
    return out


_CRYPT: dict[str | None, Any] = {}


def field_encryption(engine: Any) -> dict[str, Any]:
    """The ``encrypts`` and ``field_keys`` of a job writing into the store on ``engine``.

    Keys are named by their data directory only when the store keeps them in a key ring on disk,
    which the child rebuilds (:func:`field_crypt`); otherwise the writer encrypts person types.
    """
    from rhip.security.keys import KeyRing
    from rhip.store import fieldcrypt

    crypt = fieldcrypt.of(engine)
    keys = getattr(crypt.cipher, "keys", None)
    ring = keys if crypt.protect_writes and isinstance(keys, KeyRing) else None
    return {"encrypts": crypt.protect_writes, "field_keys": None if ring is None else str(ring.root.parent)}


def field_crypt(job: ProducerJob) -> Any:
    """The field encryption the writer's store applies, rebuilt here from its data directory.

    A store that does not encrypt leaves every resource as it is (``PLAIN``); one whose keys this
    process cannot rebuild has its person types prepared by the writer (``job.field_keys`` None).
    """
    from rhip.store import fieldcrypt

    if not job.encrypts or job.field_keys is None:
        return fieldcrypt.PLAIN
    crypt = _CRYPT.get(job.field_keys)
    if crypt is None:
        from pathlib import Path

        from rhip.security.crypto import FieldCipher
        from rhip.security.keys import KeyRing

        crypt = _CRYPT[job.field_keys] = fieldcrypt.FieldCrypt(FieldCipher(KeyRing(Path(job.field_keys))))
    return crypt


def _ready(mapped: Any, crypt: Any, writer_encrypts: bool, *, rows: bool = True) -> list[Any]:
    """Each resource encoded for the store, with its index rows when ``rows`` (else the writer
    computes them from the bytes); as ``Ready`` where it cannot be encoded (rows, when ``rows``,
    only of types the store does not encrypt).

    Empty when the writer must prepare the record itself (a bundle, a resource the store refuses).
    """
    from rhip.security.fields import PROTECTED_TYPES
    from rhip.store.bulk import encode_resource, prepare_resource

    if mapped is None or mapped.bundle is not None:
        return []
    out: list[Any] = []
    try:
        for res in mapped.resources:
            person = res.get("resourceType") in PROTECTED_TYPES
            encoded = None if person and writer_encrypts else encode_resource(res, crypt, rows=rows)
            out.append(encoded if encoded is not None else prepare_resource(res, rows=rows))
    except RhipError:  # the writer raises it again with its own context
        return []
    return out


def _compactable(prepared: PreparedRecord, whole_types: tuple[str, ...]) -> bool:
    """Whether the writer needs nothing of the record but its key, position and encoded resources."""
    mapped = prepared.mapped
    if mapped is None or mapped.ordered or mapped.merge is not None or not prepared.ready:
        return False
    return all(type(r) is Encoded and r.key[0] not in whole_types for r in prepared.ready)


def compacted(prepared: PreparedRecord, whole_types: tuple[str, ...] = ()) -> PreparedRecord:
    """The record as the writer needs it when it looks at no resource itself (see the module docstring).

    Only stored records whose resources are all encoded, none of ``whole_types``, with no
    event-time ordering and no merge, are compacted; any other record is returned as it is.
    """
    if not _compactable(prepared, whole_types):
        return prepared
    stubs = [{"resourceType": r.key[0], "id": r.key[1]} for r in prepared.ready]
    record = dataclasses.replace(prepared.record, raw=b"")
    return PreparedRecord(record, Mapped(stubs, prepared.mapped.event_time), [], prepared.ready, prepared.key)


def to_wire(chunk: PreparedChunk, compact: bool, whole_types: tuple[str, ...] = ()) -> bytes:
    """The chunk as the bytes that cross the pipe; ``compact``: compact its records (:func:`compacted`).

    Compact records travel as plain tuples in one ``marshal`` blob (slot, key, position, the
    record's own key and context, event time, each ``Encoded`` as a tuple) instead of pickled
    objects: ≈ 6 instead of 12 µs per record here, ≈ 5 instead of 9 in the writer, which builds
    the same objects :func:`compacted` gives. Any other record, and every record of a chunk
    holding a value marshal cannot carry (it takes exact built-in types only), is pickled.
    """
    flat: list[tuple[Any, ...]] = []
    others: list[tuple[int, PreparedRecord]] = []
    for i, p in enumerate(chunk.records):
        if compact and p.record.source is None and _compactable(p, whole_types):
            rec = p.record
            ready = [tuple(r) for r in p.ready]
            flat.append((i, p.key, rec.position, rec.key, rec.context, p.mapped.event_time, ready))
        else:
            others.append((i, p))
    try:
        blob = marshal.dumps(flat)
    except ValueError:
        blob = marshal.dumps([])
        others = [(i, compacted(p, whole_types) if compact else p) for i, p in enumerate(chunk.records)]
    return pickle.dumps((blob, others, chunk.observed), protocol=pickle.HIGHEST_PROTOCOL)


def from_wire(data: bytes) -> PreparedChunk:
    """A chunk from :func:`to_wire`'s bytes, with the collector paused.

    A chunk is tens of thousands of new, acyclic objects: collections triggered while they are
    created would walk them again and again (a third of the writer's time in measurements).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        blob, others, observed = pickle.loads(data)
        flat = marshal.loads(blob)
        records: list[Any] = [None] * (len(flat) + len(others))
        for i, prepared in others:
            records[i] = prepared
        for i, key, position, own_key, context, event_time, ready in flat:
            encoded = [Encoded(*r) for r in ready]
            stubs = [{"resourceType": r.key[0], "id": r.key[1]} for r in encoded]
            record = Record(b"", position, own_key, context)
            records[i] = PreparedRecord(record, Mapped(stubs, event_time), [], encoded, key)
        return PreparedChunk(records, observed)
    finally:
        if paused:
            gc.enable()


def _produce(job: ProducerJob, out: Any, parent: int) -> None:
    """Child process body: prepare every chunk and queue it; ``None`` ends, a string is an error."""
    from rhip.ingest import runner  # noqa: F401 (registers the built-in mappers in this process)
    from rhip.ingest.mappers import chunks
    from rhip.ingest.prepare import RecordPreparer

    stats = ProducerStats()
    threading.Thread(target=_exit_with, args=(parent,), name="rhip-producer-watchdog", daemon=True).start()
    try:
        preparer = RecordPreparer(job.translator, job.tz, job.validator)
        # the tables loaded so far (validator, pinyin, search parameters) live as long as the
        # process: keep the collector from walking them again and again
        gc.freeze()
        gc.set_threshold(*BULK_GC_THRESHOLDS)
        balance, shares = Balance(), 0.0
        for chunk in chunks(job.records, job.chunk_size):
            ready = _observe(job, prepare_chunk(job, preparer, chunk, balance.share))
            shares += balance.share
            # serialised here, not by the queue's feeder thread: one thread, and the writer can
            # time its decoding apart from its waiting
            data = to_wire(ready, job.compact and ready.observed is not None, job.whole_types)
            starved = _empty(out)
            waited = _put(out, data, parent)
            balance.update(starved, waited > BLOCKED_SECONDS)
            stats.producer_waited += waited
            stats.chunks += 1
        stats.producer_cpu = time.process_time()
        stats.encoded_share = shares / max(stats.chunks, 1)
        _put(out, stats, parent)
    except Exception as exc:  # reported to the writer, which raises it with this text
        log.exception("ingest producer failed")
        _put(out, f"{type(exc).__name__}: {str(exc)[:300]}", parent)


def _observe(job: ProducerJob, prepared: list[PreparedRecord]) -> PreparedChunk:
    """Show the chunk to the observer parts, as the writer would show it to the observers."""
    if not job.observers or any(p.mapped is not None and p.mapped.ordered for p in prepared):
        return PreparedChunk(prepared, None)
    arrival = time.time()
    repeats = ChunkRepeats()  # the writer counts these as duplicates: not scored either
    for p in prepared:
        src = p.record.source or job.source
        if repeats.repeats(p.key, p.mapped):
            continue
        for obs in job.observers:
            if p.mapped is None:
                obs.on_quarantined(p.record, p.reasons, src)
            else:
                obs.on_stored(p.record, p.mapped, src, arrival)
    return PreparedChunk(prepared, [obs.drain() for obs in job.observers])


def _exit_with(parent: int) -> None:
    """Exit as soon as the writer is gone, whatever the producer is doing.

    Once its last chunks are queued the producer returns, and the process then waits for the
    queue's feeder thread to hand them to the pipe; with the writer killed nobody reads them,
    so without this the process would wait for ever.
    """
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def _empty(out: Any) -> bool:
    """Whether the writer has taken every queued chunk (it is waiting, or about to)."""
    try:
        return bool(out.qsize() == 0)
    except NotImplementedError:  # macOS: no sem_getvalue; keep the share where it is
        return False


def _put(out: Any, item: Any, parent: int) -> float:
    """Queue ``item``; returns the seconds spent waiting for room (the writer was behind)."""
    started = time.perf_counter()
    while True:
        try:
            out.put(item, timeout=POLL_SECONDS)
            return time.perf_counter() - started
        except queue.Full:
            if os.getppid() != parent:  # the writer was killed: nothing will read this any more
                os._exit(1)


def start_method() -> str:
    """``fork`` when the writer runs no other thread (Linux), else ``spawn``.

    A spawned child imports the platform again and rebuilds the tables the writer already holds
    (validator, pinyin, search parameters): 0.5 CPU-s before its first record, ≈ 20-25 µs per
    resource of a 20,000-resource load in total. A forked child starts with the writer's modules
    and tables. Forking is only safe with no other thread (a lock another thread holds would stay
    locked in the child); the child never touches the inherited connections and leaves with
    ``os._exit`` (nothing of the writer's is closed or flushed from it).
    """
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


class Producer:
    """Runs :func:`_produce` in a child process; iterate it for prepared chunks in file order.

    Use as a context manager: leaving the block (normally or by an exception) stops the child.
    """

    def __init__(self, job: ProducerJob) -> None:
        self.stats = ProducerStats()
        ctx = (
            multiprocessing.get_context("fork")
            if start_method() == "fork"
            else multiprocessing.get_context("spawn")
        )
        self._queue = ctx.Queue(maxsize=QUEUE_CHUNKS)
        self._process = ctx.Process(
            target=_produce, args=(job, self._queue, os.getpid()), name="rhip-ingest-producer", daemon=True
        )

    @property
    def pid(self) -> int | None:
        """Process id of the producer (None before it starts)."""
        return self._process.pid

    def __enter__(self) -> Producer:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)
        self._queue.close()
        self._queue.cancel_join_thread()

    def __iter__(self) -> Iterator[PreparedChunk]:
        """Prepared chunks in order; at the end :attr:`stats` holds both sides' waiting times."""
        writer_waited = 0.0
        while True:
            started = time.perf_counter()
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                writer_waited += time.perf_counter() - started
                if self._process.is_alive():
                    continue
                try:  # it may have queued its last items just before it exited
                    item = self._queue.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    code = self._process.exitcode
                    raise RhipError(f"ingest producer process stopped (exit code {code})") from None
            writer_waited += time.perf_counter() - started
            if isinstance(item, ProducerStats):
                self.stats = dataclasses.replace(item, writer_waited=writer_waited)
                return
            if isinstance(item, str):
                raise RhipError(f"ingest producer failed: {item}")
            yield from_wire(item)
