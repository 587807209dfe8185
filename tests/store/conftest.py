"""Fixtures of the store tests: an open Store on each back end of ``db_url``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rhip.store import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A freshly migrated, empty store on SQLite or PostgreSQL."""
    s = Store(db_url)
    try:
        yield s
    finally:
        s.close()
