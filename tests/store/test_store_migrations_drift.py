"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL.

A table, column or index changed in code without a new revision fails here, and so does a
revision whose operations differ from what ``create_all`` of the code's metadata builds (types,
nullability, keys, indexes, SERIAL defaults and, on PostgreSQL, collations).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from rhip.mpi.schema import mpi_lock
from rhip.security.schema import GENESIS, audit_head
from rhip.store.engine import make_engine
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.migrations import MIGRATIONS_DIR, downgrade, head_revision, platform_metadata, upgrade
from rhip.store.schema import METADATA, resource, resource_version
from rhip_testkit import new_pg_database


@pytest.fixture
def second_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """Another empty database on the same back end as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.sqlite'}"
        return
    with new_pg_database("rhip_t2") as url:
        yield url


def schema_snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every table's columns, keys, indexes and unique constraints as the database reports them."""
    insp = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        }
    if engine.dialect.name == "postgresql":
        out["collations"] = _pg_collations(engine)
    return out


def _pg_collations(engine: sa.Engine) -> list[tuple[str, str, str]]:
    sql = sa.text(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND collation_name IS NOT NULL ORDER BY 1, 2"
    )
    with engine.connect() as conn:
        return [(str(t), str(c), str(n)) for t, c, n in conn.execute(sql)]


def metadata_diff(engine: sa.Engine) -> list[Any]:
    """Alembic's autogenerate comparison of the database with every module's metadata."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, platform_metadata()))


def test_migrated_database_matches_every_module_metadata(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert metadata_diff(engine) == []
        declared = {name for md in platform_metadata() for name in md.tables}
        assert declared <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_diff_notices_a_table_the_migrations_do_not_create(db_url: str) -> None:
    """The comparison is not blind: a table declared in code but never migrated shows up."""
    engine = make_engine(db_url)
    extra = sa.MetaData()
    sa.Table("not_migrated", extra, sa.Column("id", sa.Integer, primary_key=True))
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            diff = compare_metadata(context, [*platform_metadata(), extra])
        assert len(diff) == 1
        assert (diff[0][0], diff[0][1].name) == ("add_table", "not_migrated")
    finally:
        engine.dispose()


def test_migrations_build_what_create_all_builds(db_url: str, second_url: str) -> None:
    migrated, created = make_engine(db_url), make_engine(second_url)
    try:
        upgrade(migrated)
        for metadata in platform_metadata():
            metadata.create_all(created)
        assert schema_snapshot(migrated) == schema_snapshot(created)
    finally:
        migrated.dispose()
        created.dispose()


def _stamp(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        MigrationContext.configure(conn).stamp(ScriptDirectory(str(MIGRATIONS_DIR)), revision)


def build_legacy_database(engine: sa.Engine, variant: str) -> None:
    """A database as the code before explicit migrations left it, recorded at revision 0001.

    ``store``: 0001's ``create_all`` ran with no module imported. ``store_metadata``: it ran after
    ingest, quality and the MPI had registered their tables on the store's metadata (no seed rows).
    ``everything``: every module's ``ensure_schema`` ran too (tables and seed rows), and the
    database holds data. Built from the code's metadata, i.e. the tables as of revision 0005.
    """
    if variant == "store":
        METADATA.create_all(engine, tables=[resource, resource_version, *INDEX_TABLES])
    else:
        platform_metadata()
        METADATA.create_all(engine)
    if variant == "everything":
        for metadata in platform_metadata():
            metadata.create_all(engine, checkfirst=True)
        with engine.begin() as conn:
            conn.execute(sa.insert(mpi_lock).values(id=1, n=7))
            conn.execute(sa.insert(audit_head).values(id=1, seq=3, hash="ab" * 32))
            conn.execute(
                sa.insert(resource).values(
                    res_type="Patient", res_id="p1", version_id=1, last_updated=1.0, deleted=False, body=b"{}"
                )
            )
    _stamp(engine, "0001")


@pytest.mark.parametrize("variant", ["store", "store_metadata", "everything"])
def test_legacy_database_upgrades_to_the_same_schema(db_url: str, second_url: str, variant: str) -> None:
    """Databases built by create_all/ensure_schema and stamped 0001 upgrade cleanly and keep their rows."""
    legacy, fresh = make_engine(db_url), make_engine(second_url)
    try:
        build_legacy_database(legacy, variant)
        assert upgrade(legacy) == head_revision()
        upgrade(fresh)
        assert schema_snapshot(legacy) == schema_snapshot(fresh)
        assert metadata_diff(legacy) == []
        with legacy.connect() as conn:
            locks = conn.execute(sa.select(mpi_lock.c.id, mpi_lock.c.n)).all()
            heads = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).all()
            patients = conn.execute(sa.select(sa.func.count()).select_from(resource)).scalar_one()
        if variant == "everything":
            assert (locks, heads, patients) == ([(1, 7)], [(3, "ab" * 32)], 1)
        else:
            assert (locks, heads, patients) == ([(1, 0)], [(0, GENESIS)], 0)
    finally:
        legacy.dispose()
        fresh.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        before = schema_snapshot(engine)
        assert downgrade(engine, "base") is None
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        assert upgrade(engine) == head_revision()
        assert schema_snapshot(engine) == before
        assert metadata_diff(engine) == []
        with engine.connect() as conn:
            assert conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).all() == [(0, GENESIS)]
    finally:
        engine.dispose()


def test_each_revision_downgrades_one_step(db_url: str) -> None:
    """Walking down one revision at a time removes that revision's tables, or undoes its column changes."""
    engine = make_engine(db_url)
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    try:
        upgrade(engine)
        snapshot = schema_snapshot(engine)
        for rev in script.walk_revisions():
            assert downgrade(engine, "-1") == rev.down_revision
            now = schema_snapshot(engine)
            assert set(now) <= set(snapshot), f"downgrading {rev.revision} created a table"
            assert now != snapshot, f"downgrading {rev.revision} changed nothing"
            snapshot = now
    finally:
        engine.dispose()
