"""The bulk path used by ingest: counts, idempotency, versions and index rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from rhip.errors import InvalidRequest
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store, fieldcrypt, indexing, write_transaction
from rhip.store.bulk import encode_resource, prepare, prepare_resource, write_batch
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.index_schema import idx_string, idx_token
from rhip.store.meta import format_instant, stamp
from rhip.store.ops import dumps


def _patients(n: int, family: str = "Wang", start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": f"p{i}",
            "name": [{"family": family}],
            "gender": "female" if i % 2 else "male",
        }
        for i in range(start, start + n)
    ]


def _index_count(store: Store, table: Any, res_id: str) -> int:
    with store.engine.connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.res_id == res_id)
        return int(conn.execute(stmt).scalar_one())


def test_bulk_create_then_idempotent(store: Store) -> None:
    first = store.bulk_write(_patients(25), batch_size=10)
    assert (first.created, first.updated, first.unchanged, first.batches) == (25, 0, 0, 3)
    assert first.index_rows > 25
    again = store.bulk_write(_patients(25), batch_size=10)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 25)
    assert store.history("Patient").total == 25
    assert store.read("Patient", "p3")["meta"]["versionId"] == "1"


def test_bulk_updates_changed_only(store: Store) -> None:
    store.bulk_write(_patients(10))
    changed = _patients(10)
    changed[4]["name"] = [{"family": "Li"}]
    changed.append({"resourceType": "Patient", "id": "extra", "gender": "other"})
    result = store.bulk_write(changed)
    assert (result.created, result.updated, result.unchanged) == (1, 1, 9)
    body = store.read("Patient", "p4")
    assert body["meta"]["versionId"] == "2" and body["name"] == [{"family": "Li"}]
    assert [e.method for e in store.history("Patient", "p4").entries] == ["PUT", "POST"]
    assert store.search("Patient", [("family", "Li")]).total == 1
    assert store.search("Patient", [("family", "Wang")]).total == 9
    assert _index_count(store, idx_string, "p4") == _index_count(store, idx_string, "p5")


def test_bulk_ignores_incoming_meta_stamps(store: Store) -> None:
    store.bulk_write(_patients(3))
    restamped = _patients(3)
    for body in restamped:
        body["meta"] = {"versionId": "17", "lastUpdated": "2020-01-01T00:00:00Z"}
    assert store.bulk_write(restamped).unchanged == 3


def test_bulk_revives_deleted_and_assigns_ids(store: Store) -> None:
    store.bulk_write(_patients(2))
    store.delete("Patient", "p0")
    result = store.bulk_write([*_patients(1), {"resourceType": "Observation", "status": "final", "code": {}}])
    assert (result.created, result.updated) == (1, 1)
    assert store.read("Patient", "p0")["meta"]["versionId"] == "3"
    observations = list(store.iter_current("Observation"))
    assert len(observations) == 1 and observations[0][0] is not None
    assert store.search("Patient", [("gender", "male")]).total == 1


def test_bulk_duplicate_ids_later_wins(store: Store) -> None:
    first, second = _patients(1, "A")[0], _patients(1, "B")[0]
    result = store.bulk_write([first, second])
    assert (result.created, result.updated, result.batches) == (1, 1, 2)
    assert store.read("Patient", "p0")["name"] == [{"family": "B"}]
    assert _index_count(store, idx_token, "p0") == 1  # gender only, not duplicated


def test_bulk_rejects_bad_resources(store: Store) -> None:
    with pytest.raises(InvalidRequest) as exc:
        store.bulk_write([*_patients(2), {"resourceType": "Patient", "id": "bad id"}], batch_size=2)
    assert "resources[2]" in exc.value.diagnostics
    assert store.count("Patient") == 2  # the first batch stays written
    with pytest.raises(InvalidRequest):
        store.bulk_write(_patients(1), batch_size=0)


def test_bulk_large_batch(store: Store) -> None:
    result = store.bulk_write(_patients(3000), batch_size=2000)
    assert (result.created, result.batches) == (3000, 2)
    assert store.count("Patient") == 3000
    assert store.search("Patient", [("gender", "female")]).total == 1500
    changed = _patients(3000, "Zhao")
    assert store.bulk_write(changed).updated == 3000
    assert store.search("Patient", [("family", "Wang")]).total == 0


def test_bulk_rechecks_versions_changed_after_the_pre_read(store: Store) -> None:
    """A write between the pre-read and the batch transaction must not be lost or duplicated."""
    store.bulk_write(_patients(2))
    bodies = _patients(2)
    bodies[1]["gender"] = "other"
    batch = [prepare_resource(body, rows=False) for body in bodies]
    prepared = prepare(store.engine, batch)
    assert [item.unchanged for item in prepared] == [True, False]
    store.update("Patient", "p0", {**_patients(1, "Changed")[0]})  # p0 no longer equals the input
    store.update("Patient", "p1", {**_patients(2)[1], "gender": "other"})  # p1 now equals the input
    with write_transaction(store.engine) as conn:
        counts = write_batch(conn, prepared)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 1, 1)
    assert store.read("Patient", "p0")["name"] == [{"family": "Wang"}]
    assert store.read("Patient", "p0")["meta"]["versionId"] == "3"
    assert store.read("Patient", "p1")["meta"]["versionId"] == "2"
    assert store.search("Patient", [("family", "Changed")]).total == 0


def test_bulk_on_in_memory_sqlite() -> None:
    """In-memory SQLite has one shared connection, so batches are prepared inline."""
    store = Store("sqlite://")
    try:
        assert store.bulk_write(_patients(30), batch_size=7).created == 30
        assert store.bulk_write(_patients(30), batch_size=7).unchanged == 30
        assert store.search("Patient", [("gender", "male")]).total == 15
    finally:
        store.close()


def _samples() -> list[dict[str, Any]]:
    """Every FHIR R4 example and Synthea bulk resource of the test data, with and without ``meta``."""
    data = Path(__file__).resolve().parents[1] / "data"
    out: list[dict[str, Any]] = []
    for path in sorted((data / "fhir-r4-examples").glob("*.json")):
        res = orjson.loads(path.read_bytes())
        if isinstance(res, dict) and res.get("resourceType") not in (None, "Bundle") and res.get("id"):
            out.append(res)
    for path in sorted((data / "synthea-bulk-ndjson").glob("*.ndjson")):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines()[:40] if line.strip())
    out += [{**r, "meta": {"source": "x#1", "profile": ["urn:p"]}} for r in out[:30]]
    out += [{**r, "meta": {}} for r in out[:5]]
    return out


@pytest.mark.parametrize("encrypt", [False, True])
def test_encoded_resources_store_the_bytes_and_rows_of_the_plain_path(tmp_path: Path, encrypt: bool) -> None:
    """encode_resource (an ingest producer's form) gives what write_batch builds from the dict.

    Body bytes byte for byte (with encryption: the same revealed content and the same rows,
    the SM4 tokens differ in their IVs), index rows equal; resources with version stamps in
    ``meta`` are refused (None), as the writer must replace those in place.
    """
    crypt = FieldCrypt(FieldCipher(KeyRing(tmp_path))) if encrypt else fieldcrypt.PLAIN
    samples = _samples()
    assert len(samples) > 150
    persons = 0
    for res in samples:
        encoded = encode_resource(res, crypt)
        assert encoded is not None, res.get("id")
        stored = crypt.protect(res)
        for version, ts in ((1, 1_700_000_000.123), (12, 1_800_000_000.0)):
            expected = dumps(stamp(stored, res["id"], version, ts))
            body = encoded.body(version, format_instant(ts))
            if stored is res:
                assert body == expected
            else:
                persons += 1
                assert crypt.loads(body) == crypt.loads(expected)
        assert encoded.rows == indexing.tuple_rows_for(stored)
        assert encoded.key == (res["resourceType"], res["id"])
        # rows left to the writer: computed from the bytes, they are the rows of the dict
        bare = encode_resource(res, crypt, rows=False)
        assert bare is not None and bare.rows is None
        assert bare.index_rows() == indexing.tuple_rows_for(crypt.protect(res)) == encoded.rows
        assert encoded._replace(rows=None).index_rows() == encoded.rows
    assert persons > 0 if encrypt else persons == 0
    stamped = {**samples[0], "meta": {"versionId": "3"}}
    assert encode_resource(stamped, crypt) is None
    assert encode_resource({**samples[0], "meta": {"lastUpdated": "2020-01-01T00:00:00Z"}}, crypt) is None


@pytest.mark.parametrize("rows", [True, False])
def test_encoded_resources_are_written_updated_and_found_unchanged(store: Store, rows: bool) -> None:
    """Encoded resources go through prepare/write_batch like dicts: create, unchanged, update;
    with their index rows or without (``rows=False``: the writer computes them from the bytes)."""
    crypt = fieldcrypt.of(store.engine)

    def write(bodies: list[dict[str, Any]]) -> Any:
        batch = [encode_resource(b, crypt, rows=rows) for b in bodies]
        assert all(b is not None for b in batch)
        prepared = prepare(store.engine, [b for b in batch if b is not None])
        with write_transaction(store.engine) as conn:
            return write_batch(conn, prepared)

    first = write(_patients(6))
    assert (first.created, first.updated, first.unchanged) == (6, 0, 0)
    again = write(_patients(6))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 6)
    changed = write(_patients(6, family="Li"))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 6, 0)
    assert store.read("Patient", "p3")["meta"]["versionId"] == "2"
    assert store.read("Patient", "p3")["name"] == [{"family": "Li"}]
    assert _index_count(store, idx_string, "p3") > 0
    assert _family_rows(store, "p3") == ["li"]
    # found unchanged by the pre-read (no rows computed), then changed by another writer before
    # the write: written after all, with the rows of its bytes
    again_li = [encode_resource(b, crypt, rows=rows) for b in _patients(2, family="Li")]
    stale = prepare(store.engine, [e for e in again_li if e is not None])
    assert all(item.unchanged for item in stale)
    store.bulk_write(_patients(2, family="Zhao"))
    with write_transaction(store.engine) as conn:
        result = write_batch(conn, stale)
    assert (result.created, result.updated, result.unchanged) == (0, 2, 0)
    assert store.read("Patient", "p1")["name"] == [{"family": "Li"}]
    assert _family_rows(store, "p1") == ["li"]


def _family_rows(store: Store, res_id: str) -> list[str]:
    """The normalised ``family`` values the index holds for Patient ``res_id``."""
    t = idx_string
    with store.engine.connect() as conn:
        stmt = select(t.c.norm).where(t.c.res_id == res_id, t.c.param == "family")
        return [str(v) for v in conn.execute(stmt).scalars()]


def _stored_rows(store: Store, res_type: str, res_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a resource has in the version and index tables, its id replaced by ``ID``."""
    from rhip.store.index_schema import INDEX_TABLES
    from rhip.store.schema import resource_version

    rows: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for table in [resource_version, *INDEX_TABLES]:
            skip = {"res_id", "last_updated", "body"}
            columns = [c for c in table.c if c.name not in skip]
            stmt = select(*columns).where(table.c.res_type == res_type, table.c.res_id == res_id)
            rows[table.name] = sorted(tuple(str(v) for v in row) for row in conn.execute(stmt))
    return rows


@pytest.mark.parametrize("encrypt", [False, True])
def test_create_new_stores_and_answers_what_single_creates_do(tmp_path: Path, encrypt: bool) -> None:
    """Store.create_new (the API's group commit) is N Store.create calls in one transaction.

    Over the test corpus: the answer has a new id, version 1 and the body sent; reads give the
    answer back; the history row (POST, version 1) and every index row equal those of a single
    create of the same resource (with and without field encryption).
    """
    crypt = FieldCrypt(FieldCipher(KeyRing(tmp_path / "keys"))) if encrypt else fieldcrypt.PLAIN
    grouped = Store(f"sqlite:///{tmp_path / 'grouped.sqlite'}", fields=crypt)
    single = Store(f"sqlite:///{tmp_path / 'single.sqlite'}", fields=crypt)
    samples = _samples()[:120]
    results = grouped.create_new(samples)
    for res, result in zip(samples, results, strict=True):
        alone = single.create(res, assign_id=True)
        assert result.created and result.outcome == "created" and result.version_id == 1
        grouped_id, single_id = result.res_id, alone.res_id
        assert grouped_id != res["id"]
        got = grouped.read(res["resourceType"], grouped_id)
        assert got == result.resource
        assert got["meta"]["lastUpdated"] == format_instant(result.last_updated)
        for answer in (result.resource, alone.resource):
            answer.pop("id")
            assert answer["meta"].pop("versionId") == "1"
            answer["meta"].pop("lastUpdated")
        assert result.resource == alone.resource
        res_type = res["resourceType"]
        assert _stored_rows(grouped, res_type, grouped_id) == _stored_rows(single, res_type, single_id)
    grouped.close()
    single.close()


def test_create_new_writes_nothing_when_an_id_exists(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id already taken rolls the whole group back (VersionConflict), nothing is overwritten."""
    from rhip.errors import VersionConflict
    from rhip.store import bulk

    first = store.create({"resourceType": "Patient", "name": [{"family": "Kept"}]})
    ids = iter(["fresh-1", first.res_id])
    monkeypatch.setattr(bulk, "new_id", lambda: next(ids))
    with pytest.raises(VersionConflict):
        store.create_new([{"resourceType": "Patient"}, {"resourceType": "Patient", "gender": "male"}])
    assert store.read("Patient", first.res_id) == first.resource
    assert store.count("Patient") == 1


def test_sqlite_binds_nulls_blobs_and_booleans_directly_and_unchanged(tmp_path: Path) -> None:
    """NULLs, bodies and flags skip the sqlite3 module's failing adaptation look-ups, stored as before.

    Without an adapter for their type the module looks for ``__adapt__`` on its protocol type for
    every such parameter (raising and clearing an AttributeError each time) before binding the value
    as it is; the index rows of a bulk load hold many NULLs and every body is a blob.
    """
    import sqlite3

    store = Store(f"sqlite:///{tmp_path / 'bind.sqlite'}")
    try:
        for kind in (type(None), bytes, bool):
            assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters, kind
        store.bulk_write(_patients(3))
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.execute("CREATE TEMP TABLE bound (a, b, c, d)")
            raw.execute("INSERT INTO bound VALUES (?, ?, ?, ?)", (None, b"\x00body", True, False))
            kinds = raw.execute("SELECT typeof(a), b, typeof(b), c, typeof(c), d FROM bound").fetchone()
            deleted = {r[0] for r in raw.execute("SELECT typeof(deleted) FROM resource")}
            bodies = {r[0] for r in raw.execute("SELECT typeof(body) FROM resource_version")}
        assert kinds == ("null", b"\x00body", "blob", 1, "integer", 0)
        assert deleted == {"integer"} and bodies == {"blob"}
    finally:
        store.close()
