"""Checkpoints of an SQLite store's write-ahead log in a thread of their own, for a busy writer.

SQLite copies the log back into the database file (a checkpoint) inside the COMMIT that takes the
log past ``wal_autocheckpoint`` pages (1,000 by default), and syncs the database file there. A
batch of the MLLP listener adds about 900 pages (its index B-trees are keyed on hashes, so every
message dirties leaf pages of its own), so nearly every commit ran a checkpoint: 2-3 ms of CPU and
10-17 ms of wall clock per batch of 30 messages, in the writer, between the write and the ACKs
(measured, docs/benchmarks.md). :class:`BackgroundCheckpoints` turns the automatic checkpoint off
for the engine's connections while it runs and checkpoints from its own thread after each commit
instead. The checkpoint is PASSIVE (it never waits for, or blocks, readers and the writer) and
``sqlite3`` releases the GIL while it copies and syncs, so that work moves to another core; what
is committed and how durable it is (WAL, ``synchronous=NORMAL``) stay the same.

Other engines (PostgreSQL, in-memory SQLite) have nothing to checkpoint: the class does nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: SQLite's own default ``wal_autocheckpoint`` (pages), restored when no checkpointer runs.
DEFAULT_AUTOCHECKPOINT = 1000
_INFO_KEY = "rhip_wal_autocheckpoint"
#: Engines with a checkout hook installed -> how many checkpointers run for them now.
_RUNNING: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def has_wal_file(engine: Engine) -> bool:
    """True for an SQLite engine on a file (the store opens those in WAL mode)."""
    database = engine.url.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    return engine.dialect.name == "sqlite" and not memory


def _install(engine: Engine) -> None:
    """Make every checkout set the connection's automatic checkpoint to what is wanted now
    (a statement only when it changes): off while a checkpointer runs, SQLite's default after."""
    if engine in _RUNNING:
        return
    _RUNNING[engine] = 0

    def on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        wanted = 0 if _RUNNING.get(engine) else DEFAULT_AUTOCHECKPOINT
        if record.info.get(_INFO_KEY, DEFAULT_AUTOCHECKPOINT) != wanted:
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={wanted:d}")
            record.info[_INFO_KEY] = wanted

    event.listen(engine, "checkout", on_checkout)


class BackgroundCheckpoints:
    """Checkpoint the WAL of ``engine`` in a thread, woken by :meth:`committed`, between
    :meth:`start` and :meth:`stop` (a final checkpoint runs at stop).

    Connections checked out while it runs do not checkpoint on commit; a connection already
    checked out keeps its setting until it is returned.
    """

    def __init__(self, engine: Engine, interval: float = 0.0) -> None:
        self.engine = engine
        self.interval = interval
        self.enabled = has_wal_file(engine)
        self.checkpoints = 0  # checkpoints run (the final one included)
        self._wake = threading.Event()
        self._pause = threading.Event()  # set by stop: ends the wait between checkpoints
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def start(self) -> None:
        """Turn the engine's automatic checkpoints off and start the thread (SQLite files only)."""
        if not self.enabled or self._thread is not None:
            return
        _install(self.engine)
        _RUNNING[self.engine] = _RUNNING.get(self.engine, 0) + 1
        self._conn = self.engine.raw_connection()
        self._stopping = False
        self._pause.clear()
        self._thread = threading.Thread(target=self._loop, name="rhip-wal-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A transaction committed: checkpoint soon (wake-ups while one runs are folded into one)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread, checkpoint what is left and give the engine its automatic checkpoints back."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._pause.set()
        self._wake.set()
        thread.join()
        try:
            self._checkpoint()
        finally:
            left = _RUNNING.get(self.engine, 1) - 1
            _RUNNING[self.engine] = max(left, 0)
            conn, self._conn = self._conn, None
            conn.close()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            self._checkpoint()
            if self.interval > 0 and self._pause.wait(self.interval):
                return

    def _checkpoint(self) -> None:
        """One PASSIVE checkpoint: copies what no reader still needs, never waits for a lock."""
        cursor = self._conn.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next commit wakes another attempt
            log.warning("WAL checkpoint failed: %s", exc)
            return
        finally:
            cursor.close()
        self.checkpoints += 1
