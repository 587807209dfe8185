"""The official SQL-on-FHIR v2 test suite, case by case, on DuckDB and on Spark local mode."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rhip.lake.conformance import applicable, load_suite, run_case
from rhip.lake.engine import DuckDBEngine, Engine, SparkEngine, ViewResult

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


class _SparkFileRunner:
    """Runs all cases of one suite file as a single Spark job (one UNION ALL of every view).

    Spark's per-query overhead dominates on tiny data, so the file's views are compiled, unioned
    with their rows serialised by ``to_json`` and evaluated once; a file whose union fails (a case
    that must raise at run time) falls back to one query per case. Results are real Spark output.
    """

    def __init__(self, engine: SparkEngine) -> None:
        self.engine = engine
        self.cache: dict[str, dict[int, Any]] = {}
        self.current: tuple[str, int] | None = None

    def prepare(self, file: str) -> None:
        if file in self.cache:
            return
        self.engine.load_resources(SUITE[file]["resources"])
        results: dict[int, Any] = {}
        parts, params = [], {}
        for i, case in enumerate(SUITE[file]["tests"]):
            try:
                compiled = self.engine.compile(case["view"])
            except Exception as exc:
                results[i] = exc
                continue
            sql = re.sub(r":p([0-9]+)\b", lambda m, i=i: f":c{i}p{m.group(1)}", compiled.sql)
            params.update({f"c{i}{k}": v for k, v in compiled.params.items()})
            parts.append(f"SELECT {i} AS case_, to_json(struct(*)) AS row_ FROM ({sql}) AS q{i}")
            results[i] = ViewResult(compiled.column_names, [])
        if parts:
            try:
                rows = self.engine.spark.sql(" UNION ALL ".join(parts), args=params or None).collect()
            except Exception:
                rows = None
            if rows is None:
                for i, res in list(results.items()):
                    if isinstance(res, ViewResult):
                        try:
                            results[i] = self.engine.run_view(SUITE[file]["tests"][i]["view"])
                        except Exception as exc:
                            results[i] = exc
            else:
                for row in rows:
                    results[row["case_"]].rows.append(json.loads(row["row_"]))
        self.cache[file] = results

    def run_view(self, view: dict[str, Any]) -> ViewResult:
        assert self.current is not None
        result = self.cache[self.current[0]][self.current[1]]
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture(scope="module")
def spark_engine(spark_session: Any) -> _SparkFileRunner:
    return _SparkFileRunner(SparkEngine(spark_session))


@pytest.mark.parametrize(
    "engine_name",
    ["duckdb", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.xdist_group("spark")])],
)
@pytest.mark.parametrize(("file", "index"), CASES, ids=IDS)
def test_conformance(engine_name: str, file: str, index: int, request: pytest.FixtureRequest) -> None:
    engine = request.getfixturevalue(f"{engine_name}_engine")
    case = SUITE[file]["tests"][index]
    if isinstance(engine, _SparkFileRunner):
        engine.prepare(file)
        engine.current = (file, index)
        result = run_case(engine, file, case)  # type: ignore[arg-type]
    else:
        result = run_case(_engine_for(engine, file), file, case)
    assert result.passed, result.detail


def test_suite_is_complete() -> None:
    """The copied suite still holds every file and case the upstream suite has for R4."""
    assert len(SUITE) == 22
    assert len(CASES) == 134
