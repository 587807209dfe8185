"""Fixtures for ingest tests: a real store (SQLite or PostgreSQL) and a pipeline with quality rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhip.ingest import runner  # noqa: F401 (registers every mapper)
from rhip.ingest.pipeline import Pipeline
from rhip.quality.collector import QualityCollector
from rhip.store import Store

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An empty store on each back end."""
    s = Store(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """An empty SQLite store (for tests that do not need both back ends)."""
    s = Store(f"sqlite:///{tmp_path / 'ingest.sqlite'}")
    try:
        yield s
    finally:
        s.close()


def make_pipeline(store: Any, **kw: Any) -> Pipeline:
    """A pipeline with the quality collector attached."""
    return Pipeline(store, observers=[QualityCollector(store.engine)], **kw)


@pytest.fixture
def pipeline(store: Store) -> Pipeline:
    return make_pipeline(store)


@pytest.fixture
def sqlite_pipeline(sqlite_store: Store) -> Pipeline:
    return make_pipeline(sqlite_store)


@pytest.fixture(autouse=True)
def _no_leaked_patient_sinks() -> Iterator[None]:
    """A test that starts a server or the CLI installs the MPI's sink process-wide; later tests of
    the same worker must not link their Patients through it (golden Patients would be counted).

    Sinks left by tests of other folders that ran earlier on the worker are set aside for the
    test and put back after it; any sink the test itself installed is removed.
    """
    from rhip.ingest.hooks import patient_sinks, register_patient_sink, unregister_patient_sink

    before = list(patient_sinks())
    for sink in before:
        unregister_patient_sink(sink)
    yield
    for sink in patient_sinks():
        unregister_patient_sink(sink)
    for sink in before:
        register_patient_sink(sink)


@pytest.fixture(scope="session")
def generated_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated region (30 residents, two wearables): valid input of every connector.

    Generated in a child process, so the generator's global state stays out of the test process.
    """
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("fuzz-region")
    params = folder / "params.yaml"
    params.write_text("wearable:\n  share_of_chronic: 1.0\n  max_devices: 2\n  days: 1\n", encoding="utf-8")
    region = folder / "region"
    args = ["generate", "--out", str(region), "--residents", "30", "--years", "1", "--params", str(params)]
    command = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return region


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Any]:
    """Fresh stores (with the shipped ConceptMaps) for each fuzz example: SQLite, or PostgreSQL
    when ``RHIP_FUZZ_DB=postgresql``."""
    from fuzzing import FUZZ_DB, PgStoreFactory, StoreFactory

    from rhip_testkit import PG_ADMIN_URL, pg_available

    if FUZZ_DB == "sqlite":
        factory: Any = StoreFactory(tmp_path)
    elif FUZZ_DB == "postgresql":
        if not pg_available():
            pytest.skip("PostgreSQL not reachable")
        factory = PgStoreFactory(PG_ADMIN_URL)
    else:
        raise ValueError(f"RHIP_FUZZ_DB must be sqlite or postgresql, not {FUZZ_DB!r}")
    try:
        yield factory
    finally:
        factory.close()
