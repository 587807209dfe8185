"""``/ingest/batches`` and ``/ingest/quarantine`` over a real server with authentication on: an
unknown facility, status or connector is refused by name instead of answering an empty list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backoffice_testkit import BATCH_ONLY, BackOffice, fed_server


@pytest.fixture
def office(db_url: str, tmp_path: Path) -> Iterator[BackOffice]:
    with fed_server(db_url, tmp_path) as server:
        yield server


def _refused(response: httpx.Response, status: int, code: str, named: str) -> None:
    assert response.status_code == status, response.text
    (issue,) = response.json()["issue"]
    assert issue["code"] == code and named in issue["diagnostics"], issue


@pytest.mark.parametrize("path", ["/ingest/batches", "/ingest/quarantine"])
def test_an_unknown_facility_is_404_naming_it(office: BackOffice, path: str) -> None:
    """``?facility=NOPE`` answered ``[]``, as for a facility that sent only clean records."""
    _refused(office.get(path, facility="NOPE"), 404, "not-found", "unknown facility 'NOPE'")
    _refused(office.get(path, facility="F" * 300), 404, "not-found", f"unknown facility '{'F' * 64}'")
    assert len(office.get(path, facility="F1").json()) == 1


def test_a_facility_with_batches_but_nothing_quarantined_is_an_empty_list(office: BackOffice) -> None:
    assert [b["facility"] for b in office.get("/ingest/batches", facility=BATCH_ONLY).json()] == [BATCH_ONLY]
    assert office.get("/ingest/quarantine", facility=BATCH_ONLY).json() == []


def test_an_unknown_status_or_connector_is_400_naming_the_known_ones(office: BackOffice) -> None:
    """``?status=opne`` or ``?connector=ndjson`` matched no entry and answered ``[]``."""
    _refused(
        office.get("/ingest/quarantine", status="opne"), 400, "invalid", "use one of open, replayed, all"
    )
    _refused(
        office.get("/ingest/quarantine", connector="ndjson"), 400, "invalid", "unknown connector 'ndjson'"
    )
    assert "fhir-ndjson" in office.get("/ingest/quarantine", connector="x").json()["issue"][0]["diagnostics"]
    assert len(office.get("/ingest/quarantine", connector="fhir-ndjson").json()) == 1
    assert len(office.get("/ingest/quarantine", status="all").json()) == 1
    assert office.get("/ingest/quarantine", status="replayed").json() == []


def test_an_unknown_quarantine_entry_is_404(office: BackOffice) -> None:
    _refused(office.get("/ingest/quarantine/987654"), 404, "not-found", "no quarantine entry 987654")
