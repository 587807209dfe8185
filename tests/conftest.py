"""Shared fixtures: real back ends, created fresh for the run and dropped after.

``db_url`` is parametrised over the embedded SQLite default and the PostgreSQL server on this
machine, so one test body proves both back ends. Each pytest worker gets its own PostgreSQL
database, created at the start and dropped at the end; no test depends on what an earlier run left.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhip_testkit import new_pg_database

DATA_DIR = Path(__file__).parent / "data"

# Keys and other files a test's store creates under the default data directory go to a temporary
# folder, never into the working tree (tests that need a particular data_dir still set their own).
os.environ.setdefault("RHIP_DATA_DIR", tempfile.mkdtemp(prefix="rhip-test-data-"))


@pytest.fixture(autouse=True)
def _settings_from_this_tests_environment() -> Iterator[None]:
    """``get_settings`` is cached per process: a test that sets ``RHIP_*`` (monkeypatch.setenv)
    must see its own values, and the next test must not see them."""
    from rhip.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for this worker, as a SQLAlchemy psycopg URL; dropped after."""
    with new_pg_database("rhip_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty store: a SQLite file in tmp_path or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL database for one test; dropped after."""
    with new_pg_database("rhip_t") as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every Spark test in one worker: one JVM per run instead of one per worker."""
    for item in items:
        if item.get_closest_marker("spark") is not None:
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local[1] Spark session for the lake and the identity layer (with Splink's UDF jar)."""
    pytest.importorskip("pyspark")
    from splink.backends.spark import similarity_jar_location

    from rhip.lake.engine import make_spark_session

    jars = [similarity_jar_location()]
    session = make_spark_session("rhip-tests", log_level="OFF", progress=False, jars=jars)
    session.sparkContext.setCheckpointDir(str(Path(tempfile.mkdtemp(prefix="rhip-spark-"))))
    yield session
    session.stop()


#: SQL-on-FHIR v2 official suite outcomes per engine, summed on the controller (xdist forwards
#: every report here), printed as "N passed, M failed" at the end of the run.
_CONFORMANCE: Counter[tuple[str, str]] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_lake_conformance.py::test_conformance" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        engine = "spark" if report.nodeid.endswith("-spark]") else "duckdb"
        _CONFORMANCE[(engine, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for engine in sorted({engine for engine, _ in _CONFORMANCE}):
        passed = _CONFORMANCE[(engine, "passed")]
        failed = _CONFORMANCE[(engine, "failed")]
        skipped = _CONFORMANCE[(engine, "skipped")]
        terminalreporter.write_line(
            f"SQL-on-FHIR v2 conformance ({engine}): {passed} passed, {failed} failed"
            + (f", {skipped} skipped" if skipped else "")
        )
