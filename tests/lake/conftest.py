"""Lake fixtures (the shared Spark session lives in tests/conftest.py).

Also prints the SQL-on-FHIR v2 conformance summary ("N passed, M failed" per engine) at the end of
the run, so CI logs show the official-suite result without digging through test ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

_CONFORMANCE: Counter[tuple[str, str]] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_lake_conformance.py::test_conformance" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        engine = "spark" if report.nodeid.endswith("-spark]") else "duckdb"
        _CONFORMANCE[(engine, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    engines = sorted({engine for engine, _ in _CONFORMANCE})
    for engine in engines:
        passed = _CONFORMANCE[(engine, "passed")]
        failed = _CONFORMANCE[(engine, "failed")]
        skipped = _CONFORMANCE[(engine, "skipped")]
        terminalreporter.write_line(
            f"SQL-on-FHIR v2 conformance ({engine}): {passed} passed, {failed} failed"
            + (f", {skipped} skipped" if skipped else "")
        )
