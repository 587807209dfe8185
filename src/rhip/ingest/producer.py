"""A producer process that prepares records for the pipeline, so a bulk load uses two cores.

Reading, parsing, mapping, canonicalisation, validation and the store's per-resource preparation
(:func:`rhip.store.bulk.prepare_resource`: the index rows) depend on the record alone, so a second
process can do them while the pipeline's own process writes the previous chunk. The producer reads
the records itself from a :class:`RecordSource` (a picklable recipe such as "the lines of this
NDJSON file") and hands back one chunk of :class:`PreparedRecord` at a time through a bounded
queue, which keeps memory flat whatever the file size.

Everything that must stay ordered or transactional stays in the writing process: idempotency and
ordering checks, quality observers, the store's version look-ups and writes, delivery keys,
quarantine rows and batch counts. The producer commits nothing, so a crash of either process
loses nothing that was acknowledged (the writer commits a chunk before counting it), and a
producer whose parent died (``kill -9``) notices within a second and exits.
The child is started with ``spawn`` (no inherited threads or connections).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rhip.errors import RhipError
from rhip.ingest.model import Record, SourceInfo

log = logging.getLogger(__name__)

#: Chunks prepared ahead of the writer (each holds ``chunk_size`` records): bounds the memory.
QUEUE_CHUNKS = 2
#: Seconds between checks that the other process is still alive while waiting on the queue.
POLL_SECONDS = 1.0
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
    store's prepared form (``rhip.store.bulk.Ready``) of each mapped resource, or is empty when
    the writer must prepare them itself.
    """

    record: Record
    mapped: Any
    reasons: list[dict[str, str]]
    ready: list[Any] = field(default_factory=list)


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


@dataclass
class PreparedChunk:
    """One chunk from the producer; ``observed``: each observer part's ``drain()``, or None when
    the parts did not see this chunk (records with event-time ordering: the writer observes them)."""

    records: list[PreparedRecord]
    observed: list[Any] | None


def picklable(job: ProducerJob) -> bool:
    """True when the job can be sent to a child process (custom mappers or validators may not be)."""
    try:
        pickle.dumps(job)
    except Exception:  # lambdas, closures, open handles: run in-process instead
        return False
    return True


def prepare_chunk(job: ProducerJob, preparer: Any, chunk: list[Record]) -> list[PreparedRecord]:
    """Map and prepare one chunk of records (what the producer process runs; also usable in-process)."""
    from rhip.ingest.pipeline import MAPPERS, MapContext, record_key

    fn = job.mapper or MAPPERS[job.connector]
    contexts: dict[SourceInfo, Any] = {}
    out: list[PreparedRecord] = []
    for rec in chunk:
        src = rec.source or job.source
        ctx = contexts.get(src)
        if ctx is None:
            ctx = contexts[src] = MapContext(src, job.tz, job.translator, job.options)
        mapped, reasons = preparer.map_record(rec, record_key(rec, src), ctx, fn)
        out.append(PreparedRecord(rec, mapped, reasons, _ready(mapped) if job.index_rows else []))
    return out


def _ready(mapped: Any) -> list[Any]:
    from rhip.store.bulk import prepare_resource

    if mapped is None or mapped.bundle is not None:
        return []
    try:
        return [prepare_resource(res) for res in mapped.resources]
    except RhipError:  # the writer raises it again with its own context
        return []


def _produce(job: ProducerJob, out: Any, parent: int) -> None:
    """Child process body: prepare every chunk and queue it; ``None`` ends, a string is an error."""
    from rhip.ingest import runner  # noqa: F401 (registers the built-in mappers in this process)
    from rhip.ingest.pipeline import RecordPreparer, chunks

    try:
        preparer = RecordPreparer(job.translator, job.tz, job.validator)
        # the tables loaded so far (validator, pinyin, search parameters) live as long as the
        # process: keep the collector from walking them again and again
        gc.freeze()
        gc.set_threshold(*BULK_GC_THRESHOLDS)
        for chunk in chunks(job.records, job.chunk_size):
            _put(out, _observe(job, prepare_chunk(job, preparer, chunk)), parent)
        _put(out, None, parent)
    except Exception as exc:  # reported to the writer, which raises it with this text
        log.exception("ingest producer failed")
        _put(out, f"{type(exc).__name__}: {str(exc)[:300]}", parent)


def _observe(job: ProducerJob, prepared: list[PreparedRecord]) -> PreparedChunk:
    """Show the chunk to the observer parts, as the writer would show it to the observers."""
    if not job.observers or any(p.mapped is not None and p.mapped.ordered for p in prepared):
        return PreparedChunk(prepared, None)
    arrival = time.time()
    for p in prepared:
        src = p.record.source or job.source
        for obs in job.observers:
            if p.mapped is None:
                obs.on_quarantined(p.record, p.reasons, src)
            else:
                obs.on_stored(p.record, p.mapped, src, arrival)
    return PreparedChunk(prepared, [obs.drain() for obs in job.observers])


def _put(out: Any, item: Any, parent: int) -> None:
    while True:
        try:
            out.put(item, timeout=POLL_SECONDS)
            return
        except queue.Full:
            if os.getppid() != parent:  # the writer was killed: nothing will read this any more
                os._exit(1)


class Producer:
    """Runs :func:`_produce` in a child process; iterate it for prepared chunks in file order.

    Use as a context manager: leaving the block (normally or by an exception) stops the child.
    """

    def __init__(self, job: ProducerJob) -> None:
        ctx = multiprocessing.get_context("spawn")
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
        while True:
            try:
                item = _get(self._queue)
            except queue.Empty:
                if self._process.is_alive():
                    continue
                try:  # it may have queued its last items just before it exited
                    item = _get(self._queue)
                except queue.Empty:
                    code = self._process.exitcode
                    raise RhipError(f"ingest producer process stopped (exit code {code})") from None
            if item is None:
                return
            if isinstance(item, str):
                raise RhipError(f"ingest producer failed: {item}")
            yield item


def _get(source: Any) -> Any:
    """The next item of the queue; the collector is paused while a chunk is unpickled.

    A chunk is some hundred thousand new, acyclic objects: collections triggered while they are
    created would walk them again and again (a third of the writer's time in measurements).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return source.get(timeout=POLL_SECONDS)
    finally:
        if paused:
            gc.enable()
