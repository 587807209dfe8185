"""The ingest API's times are FHIR-style instants with an offset, as in the rest of the API."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from rhip.ingest import api as ingest_api
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def _near_now(value: object, since: float) -> None:
    assert isinstance(value, str) and INSTANT.fullmatch(value), value
    assert since - 1 <= datetime.fromisoformat(value).timestamp() <= time.time() + 1


def test_quarantine_and_batch_times_are_instants(pipeline: Pipeline, tmp_path: Path) -> None:
    """``GET /ingest/quarantine`` gave ``created`` (and ``/ingest/batches`` ``started``/``finished``)
    as epoch seconds while the CLI showed local time."""
    since = time.time()
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b'{"resourceType": "Patient", "id": "p1", "gender": "boy"}\n')
    assert ingest_file(pipeline, path, "F1").quarantined == 1
    app = FastAPI()
    app.state.store = pipeline.store
    app.include_router(ingest_api.router)
    with TestClient(app) as client:
        (listed,) = client.get("/ingest/quarantine").json()
        _near_now(listed["created"], since)
        assert client.get(f"/ingest/quarantine/{listed['id']}").json()["created"] == listed["created"]
        (batch,) = client.get("/ingest/batches").json()
        _near_now(batch["started"], since)
        _near_now(batch["finished"], since)


def test_an_unknown_quarantine_status_is_a_400(pipeline: Pipeline) -> None:
    """``GET /ingest/quarantine?status=closed`` answered [] as if nothing were quarantined."""
    from rhip.api.routing import install_handlers

    app = FastAPI()
    app.state.store = pipeline.store
    app.include_router(ingest_api.router)
    install_handlers(app)  # the API app's: a platform error answers as an OperationOutcome
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/ingest/quarantine", params={"status": "closed"})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["diagnostics"] == (
            "status: 'closed' is not one of open, replayed, all"
        )
        assert client.get("/ingest/quarantine", params={"status": "all"}).status_code == 200
