"""Concurrent writers with real threads: optimistic version checks and serialised conditionals."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rhip.errors import RhipError, VersionConflict
from rhip.store import Store, StoreBusy

THREADS = 6
SYS = "urn:oid:2.16.156.10011.1.19"


def _race(work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on THREADS threads released together; return results or exceptions."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_same_if_match_only_one_wins(store: Store) -> None:
    res_id = store.create({"resourceType": "Patient", "gender": "male"}).res_id

    def work(i: int) -> int:
        body = {"resourceType": "Patient", "id": res_id, "name": [{"family": f"F{i}"}]}
        return store.update("Patient", res_id, body, if_match=1).version_id

    results = _race(work)
    wins = [r for r in results if isinstance(r, int)]
    losses = [r for r in results if isinstance(r, VersionConflict)]
    assert wins == [2], results
    assert len(losses) == THREADS - 1 and all(exc.status == 412 for exc in losses)
    assert store.history("Patient", res_id).total == 2


def test_unconditional_updates_all_land(store: Store) -> None:
    res_id = store.create({"resourceType": "Patient"}).res_id

    def work(i: int) -> int:
        total = 0
        for j in range(3):
            body = {"resourceType": "Patient", "name": [{"family": f"F{i}-{j}"}]}
            total = store.update("Patient", res_id, body).version_id
        return total

    results = _race(work)
    assert all(isinstance(r, int) for r in results), results
    page = store.history("Patient", res_id, count=100)
    assert page.total == 1 + THREADS * 3
    assert sorted(e.version_id for e in page.entries) == list(range(1, 2 + THREADS * 3))
    stamps = [e.last_updated for e in sorted(page.entries, key=lambda e: e.version_id)]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert store.read("Patient", res_id)["meta"]["versionId"] == str(1 + THREADS * 3)


def test_concurrent_conditional_creates_make_one(store: Store) -> None:
    crit = [("identifier", f"{SYS}|race")]
    body = {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "race"}]}
    results = _race(lambda i: store.create(body, if_none_exist=crit))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(1 for r in results if r.created) == 1
    assert len({r.res_id for r in results}) == 1
    assert store.count("Patient") == 1


def test_concurrent_creates_with_same_client_id(store: Store) -> None:
    body = {"resourceType": "Patient", "id": "same"}
    results = _race(lambda i: store.create(body))
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1
    assert all(isinstance(r, VersionConflict) for r in results if isinstance(r, Exception))


def test_concurrent_bulk_writes_of_overlapping_ids(store: Store) -> None:
    def work(i: int) -> Any:
        bodies = [
            {"resourceType": "Patient", "id": f"p{k}", "gender": "male", "name": [{"text": str(i)}]}
            for k in range(50)
        ]
        return store.bulk_write(bodies, batch_size=25)

    results = _race(work)
    errors = [r for r in results if isinstance(r, RhipError)]
    assert not errors, errors
    assert sum(r.created for r in results) == 50
    assert sum(r.created + r.updated + r.unchanged for r in results) == 50 * THREADS
    assert store.count("Patient") == 50
    versions = {body["id"]: int(body["meta"]["versionId"]) for body, *_ in store.iter_current("Patient")}
    total_versions = store.history("Patient", count=0).total
    assert sum(versions.values()) == total_versions
    assert store.search("Patient", [("gender", "male")]).total == 50


@pytest.mark.postgres
def test_many_threads_share_one_store_on_postgres(fresh_pg_url: str) -> None:
    store = Store(fresh_pg_url)
    try:
        ids = [store.create({"resourceType": "Patient"}).res_id for _ in range(THREADS)]

        def work(i: int) -> int:
            for _ in range(5):
                store.patch("Patient", ids[i], [{"op": "add", "path": "/active", "value": True}])
                store.read("Patient", ids[(i + 1) % THREADS])
            return store.read("Patient", ids[i])["meta"]["versionId"]

        assert _race(work) == ["6"] * THREADS
    finally:
        store.close()


def test_sqlite_lock_held_too_long_is_store_busy(tmp_path: Path) -> None:
    """A writer that cannot get the SQLite lock within the busy timeout gets 503, not a driver error."""
    url = f"sqlite:///{tmp_path / 'busy.sqlite'}"
    store = Store(url, busy_timeout_ms=200)
    holder = sqlite3.connect(tmp_path / "busy.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusy) as exc:
            store.create({"resourceType": "Patient"})
        assert exc.value.status == 503
        assert store.count() == 0  # reads still work while the lock is held (WAL)
        holder.execute("ROLLBACK")
        assert store.create({"resourceType": "Patient"}).created
    finally:
        holder.close()
        store.close()
