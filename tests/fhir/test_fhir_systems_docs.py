"""docs/systems.md is a contract: every constant of rhip.fhir.systems is listed with its exact URI."""

from __future__ import annotations

import inspect
from pathlib import Path

from rhip.config import get_settings
from rhip.fhir import systems

DOC = Path(__file__).resolve().parents[2] / "docs" / "systems.md"


def _documented(value: str) -> str:
    base = get_settings().identifier_base.rstrip("/")
    return value.replace(base, "{base}", 1) if value.startswith(base) else value


def test_every_constant_is_documented_with_its_uri() -> None:
    text = DOC.read_text(encoding="utf-8")
    constants = {
        name: value for name, value in vars(systems).items() if name.isupper() and isinstance(value, str)
    }
    assert len(constants) >= 20
    missing = [name for name in constants if f"| `{name}` |" not in text]
    assert not missing, f"constants missing from docs/systems.md: {missing}"
    wrong = [
        name for name, value in constants.items() if f"| `{name}` | `{_documented(value)}` |" not in text
    ]
    assert not wrong, f"constants whose URI differs in docs/systems.md: {wrong}"


def test_every_system_function_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    functions = [
        name
        for name, value in vars(systems).items()
        if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == systems.__name__
    ]
    assert "facility_card_system" in functions and "local_code_system" in functions
    missing = [name for name in functions if f"`{name}(" not in text]
    assert not missing, f"functions missing from docs/systems.md: {missing}"
