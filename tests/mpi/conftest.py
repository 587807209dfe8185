"""Fixtures of the MPI tests: a real store (SQLite and PostgreSQL) and hand-made hard cases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.schema import ensure_schema
from rhip.store import Store


@pytest.fixture
def mpi_store(db_url: str) -> Iterator[Store]:
    """An empty store with the MPI tables, on SQLite and on PostgreSQL."""
    store = Store(db_url)
    ensure_schema(store.engine)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def zhang_wei_cid() -> str:
    """A valid citizen ID of a man born 1985-03-07 in Jinan Lixia."""
    from datetime import date

    return make_citizen_id("370102", date(1985, 3, 7), 123, "male")
