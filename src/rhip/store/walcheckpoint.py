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

SQLite starts the log over from its beginning only when a writer begins while every frame has been
copied back, and a passive checkpoint racing a steady writer never leaves it so: the log file grew
without end (6.3 GiB after ≈ 54,000 creates through the API in a minute, docs/benchmarks.md). So once the log
holds ``restart_pages`` the thread copies the rest with writers held off (the process's write lock,
when given, and SQLite's), a RESTART checkpoint: the next writer starts the log over, and the
file stays near that size.

Other engines (PostgreSQL, in-memory SQLite) have nothing to checkpoint: the class does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: SQLite's own default ``wal_autocheckpoint`` (pages), restored when no checkpointer runs.
DEFAULT_AUTOCHECKPOINT = 1000
#: Log pages (4 KiB) past which a checkpoint also restarts the log: 64 MiB, a few seconds of the
#: API's busiest writing, so writers wait for a restart no more often than that.
RESTART_PAGES = 16_384
#: How long the restarting checkpoint waits for another process's writer or readers still in the log
#: (milliseconds); if they stay, it gives up and tries again once the log has grown as much again.
RESTART_WAIT_MS = 200
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
    checked out keeps its setting until it is returned. ``lock``: the lock this process's writers
    of the engine take, held while a checkpoint restarts the log (they wait on it rather than in
    SQLite's busy handler); ``restart_pages``: the log size that calls for a restart.
    """

    def __init__(
        self,
        engine: Engine,
        interval: float = 0.0,
        *,
        lock: threading.Lock | None = None,
        restart_pages: int = RESTART_PAGES,
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.lock = lock
        self.restart_pages = restart_pages
        self.enabled = has_wal_file(engine)
        self.checkpoints = 0  # checkpoints run (the final one included)
        self.restarts = 0  # checkpoints that let the next writer start the log over
        self._restart_at = restart_pages
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
        """One PASSIVE checkpoint (copies what no reader still needs, never waits for a lock), and
        a restart of the log when it has grown to ``restart_pages``."""
        cursor = self._conn.cursor()
        try:
            _busy, pages, _copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if pages >= self._restart_at:
                self._restart(cursor)
        except sqlite3.Error as exc:  # the next commit wakes another attempt
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            cursor.close()

    def _restart(self, cursor: sqlite3.Cursor) -> None:
        """Copy what the passive pass left, writers held off, so the next writer starts the log over.

        The passive pass just copied most of the log, so writers wait only for the frames added
        since and the sync of the database file. Readers still in the log are waited for at most
        RESTART_WAIT_MS; if they stay, the next try comes after as many pages again.
        """
        held = self.lock if self.lock is not None else contextlib.nullcontext()
        with held:
            wait = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
            cursor.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS:d}")
            try:
                busy, pages, _copied = cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                cursor.execute(f"PRAGMA busy_timeout={int(wait):d}")
        if busy:
            self._restart_at = pages + self.restart_pages
            log.info(
                "WAL of %s not restarted at %d pages: readers or a writer stayed",
                self.engine.url.database,
                pages,
            )
            return
        self.restarts += 1
        self._restart_at = self.restart_pages
