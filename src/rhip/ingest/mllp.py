"""MLLP listener (asyncio TCP) and a small client, for HL7 v2 over the Minimal Lower Layer Protocol.

Each frame is ``<VT> message <FS><CR>``. The listener answers every message with an ACK only after
the message's outcome is committed: AA (stored, duplicate or superseded), AE (content error: the
message is quarantined) or AR (unsupported type/event or unreadable header), with ERR segments
naming the rule and the segment/field.

Throughput comes from micro-batching: messages from all open connections that arrive within a few
milliseconds (``batch_wait``) are one pipeline chunk, i.e. one store transaction, and are
acknowledged together after its commit. A batch closes early when every open connection already has
a message waiting for its ACK (no one else can add one). Batches are written one at a time, in
arrival order, so the messages of one connection are applied in the order they were sent; a
sender that does not wait for each ACK (pipelining) gets its ACKs in order too.

With a second core to spare (setting ``mllp_prepare_process``, off by default), a child process
(:mod:`rhip.ingest.mllp_prepare`) parses, maps and validates the next batch while this process
writes the previous one; the write, duplicates, ordering, Provenance and ACKs stay here, so the
outcome of every message is the same. Waiting senders only send again after their ACK, so two
batches are in flight only when the senders form two groups: with at least
:data:`PIPELINE_MIN_SPLIT` connections, a batch of that many messages arriving while nothing is
being written is written as two transactions, the second prepared while the first is written.
With fewer connections batches are not overlapped (it would halve every transaction, each with
its fixed cost); each is prepared half in the child and half here, at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rhip.config import get_settings
from rhip.errors import RhipError
from rhip.fhir.search_params import registry_version
from rhip.ingest.hl7v2 import (
    CONNECTOR,
    ack_code,
    ack_time,
    build_ack,
    control_id,
    decode,
    header_field,
    message_bytes,
)
from rhip.ingest.mappers import MAPPERS, MapContext
from rhip.ingest.mllp_prepare import PrepareProcess
from rhip.ingest.model import BatchReport, MappingError, Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.producer import (
    BULK_GC_THRESHOLDS,
    PreparedRecord,
    ProducerJob,
    RecordSource,
    field_encryption,
    picklable,
    prepare_chunk,
)
from rhip.store.walcheckpoint import BackgroundCheckpoints

log = logging.getLogger(__name__)
T = TypeVar("T")

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
END = FS + CR
MAX_FRAME = 16 * 1024 * 1024
#: Fewest connections (and smallest batch) for which preparation and writes overlap, a batch
#: being split in two to start it (with a prepare process): each transaction has a fixed cost
#: (about as much as mapping ten messages, measured) that smaller batches pay more often than
#: the overlap saves.
PIPELINE_MIN_SPLIT = 16
#: Seconds between checkpoints of an SQLite store's log while the listener runs: a page that
#: several batches dirty in that time is copied back once (less CPU than a checkpoint per batch,
#: measured), and the log stays within roughly this many seconds of writes.
CHECKPOINT_INTERVAL = 0.5


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when the ``mllp_uvloop`` setting asks for it and uvloop imports (it
    does not on Windows), else None: asyncio's own loop.

    The listener's sockets, framing and ACKs cost about 0.17 ms of CPU per message on asyncio's
    loop (docs/benchmarks.md); uvloop does the same work in C.
    """
    if not get_settings().mllp_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop of :func:`loop_factory`'s kind (as
    :func:`asyncio.run` does), for the listener and its client."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def frame(message: str | bytes) -> bytes:
    """Wrap one message in MLLP framing."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + END


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete frames' payloads in ``buffer`` and the bytes left over (an unfinished frame).

    Bytes before a frame's VT (line noise, keep-alives) are dropped.
    """
    frames: list[bytes] = []
    pos = 0
    while True:
        start = buffer.find(VT, pos)
        if start < 0:
            return frames, b""
        end = buffer.find(END, start + 1)
        if end < 0:
            return frames, buffer[start:]
        frames.append(buffer[start + 1 : end])
        pos = end + 2


@dataclass
class _Item:
    raw: bytes
    peer: str
    future: asyncio.Future[str]


@dataclass
class _Batch:
    """A batch's frames as pipeline records: ``owner`` is the frame index of each record."""

    items: Sequence[_Item]
    texts: list[str]
    records: list[Record]
    owner: list[int]


@dataclass
class ListenerStats:
    """Counts since the listener started."""

    received: int = 0
    batches: int = 0
    prepared: int = 0  # batches (or halves) mapped by the prepare process
    acks: dict[str, int] = field(default_factory=lambda: {"AA": 0, "AE": 0, "AR": 0})


class MLLPListener:
    """An asyncio MLLP server feeding a :class:`Pipeline`.

    Args:
        pipeline: the ingest pipeline (its store is written from one worker thread).
        host, port: where to listen (port 0 picks a free port; see :attr:`port` after start;
            default: the ``mllp_port`` setting).
        facility: facility code for every message; default: each message's MSH-4.
        batch_max: most messages per database batch; batch_wait: seconds to gather a batch
            (defaults: the ``mllp_batch_max`` and ``mllp_batch_wait_ms`` settings).
        prepare_process: map messages in a second process (default: the ``mllp_prepare_process``
            setting; used only with two or more cores and a mapper and validator that pickle).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        facility: str | None = None,
        batch_max: int | None = None,
        batch_wait: float | None = None,
        prepare_process: bool | None = None,
    ) -> None:
        settings = get_settings()
        self.pipeline = pipeline
        self.host = host
        self.port = settings.mllp_port if port is None else port
        self.facility = facility
        self.batch_max = max(1, batch_max if batch_max is not None else settings.mllp_batch_max)
        self.batch_wait = batch_wait if batch_wait is not None else settings.mllp_batch_wait_ms / 1000
        self.prepare_process = settings.mllp_prepare_process if prepare_process is None else prepare_process
        self.stats = ListenerStats()
        self.reports: dict[str, BatchReport] = {}  # per sending facility, in memory
        self.report: BatchReport | None = None  # the listener's persisted batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._unanswered: dict[str, int] = {}  # peer -> messages submitted and not yet answered
        self._child: PrepareProcess | None = None
        self._job: ProducerJob | None = None
        self._gc_before: tuple[int, ...] | None = None  # collector thresholds to restore on stop
        self._checkpoints = BackgroundCheckpoints(pipeline.engine, CHECKPOINT_INTERVAL)

    @property
    def prepare_pid(self) -> int | None:
        """Process id of the prepare process, None when messages are mapped in this process."""
        return self._child.pid if self._child is not None else None

    async def start(self) -> None:
        """Bind and start serving (after the prepare process, if any, is ready); :attr:`port`
        holds the bound port afterwards."""
        if self.prepare_process and self._child is None:
            await asyncio.to_thread(self._start_child)
        # batches are many short-lived, acyclic objects: at the default thresholds the collector
        # took a tenth of the listener's CPU (measured); restored by stop()
        self._gc_before = gc.get_threshold()
        gc.set_threshold(*BULK_GC_THRESHOLDS)
        # an SQLite store's log is copied back by a thread of its own, not inside each batch's
        # commit (which took a fifth of the listener's CPU per message; see rhip.store.walcheckpoint)
        await asyncio.to_thread(self._checkpoints.start)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, finish the write in progress (its ACKs are sent), refuse what is still
        queued or only prepared (those senders get no ACK and resend), close connections, the
        prepare process and batch reports."""
        if self._server is not None:
            self._server.close()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._child is not None:
            child, self._child = self._child, None
            await asyncio.to_thread(child.close)
        if self._gc_before is not None:
            gc.set_threshold(*self._gc_before)
            self._gc_before = None
        if self.report is not None:
            await asyncio.to_thread(self.pipeline.close_batch, self.report)
        await asyncio.to_thread(self._checkpoints.stop)

    def _start_child(self) -> None:
        """Start the prepare process when it can help (two cores) and work (a picklable job)."""
        if (os.cpu_count() or 1) < 2:
            return
        job = ProducerJob(
            source=self._source(),
            records=RecordSource(tuple, parallel=False),  # unused: batches are sent as they come
            connector=CONNECTOR,
            mapper=MAPPERS[CONNECTOR],
            tz=self.pipeline.tz,
            translator=self.pipeline.translator,
            validator=self.pipeline.validator,
            options={},
            chunk_size=self.batch_max,
            index_rows=True,
            **field_encryption(self.pipeline.engine),
        )
        if not picklable(job):
            log.info("MLLP mapper or validator cannot be pickled; messages are mapped in the listener")
            return
        child = PrepareProcess(job)
        if child.start():
            self._child, self._job = child, job

    def _source(self) -> SourceInfo:
        return SourceInfo(self.facility or "*", CONNECTOR, "mllp")

    async def serve_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: every complete frame read is submitted at once, the ACKs written in order.

        The next read waits for those ACKs, which bounds what one sender has in flight to one read
        (64 KiB) and keeps its messages in order across batches.
        """
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        self._writers.add(writer)
        buffer = bytearray()
        try:
            while chunk := await reader.read(65536):
                seen = max(len(buffer) - 1, 0)  # a large frame is scanned once, not once per read
                buffer += chunk
                if buffer.find(END, seen) < 0:
                    if len(buffer) > MAX_FRAME:
                        log.warning("MLLP frame from %s exceeds %d bytes; closing", peer, MAX_FRAME)
                        break
                    continue
                frames, rest = split_frames(bytes(buffer))
                buffer = bytearray(rest)
                if not frames:
                    continue
                futures = [self._submit(raw, peer) for raw in frames]
                for future in futures:
                    writer.write(frame(await future))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _submit(self, raw: bytes, peer: str) -> asyncio.Future[str]:
        if self._queue is None:
            raise RuntimeError("MLLP listener not started")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._unanswered[peer] = self._unanswered.get(peer, 0) + 1
        self._queue.put_nowait(_Item(raw, peer, future))
        return future

    def _settle(self, items: Sequence[_Item]) -> None:
        """Forget answered (or refused) items: their senders may send again."""
        for item in items:
            left = self._unanswered.get(item.peer, 0) - 1
            if left > 0:
                self._unanswered[item.peer] = left
            else:
                self._unanswered.pop(item.peer, None)

    async def _gather(self, queue: asyncio.Queue[_Item]) -> list[_Item]:
        """The next batch: whatever is queued, then what arrives within ``batch_wait``, up to
        ``batch_max``; closed early once every open connection has a message waiting for its ACK
        (in this batch or in one being written)."""
        loop = asyncio.get_running_loop()
        items = [await queue.get()]
        deadline = loop.time() + self.batch_wait
        while len(items) < self.batch_max:
            if queue.empty():
                if deadline <= loop.time() or len(self._unanswered) >= len(self._writers):
                    break
                try:
                    async with asyncio.timeout_at(deadline):  # cheaper than wait_for: no task per item
                        item = await queue.get()
                except TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            items.append(item)
        return items

    async def _work(self) -> None:
        """Gather, prepare and write batches in arrival order, one write at a time.

        With a prepare process the next batch is gathered and prepared while the previous one
        is written; without, each batch is gathered after the previous one is answered. A stop
        lets the write in progress finish (its ACKs are sent) and refuses a batch not yet written.
        """
        if self._queue is None:
            raise RuntimeError("MLLP listener not started")
        writing: asyncio.Task[None] | None = None
        pending: Sequence[_Item] = ()  # gathered, not yet handed to a write
        try:
            while True:
                if writing is not None and not self._overlap():
                    await asyncio.shield(writing)
                pending = items = await self._gather(self._queue)
                for part in self._parts(items, idle=writing is None or writing.done()):
                    try:
                        batch = self._batch(part)
                    except Exception:  # answered like a batch whose processing failed
                        log.exception("MLLP batch failed")
                        _answer(part, _resend([_text(i.raw) for i in part]))
                        self._settle(part)
                        pending = pending[len(part) :]
                        continue
                    prepared = await self._prepare(batch, alone=writing is None or writing.done())
                    if writing is not None:
                        await asyncio.shield(writing)
                    writing = asyncio.ensure_future(self._write(batch, prepared))
                    pending = pending[len(part) :]
        except asyncio.CancelledError:
            for item in pending:
                item.future.cancel()
            self._settle(pending)
            if writing is not None:
                await writing
            raise

    def _overlap(self) -> bool:
        """Whether the next batch is gathered and prepared while one is written: with a prepare
        process and at least :data:`PIPELINE_MIN_SPLIT` connections (see the module doc)."""
        return self._child is not None and len(self._writers) >= PIPELINE_MIN_SPLIT

    def _parts(self, items: list[_Item], *, idle: bool) -> list[list[_Item]]:
        """The batch as written: in two halves when it can start the overlap (see module doc)."""
        if not self._overlap() or not idle or len(items) < PIPELINE_MIN_SPLIT:
            return [items]
        half = len(items) // 2
        return [items[:half], items[half:]]

    async def _prepare(self, batch: _Batch, *, alone: bool) -> list[PreparedRecord] | None:
        """The batch's records prepared by the prepare process (None: the write maps them).

        ``alone``: nothing is being written, so this process prepares half the batch itself
        meanwhile. A failed or dead prepare process is stopped; mapping continues in this process.
        """
        child, job, records = self._child, self._job, batch.records
        if child is None or job is None:
            return None
        rows = registry_version() == 0  # the child does not know search parameters added here
        cut = (len(records) + 1) // 2 if alone else len(records)
        try:
            remote = asyncio.to_thread(self._prepare_remotely, child, records[:cut], rows)
            if cut == len(records):
                return await remote
            local = asyncio.to_thread(
                prepare_chunk,
                dataclasses.replace(job, index_rows=rows),
                self.pipeline.preparer,
                records[cut:],
            )
            # both halves finish before anything else touches the records (also when one fails)
            first, second = await asyncio.gather(remote, local, return_exceptions=True)
            for part in (first, second):
                if isinstance(part, BaseException):
                    raise part
            assert isinstance(first, list) and isinstance(second, list)
            return first + second
        except RhipError as exc:
            log.warning("%s; messages are mapped in the listener from now on", exc)
            if self._child is child:
                self._child = None
                await asyncio.to_thread(child.close)
            return None
        except Exception:  # the write maps the batch itself and answers what fails there
            log.exception("MLLP batch could not be prepared ahead")
            return None

    def _prepare_remotely(
        self, child: PrepareProcess, records: list[Record], rows: bool
    ) -> list[PreparedRecord]:
        prepared = child.prepare(records, rows)
        self.stats.prepared += 1
        return prepared

    async def _write(self, batch: _Batch, prepared: list[PreparedRecord] | None) -> None:
        acks = await asyncio.to_thread(self._run, batch, prepared)
        _answer(batch.items, acks)
        self._settle(batch.items)

    def _batch(self, items: Sequence[_Item]) -> _Batch:
        """The frames' messages as records (a frame may carry a batch of messages).

        Each record keeps the message's bytes as sent: the mapper decodes them by their own
        MSH-18, so a GB18030 message is not re-encoded into bytes its header no longer describes.
        """
        texts = [_text(i.raw) for i in items]
        records: list[Record] = []
        owner: list[int] = []
        for n, text in enumerate(texts):
            messages = list(message_bytes([items[n].raw])) or [(0, items[n].raw, 0)]
            for m, (_line, raw, _overlong) in enumerate(messages):  # frames are < MAX_FRAME
                msg = text if len(messages) == 1 else _text(raw)
                facility = self.facility or header_field(msg, 4) or "unknown"
                ctrl = control_id(msg)
                records.append(
                    Record(
                        raw,
                        f"{items[n].peer}/{ctrl or n}#{m + 1}",
                        key=ctrl,
                        source=SourceInfo(facility, CONNECTOR, "mllp"),
                    )
                )
                owner.append(n)
        return _Batch(items, texts, records, owner)

    def _run(self, batch: _Batch, prepared: list[PreparedRecord] | None) -> list[str]:
        """The ACKs of a batch; a failure of the batch as a whole is an AE asking for a resend."""
        try:
            return self._process(batch, prepared)
        except Exception:
            log.exception("MLLP batch failed")
            return _resend(batch.texts)

    def _process(self, batch: _Batch, prepared: list[PreparedRecord] | None) -> list[str]:
        """Runs in a worker thread: the whole batch is one pipeline chunk (one source per record)."""
        if self.report is None:
            self.report = self.pipeline.open_batch(self._source())
        ctx = MapContext(self.report.source, self.pipeline.tz, self.pipeline.translator)
        written: list[int] = []
        outcomes = self.pipeline.process_chunk(
            self.report,
            ctx,
            batch.records,
            MAPPERS[CONNECTOR],
            track=True,
            prepared=prepared,
            written=written,
        )
        self._checkpoints.committed()
        self.stats.batches += 1
        return self._acks(batch.texts, batch.records, batch.owner, outcomes, written)

    def _acks(
        self,
        texts: list[str],
        records: list[Record],
        owner: list[int],
        outcomes: list[tuple[str, list[dict[str, str]]]],
        written: list[int],
    ) -> list[str]:
        """One ACK per frame (the worst code of its messages) and the per-facility counts."""
        per_item: list[list[tuple[str, list[dict[str, str]]]]] = [[] for _ in texts]
        for rec, n, (outcome, reasons), resources in zip(records, owner, outcomes, written, strict=True):
            per_item[n].append((outcome, reasons))
            source = rec.source or SourceInfo("unknown", CONNECTOR, "mllp")
            fac = self.reports.get(source.facility)
            if fac is None:
                fac = self.reports[source.facility] = BatchReport("mllp", source)
            fac.received += 1
            fac.resources_written += resources
            setattr(fac, _FIELD[outcome], getattr(fac, _FIELD[outcome]) + 1)
        acks: list[str] = []
        now = ack_time()  # the batch is answered at once: one timestamp for its ACKs
        for text, results in zip(texts, per_item, strict=True):
            codes = [ack_code(o, r) for o, r in results]
            code = "AR" if "AR" in codes else "AE" if "AE" in codes else "AA"
            self.stats.received += 1
            self.stats.acks[code] += 1
            acks.append(build_ack(text, code, [r for _o, rs in results for r in rs], now=now))
        return acks


def _answer(items: Sequence[_Item], acks: Sequence[str]) -> None:
    for item, ack in zip(items, acks, strict=True):
        if not item.future.done():
            item.future.set_result(ack)


def _resend(texts: Sequence[str]) -> list[str]:
    """AE ACKs asking the senders to resend (the batch failed as a whole; nothing was committed)."""
    reason = {"rule": "internal-error", "path": "", "message": "processing failed; resend"}
    now = ack_time()
    return [build_ack(text, "AE", [reason], now=now) for text in texts]


_FIELD = {"stored": "stored", "duplicate": "duplicates", "quarantined": "quarantined", "stale": "stale"}


def _text(raw: bytes) -> str:
    try:
        return decode(raw).replace("\r\n", "\r").replace("\n", "\r").strip()
    except MappingError:
        return ""


async def send_messages(
    host: str, port: int, messages: Sequence[str | bytes], *, timeout: float = 30.0
) -> list[str]:
    """Send messages over one MLLP connection, one at a time, and return the ACK texts."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    acks: list[str] = []
    try:
        for message in messages:
            writer.write(frame(message))
            await writer.drain()
            data = await asyncio.wait_for(reader.readuntil(FS + CR), timeout)
            acks.append(data[data.find(VT) + 1 : -2].decode("utf-8"))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return acks


def send_sync(host: str, port: int, messages: Sequence[str | bytes], timeout: float = 30.0) -> list[str]:
    """Blocking :func:`send_messages` for scripts and tests."""
    return run(send_messages(host, port, messages, timeout=timeout))


def ack_of(ack: str) -> dict[str, Any]:
    """MSA-1, MSA-2 and the ERR segments of an ACK, for callers that check outcomes."""
    segs = [s.split("|") for s in ack.strip("\r").split("\r")]
    msa = next((s for s in segs if s[0] == "MSA"), ["MSA", "", ""])
    return {
        "code": msa[1],
        "control_id": msa[2] if len(msa) > 2 else "",
        "errors": ["|".join(s) for s in segs if s[0] == "ERR"],
    }
