"""The official SQL-on-FHIR v2 test suite, case by case, on DuckDB and on Spark local mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rhip.lake.conformance import applicable, load_suite, run_case
from rhip.lake.engine import DuckDBEngine, Engine, SparkEngine

SUITE_DIR = Path(__file__).parent.parent / "data" / "sql-on-fhir-v2"
SUITE = {name: content for name, content in load_suite(SUITE_DIR) if applicable(content)}
CASES = [(name, i) for name, content in SUITE.items() for i in range(len(content["tests"]))]
IDS = [f"{name[:-5]}:{SUITE[name]['tests'][i]['title']}" for name, i in CASES]

_loaded: dict[int, str] = {}


def _engine_for(engine: Engine, name: str) -> Engine:
    if _loaded.get(id(engine)) != name:
        engine.load_resources(SUITE[name]["resources"])
        _loaded[id(engine)] = name
    return engine


@pytest.fixture(scope="module")
def duckdb_engine() -> Any:
    engine = DuckDBEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def spark_engine(spark_session: Any) -> SparkEngine:
    return SparkEngine(spark_session)


@pytest.mark.parametrize(
    "engine_name",
    ["duckdb", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.xdist_group("lake_spark")])],
)
@pytest.mark.parametrize(("file", "index"), CASES, ids=IDS)
def test_conformance(engine_name: str, file: str, index: int, request: pytest.FixtureRequest) -> None:
    engine = request.getfixturevalue(f"{engine_name}_engine")
    case = SUITE[file]["tests"][index]
    result = run_case(_engine_for(engine, file), file, case)
    assert result.passed, result.detail


def test_suite_is_complete() -> None:
    """The copied suite still holds every file and case the upstream suite has for R4."""
    assert len(SUITE) == 22
    assert len(CASES) == 134
