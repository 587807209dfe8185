"""MLLP listener (asyncio TCP) and a small client, for HL7 v2 over the Minimal Lower Layer Protocol.

Each frame is ``<VT> message <FS><CR>``. The listener answers every message with an ACK only after
the message's outcome is committed: AA (stored, duplicate or superseded), AE (content error: the
message is quarantined) or AR (unsupported type/event or unreadable header), with ERR segments
naming the rule and the segment/field. Messages from all open connections are gathered into small
batches for the database, which is what lets one listener acknowledge thousands of messages per
second while each sender still waits for its own ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rhip.ingest.hl7v2 import CONNECTOR, ack_code, build_ack, control_id, decode, header_field, split_messages
from rhip.ingest.model import BatchReport, MappingError, Record, SourceInfo
from rhip.ingest.pipeline import MapContext, Pipeline

log = logging.getLogger(__name__)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
MAX_FRAME = 16 * 1024 * 1024


def frame(message: str | bytes) -> bytes:
    """Wrap one message in MLLP framing."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + FS + CR


@dataclass
class _Item:
    raw: bytes
    peer: str
    future: asyncio.Future[str]


@dataclass
class ListenerStats:
    """Counts since the listener started."""

    received: int = 0
    acks: dict[str, int] = field(default_factory=lambda: {"AA": 0, "AE": 0, "AR": 0})


class MLLPListener:
    """An asyncio MLLP server feeding a :class:`Pipeline`.

    Args:
        pipeline: the ingest pipeline (its store is written from one worker thread).
        host, port: where to listen (port 0 picks a free port; see :attr:`port` after start).
        facility: facility code for every message; default: each message's MSH-4.
        batch_max: most messages per database batch; batch_wait: seconds to gather a batch.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        facility: str | None = None,
        batch_max: int = 500,
        batch_wait: float = 0.002,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.port = port
        self.facility = facility
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.stats = ListenerStats()
        self.reports: dict[str, BatchReport] = {}  # per sending facility, in memory
        self.report: BatchReport | None = None  # the listener's persisted batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving; :attr:`port` holds the bound port afterwards."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, finish queued messages, close batch reports."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self.report is not None:
            await asyncio.to_thread(self.pipeline.close_batch, self.report)

    async def serve_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > MAX_FRAME:
                    log.warning("MLLP frame from %s exceeds %d bytes; closing", peer, MAX_FRAME)
                    break
                while True:
                    start = buffer.find(VT)
                    end = buffer.find(FS + CR, start + 1) if start >= 0 else -1
                    if start < 0 or end < 0:
                        break
                    raw = buffer[start + 1 : end]
                    buffer = buffer[end + 2 :]
                    ack = await self._submit(raw, peer)
                    writer.write(frame(ack))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _submit(self, raw: bytes, peer: str) -> str:
        assert self._queue is not None
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(raw, peer, future))
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.batch_wait
            while len(items) < self.batch_max:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    items.append(
                        await asyncio.wait_for(self._queue.get(), max(timeout, 0))
                        if timeout > 0
                        else self._queue.get_nowait()
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
            try:
                acks = await asyncio.to_thread(self._process, items)
            except Exception:
                log.exception("MLLP batch failed")
                acks = [
                    build_ack(
                        _text(i.raw),
                        "AE",
                        [{"rule": "internal-error", "path": "", "message": "processing failed; resend"}],
                    )
                    for i in items
                ]
            for item, ack in zip(items, acks, strict=True):
                if not item.future.done():
                    item.future.set_result(ack)

    def _process(self, items: Sequence[_Item]) -> list[str]:
        """Runs in the worker thread: the whole batch is one pipeline chunk (one source per record)."""
        from rhip.ingest.pipeline import MAPPERS

        if self.report is None:
            self.report = self.pipeline.open_batch(SourceInfo(self.facility or "*", CONNECTOR, "mllp"))
        texts = [_text(i.raw) for i in items]
        records: list[Record] = []
        owner: list[int] = []  # item index of each record (a frame may carry a batch of messages)
        for n, text in enumerate(texts):
            for m, msg in enumerate(split_messages(text) if text else [""]):
                facility = self.facility or header_field(msg, 4) or "unknown"
                records.append(
                    Record(
                        msg.encode("utf-8") if msg else items[n].raw,
                        f"{items[n].peer}/{control_id(msg) or n}#{m + 1}",
                        key=control_id(msg),
                        source=SourceInfo(facility, CONNECTOR, "mllp"),
                    )
                )
                owner.append(n)
        ctx = MapContext(self.report.source, self.pipeline.tz, self.pipeline.translator)
        outcomes = self.pipeline.process_chunk(self.report, ctx, records, MAPPERS[CONNECTOR], track=True)
        per_item: list[list[tuple[str, list[dict[str, str]]]]] = [[] for _ in items]
        for rec, n, (outcome, reasons) in zip(records, owner, outcomes, strict=True):
            per_item[n].append((outcome, reasons))
            assert rec.source is not None
            fac = self.reports.setdefault(rec.source.facility, BatchReport("mllp", rec.source))
            fac.received += 1
            setattr(fac, _FIELD[outcome], getattr(fac, _FIELD[outcome]) + 1)
        acks: list[str] = []
        for text, results in zip(texts, per_item, strict=True):
            codes = [ack_code(o, r) for o, r in results]
            code = "AR" if "AR" in codes else "AE" if "AE" in codes else "AA"
            self.stats.received += 1
            self.stats.acks[code] += 1
            acks.append(build_ack(text, code, [r for _o, rs in results for r in rs]))
        return acks


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
    return asyncio.run(send_messages(host, port, messages, timeout=timeout))


def ack_of(ack: str) -> dict[str, Any]:
    """MSA-1, MSA-2 and the ERR segments of an ACK, for callers that check outcomes."""
    segs = [s.split("|") for s in ack.strip("\r").split("\r")]
    msa = next((s for s in segs if s[0] == "MSA"), ["MSA", "", ""])
    return {
        "code": msa[1],
        "control_id": msa[2] if len(msa) > 2 else "",
        "errors": ["|".join(s) for s in segs if s[0] == "ERR"],
    }
