"""Schema migrations: run on open, idempotent on reopen, serialised across concurrent openers."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, inspect
from typer.testing import CliRunner

from rhip.cli import app
from rhip.config import Settings
from rhip.store import Store
from rhip.store.engine import make_engine
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.migrations import current_revision, head_revision, revisions, upgrade
from rhip.store.schema import METADATA


def test_fresh_database_gets_every_table(db_url: str) -> None:
    store = Store(db_url)
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert {"resource", "resource_version", "alembic_version"} <= tables
        assert {t.name for t in INDEX_TABLES} <= tables
        assert set(METADATA.tables) <= tables
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        store.close()


def test_reopen_is_idempotent_and_keeps_data(db_url: str) -> None:
    store = Store(db_url)
    res_id = store.create({"resourceType": "Patient", "gender": "male"}).res_id
    assert upgrade(store.engine) == head_revision()
    store.close()
    again = Store(db_url)
    try:
        assert again.read("Patient", res_id)["gender"] == "male"
        with again.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        again.close()


def test_without_migrate_nothing_is_created(db_url: str) -> None:
    store = Store(db_url, migrate=False)
    try:
        assert "resource" not in inspect(store.engine).get_table_names()
    finally:
        store.close()


def test_concurrent_openers_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            Store(db_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        store.close()


def test_cli_db_upgrade_and_current(db_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["db", "current", "--database-url", db_url])
    assert result.exit_code == 0 and "current: none" in result.output
    result = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert f"revision {head_revision()}, was none" in result.output
    result = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert result.exit_code == 0
    assert f"revision {head_revision()}, was {head_revision()}" in result.output
    result = runner.invoke(app, ["db", "current", "--database-url", db_url])
    assert f"current: {head_revision()}" in result.output
    result = runner.invoke(app, ["db", "history", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line[2:].split()[0] for line in lines] == [rev for rev, _ in revisions()]
    assert lines[-1].startswith(f"* {head_revision()}  ") and sum(line.startswith("*") for line in lines) == 1


def test_from_settings_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=None)
    store = Store.from_settings(settings)
    try:
        store.create({"resourceType": "Patient", "id": "x"})
        assert store.engine.dialect.name == "sqlite"
        assert (tmp_path / "data" / "rhip.sqlite").exists()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(fresh_pg_url: str) -> None:
    store = Store(fresh_pg_url.replace("postgresql+psycopg://", "postgresql://", 1))
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert store.create({"resourceType": "Patient"}).created
    finally:
        store.close()


@pytest.mark.parametrize(
    "module", ["ingest.schema", "quality.schema", "mpi.schema", "security.schema", "surveillance.alerts"]
)
def test_module_ensure_schema_brings_database_to_head_once(db_url: str, module: str) -> None:
    """Each module's ensure_schema migrates an engine no Store opened, then costs no SQL at all."""
    ensure_schema = importlib.import_module(f"rhip.{module}").ensure_schema
    engine = make_engine(db_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        ensure_schema(engine)
        assert statements, "the first call did not look at the database"
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
        statements.clear()
        ensure_schema(engine)
        assert statements == []
    finally:
        engine.dispose()
