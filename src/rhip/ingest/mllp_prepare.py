"""A second process that maps the MLLP listener's messages, so the listener uses two cores.

Parsing, mapping, canonicalisation, validation and the index rows of resources that are not
encrypted depend on the message alone (:func:`rhip.ingest.producer.prepare_chunk`), so a child
process can do them for one batch while the listener's own process writes the previous one.
The child commits nothing and keeps no state between batches: duplicates, ordering, quality
rules, Provenance, the store write and the ACKs stay in the listener, exactly as without it.

The child is started with ``spawn`` (no inherited threads or connections) and talks over one
duplex pipe, a batch at a time. It exits when asked, when the pipe closes, or within a second
of its parent dying (``kill -9``), so it never outlives the listener.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
from typing import Any

from rhip.errors import RhipError
from rhip.ingest.model import Record
from rhip.ingest.producer import BULK_GC_THRESHOLDS, POLL_SECONDS, PreparedRecord, ProducerJob, prepare_chunk

log = logging.getLogger(__name__)

#: Seconds the listener waits for a new child to load its tables before mapping in-process.
START_TIMEOUT = 120.0
_READY = "ready"


class PrepareProcess:
    """A long-lived child process preparing batches of records for :meth:`Pipeline.process_chunk`.

    ``job`` carries the mapper, translator, validator and time zone (its ``records`` are unused:
    records arrive batch by batch through :meth:`prepare`). Calls are not concurrent: one batch
    is in the child at a time.
    """

    def __init__(self, job: ProducerJob) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_end = ctx.Pipe(duplex=True)
        self._child_end: Any = child_end
        self._process = ctx.Process(
            target=_serve, args=(job, child_end, os.getpid()), name="rhip-mllp-prepare", daemon=True
        )

    @property
    def pid(self) -> int | None:
        """Process id of the child (None before it starts)."""
        return self._process.pid

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start the child and wait until it is ready; False (child stopped) when it is not."""
        self._process.start()
        self._child_end.close()  # the child's end lives in the child only: its exit closes the pipe
        try:
            if self._conn.poll(timeout) and self._conn.recv() == _READY:
                return True
        except (EOFError, OSError):
            pass
        log.warning("MLLP prepare process did not start; messages are mapped in the listener")
        self.close()
        return False

    def prepare(self, records: list[Record], index_rows: bool) -> list[PreparedRecord]:
        """The records mapped and prepared by the child, in order (RhipError if it failed or died)."""
        try:
            self._conn.send((records, index_rows))
            paused = gc.isenabled()
            gc.disable()  # a batch is many new, acyclic objects: do not walk them while unpickling
            try:
                reply = self._conn.recv()
            finally:
                if paused:
                    gc.enable()
        except (EOFError, OSError) as exc:
            raise RhipError(f"MLLP prepare process stopped ({type(exc).__name__})") from None
        if isinstance(reply, str):
            raise RhipError(f"MLLP prepare process failed: {reply}")
        prepared: list[PreparedRecord] = reply
        return prepared

    def close(self) -> None:
        """Ask the child to exit and wait for it (terminated if it does not)."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)
        self._conn.close()


def _serve(job: ProducerJob, conn: Any, parent: int) -> None:
    """Child process body: answer each ``(records, index_rows)`` request with the prepared records."""
    from rhip.ingest import runner  # noqa: F401 (registers the built-in mappers in this process)
    from rhip.ingest.prepare import RecordPreparer

    preparer = RecordPreparer(job.translator, job.tz, job.validator)
    # the tables loaded so far live as long as the process: keep the collector from walking them
    gc.freeze()
    gc.set_threshold(*BULK_GC_THRESHOLDS)
    conn.send(_READY)
    while True:
        if not conn.poll(POLL_SECONDS):
            if os.getppid() != parent:  # the listener was killed: nothing will read a reply
                return
            continue
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        records, index_rows = request
        try:
            reply: Any = prepare_chunk(dataclasses.replace(job, index_rows=index_rows), preparer, records)
        except Exception as exc:  # reported to the listener, which maps the batch itself
            log.exception("MLLP prepare process failed")
            reply = f"{type(exc).__name__}: {str(exc)[:300]}"
        conn.send(reply)
