"""Rebuilding the search index from stored bodies (rhip.store.reindex, ``rhip db reindex``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_store_fieldcrypt import crypt_for, observation, patient

from rhip.errors import InvalidRequest
from rhip.store import Store
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.reindex import reindex

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


def test_reindex_killed_mid_run_is_finished_by_running_again(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))
    _load(store, observations=60)
    fresh = index_snapshot(store)
    with store.engine.begin() as conn:
        for table in INDEX_TABLES:
            conn.execute(sa.delete(table))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_REINDEX, db_url], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(5):
        assert child.stdout.readline() == "page\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    partial = index_snapshot(store)
    assert 0 < sum(map(len, partial.values())) < sum(map(len, fresh.values()))
    done = _rhip("db", "reindex", "--database-url", db_url, "--batch-size", "7")
    assert done.returncode == 0, done.stderr
    assert "reindexed 63 resources of 2 types (1 deleted, no rows)" in done.stdout
    assert index_snapshot(store) == fresh
    refused = _rhip("db", "reindex", "--database-url", db_url, "--type", "Patiant")
    assert refused.returncode == 2 and "unknown resource type 'Patiant'" in refused.stderr
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
