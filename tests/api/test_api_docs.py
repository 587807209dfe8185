"""docs/api.md is a contract: every advertised interaction, operation and API-side parameter is in it."""

from __future__ import annotations

from pathlib import Path

from rhip.api.capability import OPERATIONS, SYSTEM_INTERACTIONS, TYPE_INTERACTIONS
from rhip.api.routes_search import Paging

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")


def test_every_interaction_and_operation_is_documented() -> None:
    missing = [code for code in (*TYPE_INTERACTIONS, *SYSTEM_INTERACTIONS) if f"| {code} |" not in DOC]
    missing += [f"${name}" for name in OPERATIONS if f"${name}" not in DOC]
    assert missing == []


def test_api_side_search_parameters_are_documented() -> None:
    assert Paging.__doc__
    for name in ("_count", "_offset", "_summary", "_elements", "_format"):
        assert f"| `{name}` |" in DOC, name


def test_every_error_status_is_documented() -> None:
    for status in (400, 401, 403, 404, 405, 406, 409, 410, 412, 415, 422, 501):
        assert f"| {status} " in DOC or f"| {status} /" in DOC or f"/ {status} |" in DOC, status
