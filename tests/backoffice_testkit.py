"""A real server with authentication on over a store that facility F1 has fed, for the back-office
routers (``/quality``, ``/ingest``): F1 sent one file (a Patient stored, one quarantined), so it has
batches, quarantine entries and quality tallies; TALLY_ONLY has tallies but no batch, BATCH_ONLY a
batch but no tally. Importable by bare name from any test folder (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from rhip.config import Settings
from rhip_testkit import running_server

TALLY_ONLY = "T-ONLY"
BATCH_ONLY = "B-ONLY"


@dataclass
class BackOffice:
    """The server's root URL and a platform admin's bearer token."""

    root: str
    token: str

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET ``path`` (from the root) as the platform admin."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.get(f"{self.root}{path}", params=params, headers=headers, timeout=30)


def _feed(store: object, tmp_path: Path) -> None:
    from sqlalchemy import insert

    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.ingest.schema import ingest_batch
    from rhip.quality.collector import QualityCollector
    from rhip.quality.schema import quality_tally

    engine = store.engine  # type: ignore[attr-defined]
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(
        b'{"resourceType": "Patient", "id": "p1", "gender": "female"}\n'
        b'{"resourceType": "Patient", "id": "p2", "gender": "boy"}\n'
    )
    pipeline = Pipeline(store, observers=[QualityCollector(engine)])  # type: ignore[arg-type]
    assert ingest_file(pipeline, path, "F1").quarantined == 1
    with engine.begin() as conn:
        conn.execute(
            insert(quality_tally).values(facility=TALLY_ONLY, day="2026-11-20", rule="r", checked=1, failed=0)
        )
        conn.execute(
            insert(ingest_batch).values(
                batch_id="b-only", facility=BATCH_ONLY, connector="fhir-ndjson", started=time.time()
            )
        )


@contextmanager
def fed_server(db_url: str, tmp_path: Path) -> Iterator[BackOffice]:
    """uvicorn with authentication on over a store on ``db_url`` fed as the module says."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    store = Store(db_url)
    try:
        _feed(store, tmp_path)
        app = create_app(store, Settings(data_dir=tmp_path, database_url=db_url, auth_enabled=True))
        token = issue_token(app, role="platform_admin")
        with running_server(app) as root:
            yield BackOffice(root, token)
    finally:
        store.close()
