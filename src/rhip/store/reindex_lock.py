"""One ``rhip db reindex`` at a time per database.

Two runs would share the one cursor of ``reindex_progress``, each moving it past pages the other
has not walked, so the second is refused at once with a clear message instead. The lock lives as
long as the run's process: a PostgreSQL session-level advisory lock on a connection held for the
run, or an exclusive ``flock`` on a file beside the SQLite database; a run killed with ``kill -9``
releases it with its connection or its file descriptor, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text

from rhip.errors import InvalidRequest

__all__ = ["REFUSAL", "single_run"]

#: Advisory lock key of a running reindex ("RHIX"; the migrations use another key).
_PG_LOCK_KEY = 0x5248_4958
REFUSAL = (
    "reindex: another rhip db reindex is running on this database; "
    "wait for it to finish (or stop it) and run again"
)


@contextlib.contextmanager
def single_run(engine: Engine) -> Iterator[None]:
    """Hold the database's reindex lock for the ``with`` block; InvalidRequest when another run holds it."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":  # one process sees an in-memory database
        yield
        return
    with _file_lock(Path(f"{database}.reindex-lock")):
        yield


@contextlib.contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _PG_LOCK_KEY}).scalar_one():
            raise InvalidRequest(REFUSAL)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidRequest(REFUSAL) from None
        yield
    finally:
        os.close(fd)  # releases the lock; the empty file stays (removing it would race a waiting run)
