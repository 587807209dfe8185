"""rhip.api.app: the WAL of an SQLite store is checkpointed off the commit path while the app runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from rhip.api import create_app
from rhip.config import Settings
from rhip.store import Store


def _autocheckpoint(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def _checkpoint_threads() -> int:
    return sum(t.name == "rhip-wal-checkpoint" for t in threading.enumerate())


def test_checkpoint_thread_runs_with_the_app_and_commits_are_checkpointed(tmp_path: Path) -> None:
    """While serving: automatic checkpoints off, a thread copies the log back; after: as before."""
    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store = Store(url)
    app = create_app(
        store, Settings(data_dir=tmp_path, database_url=url, auth_enabled=False), router_modules=()
    )
    before = _checkpoint_threads()
    with TestClient(app) as client:
        assert _checkpoint_threads() == before + 1
        assert _autocheckpoint(store) == 0
        body = json.dumps({"resourceType": "Patient", "name": [{"family": "Wal"}]})
        ids = [
            client.post(
                "/fhir/Patient", content=body, headers={"content-type": "application/fhir+json"}
            ).json()["id"]
            for _ in range(30)
        ]
    assert _checkpoint_threads() == before
    assert _autocheckpoint(store) == 1000
    with store.engine.connect() as conn:  # the final checkpoint left nothing in the log to copy
        busy, log, copied = conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)")).one()
    assert busy == 0 and log == copied
    store.close()
    reopened = Store(url)
    assert all(reopened.read("Patient", i)["name"] == [{"family": "Wal"}] for i in ids)
    reopened.close()


def test_no_checkpoint_thread_for_an_in_memory_store(tmp_path: Path) -> None:
    """Nothing to checkpoint without a log file."""
    store = Store("sqlite://")
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", auth_enabled=False)
    before = _checkpoint_threads()
    with TestClient(create_app(store, settings, router_modules=())):
        assert _checkpoint_threads() == before
    store.close()
