"""Rebuilding the search index from stored bodies (rhip.store.reindex, ``rhip db reindex``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_store_fieldcrypt import crypt_for, observation, patient

from rhip.errors import InvalidRequest, ResourceGone, ResourceNotFound, VersionConflict
from rhip.fhir.search_params import register_search_param, search_params_for, unregister_search_param
from rhip.store import Store
from rhip.store.engine import StoreBusy
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.reindex import prepare_reindex, reindex, run_reindex

OWN_FHIR_BASE = "http://127.0.0.1:8080/fhir"  # RHIP_BASE_URL's default, and the API's FHIR base


def index_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row, table by table, in a stable order."""
    with store.engine.connect() as conn:
        return {
            t.name: sorted((tuple(r) for r in conn.execute(sa.select(t))), key=repr) for t in INDEX_TABLES
        }


def _load(store: Store, observations: int = 4) -> None:
    for i in range(3):
        store.update("Patient", f"p{i}", patient(i, f"p{i}"))
    for i in range(observations):
        store.update("Observation", f"o{i:03d}", observation(f"o{i:03d}", f"Patient/p{i % 3}"))
    store.update("Observation", "gone", observation("gone", "Patient/p0"))
    store.delete("Observation", "gone")


def _tamper(store: Store) -> None:
    """Index rows lost, altered, and left behind for a deleted and a missing resource."""
    tables = {t.name: t for t in INDEX_TABLES}
    token, string, ref = tables["idx_token"], tables["idx_string"], tables["idx_reference"]
    with store.engine.begin() as conn:
        conn.execute(sa.delete(token).where(token.c.res_type == "Patient", token.c.res_id == "p1"))
        conn.execute(sa.update(string).where(string.c.res_id == "p2").values(norm="altered"))
        conn.execute(sa.delete(ref).where(ref.c.res_id == "o001"))
        for res_id in ("a-never-stored", "gone", "o001-never", "zz-never-stored"):
            conn.execute(
                sa.insert(token).values(res_type="Observation", res_id=res_id, param="status", code="final")
            )


def test_reindex_gives_the_rows_of_a_fresh_load(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))  # Patients' citizen IDs and phones sealed
    _load(store)
    fresh = index_snapshot(store)
    _tamper(store)
    assert index_snapshot(store) != fresh
    seen: list[int] = []
    result = reindex(store.engine, batch_size=2, on_rows=seen.append)
    assert index_snapshot(store) == fresh
    assert result.types == ["Observation", "Patient"]
    assert (result.resources, result.deleted, sum(seen)) == (7, 1, 8)
    assert result.rows_after == sum(len(rows) for rows in fresh.values()) != result.rows_before
    assert [m["id"] for m in store.search("Patient", [("phone", "13800138001")]).matches] == ["p1"]
    again = reindex(store.engine)
    assert index_snapshot(store) == fresh and again.rows_before == again.rows_after
    store.close()


def test_reindex_of_one_type_leaves_the_others_alone(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))
    _load(store)
    fresh = index_snapshot(store)
    _tamper(store)
    tampered = index_snapshot(store)
    result = reindex(store.engine, ["Patient"])
    after = index_snapshot(store)
    assert result.types == ["Patient"] and result.resources == 3
    for name, rows in after.items():
        assert [r for r in rows if r[0] == "Patient"] == [r for r in fresh[name] if r[0] == "Patient"]
        assert [r for r in rows if r[0] != "Patient"] == [r for r in tampered[name] if r[0] != "Patient"]
    with pytest.raises(InvalidRequest, match="batch_size"):
        reindex(store.engine, batch_size=0)
    with pytest.raises(InvalidRequest, match="unknown resource type 'Patiant'"):
        reindex(store.engine, ["Patient", "Patiant"])
    assert reindex(store.engine, ["Encounter"]).resources == 0  # an R4 type the store lacks: empty
    store.close()


def _ids(store: Store, params: list[tuple[str, str]]) -> list[str]:
    return sorted(m["id"] for m in store.search("Observation", params).matches)


def test_reindex_turns_old_outside_rows_of_own_urls_into_local_ones(db_url: str) -> None:
    store = Store(db_url)
    store.update("Observation", "abs", observation("abs", f"{OWN_FHIR_BASE}/Patient/p1"))
    ref = next(t for t in INDEX_TABLES if t.name == "idx_reference")
    with store.engine.begin() as conn:  # the row an older release wrote
        conn.execute(
            sa.update(ref).values(target_type=None, target_id=None, url=f"{OWN_FHIR_BASE}/Patient/p1")
        )
    assert _ids(store, [("patient", "p1")]) == []
    reindex(store.engine)
    assert _ids(store, [("patient", "p1")]) == ["abs"]
    store.close()


_SLOW_REINDEX = textwrap.dedent(
    """
    import sys, time
    from rhip.store import Store, fieldcrypt
    from rhip.store.reindex import reindex

    store = Store(sys.argv[1], fields=fieldcrypt.PLAIN, migrate=False)

    def committed(n):
        print("page", flush=True)
        time.sleep(0.05)

    reindex(store.engine, batch_size=1, on_rows=committed)
    """
)


def _rhip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


def _interrupt_by_kill(store: Store, db_url: str, pages: int = 5) -> None:
    """Clear the index, then kill -9 a one-resource-per-page reindex after ``pages`` commits."""
    with store.engine.begin() as conn:
        for table in INDEX_TABLES:
            conn.execute(sa.delete(table))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_REINDEX, db_url], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(pages):
        assert child.stdout.readline() == "page\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def test_reindex_killed_mid_run_resumes_with_the_remaining_pages_only(db_url: str, tmp_path: Path) -> None:
    """A re-run after kill -9 used to start over; it now walks only the pages the killed run left."""
    store = Store(db_url, fields=crypt_for(tmp_path))
    _load(store, observations=60)  # 64 resource rows: 60 + "gone" Observations, 3 Patients
    fresh = index_snapshot(store)
    _interrupt_by_kill(store, db_url)
    partial = index_snapshot(store)
    assert 0 < sum(map(len, partial.values())) < sum(map(len, fresh.values()))
    plan = prepare_reindex(store.engine, batch_size=1)
    assert plan.resumed and plan.remaining == 64 - 5
    assert re.fullmatch(
        r"resuming reindex started \S+ \S+ UTC at Observation/o003, 7 % done", plan.resume_note()
    )
    seen: list[int] = []
    result = run_reindex(store.engine, plan, on_rows=seen.append)
    assert (result.pages, len(seen), result.resources, result.deleted) == (59, 59, 59, 0)
    assert index_snapshot(store) == fresh
    assert prepare_reindex(store.engine).resumed is False  # the finished run left no progress
    store.close()


def test_cli_reindex_says_it_resumes_and_restart_starts_over(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))
    _load(store, observations=60)
    fresh = index_snapshot(store)
    _interrupt_by_kill(store, db_url)
    refused = _rhip("db", "reindex", "--database-url", db_url, "--type", "Patient")
    assert refused.returncode == 2 and "at Observation/o003" in refused.stderr
    assert "cannot be resumed: it was started for every type (no --type)" in refused.stderr
    assert "--restart to start over" in refused.stderr
    done = _rhip("db", "reindex", "--database-url", db_url, "--batch-size", "7")
    assert done.returncode == 0, done.stderr
    assert "resuming reindex started" in done.stdout and "at Observation/o003, 7 % done" in done.stdout
    assert "reindexed 59 resources of 2 types (0 deleted, no rows)" in done.stdout
    assert index_snapshot(store) == fresh
    _interrupt_by_kill(store, db_url, pages=2)
    again = _rhip("db", "reindex", "--database-url", db_url, "--type", "Patient", "--restart")
    assert again.returncode == 0 and "resuming" not in again.stdout
    assert "reindexed 3 resources of 1 types" in again.stdout
    assert "\nreindexed 63 resources of 2 types" in _rhip("db", "reindex", "--database-url", db_url).stdout
    assert index_snapshot(store) == fresh
    refused = _rhip("db", "reindex", "--database-url", db_url, "--type", "Patiant")
    assert refused.returncode == 2 and "unknown resource type 'Patiant'" in refused.stderr
    store.close()


class _Crash(Exception):
    """Stands for a crash after a page committed."""


def _crash_after(pages: int) -> Callable[[int], None]:
    seen: list[int] = []

    def committed(n: int) -> None:
        seen.append(n)
        if len(seen) == pages:
            raise _Crash

    return committed


def test_resume_is_refused_when_types_or_definitions_changed(db_url: str) -> None:
    """A resumed run must give a fresh run's rows: other types or other definitions are refused."""
    store = Store(db_url)
    _load(store)
    with pytest.raises(_Crash):
        reindex(store.engine, ["Observation", "Patient"], batch_size=2, on_rows=_crash_after(2))
    with pytest.raises(InvalidRequest, match="started for --type Observation --type Patient, this run is"):
        reindex(store.engine, ["Patient"])
    with pytest.raises(InvalidRequest, match="cannot be resumed"):
        reindex(store.engine)
    code = search_params_for("Observation")["code"]
    register_search_param("Observation", replace(code, name="region-code", url="urn:region-code"))
    try:
        with pytest.raises(InvalidRequest, match="search parameters or their extraction changed"):
            reindex(store.engine, ["Patient", "Observation"])
    finally:
        unregister_search_param("Observation", "region-code")
    seen: list[int] = []
    resumed = reindex(store.engine, ["Patient", "Observation"], batch_size=3, on_rows=seen.append)
    assert seen == [1, 3] and resumed.resources == 4  # done: gone, o000..o002; left: o003, 3 Patients
    with pytest.raises(_Crash):
        reindex(store.engine, batch_size=2, on_rows=_crash_after(1))
    restarted = reindex(store.engine, ["Patient"], restart=True)
    assert restarted.pages == 1 and restarted.resources == 3
    store.close()


def test_writes_between_runs_are_kept_once(db_url: str) -> None:
    """Resources written between an interrupted run and its resumption end with a fresh run's rows."""
    store = Store(db_url)
    _load(store, observations=8)
    with pytest.raises(_Crash):
        reindex(store.engine, batch_size=2, on_rows=_crash_after(2))  # done: gone, o000..o002
    store.update("Observation", "o001", observation("o001", "Patient/p2"))  # behind the cursor
    store.update("Observation", "o006", observation("o006", "Patient/p2"))  # ahead of it
    store.update("Observation", "o0015", observation("o0015", "Patient/p1"))  # new, behind it
    store.delete("Observation", "o004")
    assert reindex(store.engine, batch_size=2).resources == 7  # o003, o005..o007 and the Patients
    resumed = index_snapshot(store)
    assert reindex(store.engine, restart=True).resources == 11  # 8 live Observations, 3 Patients
    assert index_snapshot(store) == resumed
    assert _ids(store, [("subject", "Patient/p2")]) == ["o001", "o002", "o005", "o006"]
    store.close()


def _write_while(running: threading.Event, store: Store, written: list[str]) -> None:
    """Update, create (20) and delete Observations on both sides of the cursor: 60 writes at most."""
    i = 0
    while running.is_set() and i < 60:
        res_id = f"o{(i * 7) % 40:03d}" if i % 3 else f"o{i:03d}w"
        try:
            if i % 5 == 4:
                store.delete("Observation", res_id)
            else:
                store.update("Observation", res_id, observation(res_id, f"Patient/p{i % 3}"))
            written.append(res_id)
        except (VersionConflict, StoreBusy, ResourceNotFound, ResourceGone):
            pass  # the page held the row or the lock (a client would retry), or nothing to delete
        i += 1


def test_writes_during_a_resumed_run_are_kept_once(db_url: str) -> None:
    """Writes racing the pages of a resumed run end with exactly the rows a fresh run gives."""
    store = Store(db_url)
    _load(store, observations=40)
    with pytest.raises(_Crash):
        reindex(store.engine, batch_size=2, on_rows=_crash_after(5))
    running, written = threading.Event(), []
    running.set()
    writer = threading.Thread(target=_write_while, args=(running, store, written))
    writer.start()
    try:
        resumed = reindex(store.engine, batch_size=2, on_rows=lambda n: time.sleep(0.01))
    finally:
        running.clear()
        writer.join(timeout=60)
    after_resume = index_snapshot(store)
    fresh = reindex(store.engine, batch_size=2, restart=True)
    assert written and fresh.rows_after == sum(map(len, after_resume.values()))
    assert index_snapshot(store) == after_resume
    assert resumed.pages <= fresh.pages - 5  # the 5 pages done before the crash were not walked again
    store.close()


def test_reindex_of_every_type_removes_rows_of_types_with_no_resource(db_url: str) -> None:
    """Index rows of a type with no resource row (e.g. purged) were left unless named with --type."""
    store = Store(db_url)
    _load(store)
    fresh = index_snapshot(store)
    token = next(t for t in INDEX_TABLES if t.name == "idx_token")
    string = next(t for t in INDEX_TABLES if t.name == "idx_string")
    with store.engine.begin() as conn:
        for res_type, res_id in (("Basic", "b1"), ("Basic", "b2"), ("LegacyType", "l1")):
            conn.execute(sa.insert(token).values(res_type=res_type, res_id=res_id, param="code", code="x"))
        conn.execute(sa.insert(string).values(res_type="Basic", res_id="b1", param="x", norm="n", exact="n"))
    assert reindex(store.engine, ["Patient"]).orphan_rows == 0  # a run of named types sweeps nothing
    assert index_snapshot(store) != fresh
    result = reindex(store.engine)
    assert (result.orphan_rows, result.orphan_types) == (4, ["Basic", "LegacyType"])
    assert index_snapshot(store) == fresh
    with store.engine.begin() as conn:
        conn.execute(sa.insert(token).values(res_type="Basic", res_id="b1", param="code", code="x"))
    done = _rhip("db", "reindex", "--database-url", db_url)
    assert done.returncode == 0, done.stderr
    assert "removed 1 index rows of 1 types with no stored resource: Basic" in done.stdout
    assert index_snapshot(store) == fresh
    store.close()


def test_a_page_keeps_the_rows_of_a_resource_created_after_it_was_read(db_url: str) -> None:
    """A resource created in a page's id range after the page was read (PostgreSQL) keeps its rows."""
    from rhip.store.reindex import _delete_range

    store = Store(db_url)
    for res_id in ("o0", "o1", "o2"):
        store.update("Observation", res_id, observation(res_id, "Patient/p0"))
    token = next(t for t in INDEX_TABLES if t.name == "idx_token")
    with store.engine.begin() as conn:
        conn.execute(sa.insert(token).values(res_type="Observation", res_id="o1x", param="status", code="x"))
        _delete_range(conn, "Observation", "", "o2", ["o0", "o2"])  # the page as read before o1 came
    left = {r for r in index_snapshot(store)["idx_token"] if r[0] == "Observation"}
    assert {r[1] for r in left} == {"o1"}
    store.close()


def test_a_second_reindex_is_refused_while_one_runs_and_a_killed_run_frees_the_database(
    db_url: str, tmp_path: Path
) -> None:
    """Two runs shared one cursor, each moving it past pages the other had not walked; the second
    is now refused at once, and a run killed with kill -9 leaves no stale lock behind."""
    from rhip.store.reindex_lock import REFUSAL

    store = Store(db_url, fields=crypt_for(tmp_path))
    _load(store, observations=60)
    fresh = index_snapshot(store)
    slower = _SLOW_REINDEX.replace("time.sleep(0.05)", "time.sleep(1)")  # still running when checked
    child = subprocess.Popen([sys.executable, "-c", slower, db_url], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "page\n"
        refused = _rhip("db", "reindex", "--database-url", db_url)
        assert refused.returncode == 2 and REFUSAL in refused.stderr, refused.stderr
        with pytest.raises(InvalidRequest, match="another rhip db reindex is running"):
            reindex(store.engine)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    result = _reindex_once_freed(store)
    assert 0 < result.resources < 64  # resumed what the killed run left
    assert index_snapshot(store) == fresh
    store.close()


def _reindex_once_freed(store: Store, seconds: float = 10) -> Any:
    """Reindex as soon as the killed run's lock is gone: PostgreSQL ends a killed client's session
    (and its advisory lock) when it notices the closed socket, a moment after the kill, not at it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return reindex(store.engine)
        except InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
