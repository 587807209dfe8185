"""ASCII digits: what int() reads the same everywhere."""

from __future__ import annotations

import pytest

from rhip.fhir.primitives import is_ascii_digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", True),
        ("2026", True),
        ("", False),
        ("¹", False),
        ("٣", False),
        ("1 ", False),
        ("-1", False),
        ("1.0", False),
    ],
)
def test_only_ascii_digits_count(text: str, expected: bool) -> None:
    assert is_ascii_digits(text) is expected
