"""Run SQL-on-FHIR v2 conformance test files against an engine.

The official suite is a set of JSON files, each with resources and cases (a view and either the
expected rows, the expected columns or ``expectError``). Rows compare as an unordered multiset;
numbers compare with a small tolerance because decimals travel as floating point. Used by the test
suite and by ``benchmarks``/docs tooling to print per-file results.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhip.errors import RhipError
from rhip.lake.engine import Engine

__all__ = ["CaseResult", "applicable", "load_suite", "run_case"]


@dataclass
class CaseResult:
    """Outcome of one case."""

    file: str
    title: str
    passed: bool
    detail: str = ""


def load_suite(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The suite's files (name, content), skipping the JSON schema, sorted by name."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "tests.schema.json":
            continue
        out.append((path.name, json.loads(path.read_text(encoding="utf-8"))))
    return out


def applicable(suite_file: dict[str, Any]) -> bool:
    """Whether the file applies to FHIR R4 (no fhirVersion, or it lists 4.0.1)."""
    versions = suite_file.get("fhirVersion")
    return not versions or "4.0.1" in versions


def _norm(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return int(value)
        return round(value, 9)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    return str(value)


def _row_key(row: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    return tuple((c, _norm(row.get(c))) for c in columns)


def run_case(engine: Engine, file: str, case: dict[str, Any]) -> CaseResult:
    """Run one case on an engine whose data is already loaded with the file's resources."""
    title = case.get("title", "?")
    try:
        result = engine.run_view(case["view"])
    except RhipError as exc:
        if case.get("expectError"):
            return CaseResult(file, title, True)
        return CaseResult(file, title, False, f"rejected: {exc.diagnostics}")
    except Exception as exc:  # engine-level failures (SQL errors raised by the data checks)
        if case.get("expectError"):
            return CaseResult(file, title, True)
        return CaseResult(file, title, False, f"engine error: {type(exc).__name__}: {str(exc)[:300]}")
    if case.get("expectError"):
        return CaseResult(file, title, False, "expected an error, got rows")
    if "expectColumns" in case:
        ok = result.columns == case["expectColumns"]
        return CaseResult(file, title, ok, "" if ok else f"columns {result.columns}")
    expected = case.get("expect", [])
    columns = result.columns
    want_cols = list(expected[0].keys()) if expected else columns
    if expected and sorted(want_cols) != sorted(columns):
        return CaseResult(file, title, False, f"columns {columns} != {want_cols}")
    got = Counter(_row_key(r, columns) for r in result.rows)
    want = Counter(_row_key(r, columns) for r in expected)
    if got == want:
        return CaseResult(file, title, True)
    return CaseResult(file, title, False, f"rows differ: got {sorted(got.items(), key=str)[:5]}")
