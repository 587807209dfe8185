"""Background WAL checkpoints: commits stop checkpointing while they run, the thread catches up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from rhip.store import Store
from rhip.store.walcheckpoint import DEFAULT_AUTOCHECKPOINT, BackgroundCheckpoints, has_wal_file

ROWS_PER_TRANSACTION = 200  # rows of 4 KiB: about 200 log pages per commit


def _autocheckpoint(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def _write(engine: Engine, transactions: int, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS blob_rows (n INTEGER PRIMARY KEY, body BLOB)")
    for t in range(transactions):
        with engine.begin() as conn:
            base = start + t * ROWS_PER_TRANSACTION
            conn.exec_driver_sql(
                "INSERT INTO blob_rows VALUES (?, ?)",
                [(base + i, bytes(4000)) for i in range(ROWS_PER_TRANSACTION)],
            )


def _wal_pages(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size // 4096


def test_commits_leave_the_log_to_the_thread_and_it_copies_it_back(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite"
    store = Store(f"sqlite:///{path}")
    try:
        _write(store.engine, 10)  # default: commits checkpoint, the log is reused from its start
        assert _wal_pages(path) < 2 * DEFAULT_AUTOCHECKPOINT
        checkpoints = BackgroundCheckpoints(store.engine, interval=0.0)
        checkpoints.start()
        try:
            assert _autocheckpoint(store.engine) == 0
            _write(store.engine, 20, start=10 * ROWS_PER_TRANSACTION)
            assert _wal_pages(path) > 3 * DEFAULT_AUTOCHECKPOINT  # no commit checkpointed
            checkpoints.committed()
            deadline = time.monotonic() + 10
            while checkpoints.checkpoints == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert checkpoints.checkpoints >= 1
        finally:
            checkpoints.stop()
        with store.engine.connect() as conn:
            busy, log, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert busy == 0 and log == done  # everything committed is in the database file
        assert _autocheckpoint(store.engine) == DEFAULT_AUTOCHECKPOINT  # given back to commits
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM blob_rows").scalar_one() == 30 * 200
    finally:
        store.close()


def test_two_checkpointers_on_one_engine_keep_commits_off_until_both_stop(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'two.sqlite'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    first, second = BackgroundCheckpoints(engine), BackgroundCheckpoints(engine)
    first.start()
    second.start()
    first.stop()
    assert _autocheckpoint(engine) == 0
    second.stop()
    assert _autocheckpoint(engine) == DEFAULT_AUTOCHECKPOINT
    assert first.checkpoints == 1 and second.checkpoints == 1  # the final one each
    engine.dispose()


def test_engines_without_a_log_file_are_left_alone(db_url: str) -> None:
    engines = [create_engine("sqlite://"), create_engine(db_url)]
    for engine in engines:
        checkpoints = BackgroundCheckpoints(engine)
        checkpoints.start()
        checkpoints.committed()
        checkpoints.stop()
        expected = engine.dialect.name == "sqlite" and engine.url.database not in (None, "")
        assert has_wal_file(engine) is expected and checkpoints.enabled is expected
        assert checkpoints.checkpoints == (1 if expected else 0)
        engine.dispose()


def test_a_steady_writer_does_not_grow_the_log_without_end(tmp_path: Path) -> None:
    """Passive checkpoints alone never found the log fully copied when a writer began, so SQLite
    never started it over: it grew by every page written. Past ``restart_pages`` the thread
    restarts it, holding the writers' lock, and the file stays near that size."""
    path = tmp_path / "steady.sqlite"
    store = Store(f"sqlite:///{path}")
    lock = threading.Lock()
    checkpoints = BackgroundCheckpoints(store.engine, interval=0.0, lock=lock, restart_pages=600)
    event.listen(store.engine, "commit", lambda _conn: checkpoints.committed())
    transactions = 60
    try:
        _write(store.engine, 0)  # the table
        checkpoints.start()
        with store.engine.connect() as conn:  # the log as a steady writer leaves it: empty
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        rows = [bytes(4000)] * ROWS_PER_TRANSACTION
        for t in range(transactions):  # one after another, as the API's group commit under load
            time.sleep(0.001)  # the hop back to the event loop between two groups
            with lock, store.engine.begin() as conn:
                base = t * ROWS_PER_TRANSACTION
                conn.exec_driver_sql(
                    "INSERT INTO blob_rows VALUES (?, ?)", [(base + i, r) for i, r in enumerate(rows)]
                )
        written = transactions * ROWS_PER_TRANSACTION
        assert _wal_pages(path) < written // 3, f"log of {_wal_pages(path)} pages after {written} written"
        assert checkpoints.restarts >= 1
    finally:
        checkpoints.stop()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM blob_rows").scalar_one() == written
    store.close()
