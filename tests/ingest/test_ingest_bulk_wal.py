"""A bulk load checkpoints the SQLite WAL rarely while it writes, then leaves a truncated WAL behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Connection

from rhip.config import get_settings
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.store import Store
from rhip.store.engine import WAL_TRUNCATE_BYTES

SQLITE_DEFAULT_PAGES = 1000


class WalProbe:
    """An observer that reads, inside each chunk's write transaction, the writer's WAL setting."""

    def __init__(self, wal: Path) -> None:
        self.wal = wal
        self.pages: list[int] = []
        self.sizes: list[int] = []

    def on_stored(self, *_: Any) -> None:
        return None

    def on_quarantined(self, *_: Any) -> None:
        return None

    def flush_into(self, conn: Connection) -> None:
        self.pages.append(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())
        self.sizes.append(self.wal.stat().st_size)


@pytest.fixture
def wal_pages(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """RHIP_INGEST_WAL_AUTOCHECKPOINT for the test (settings re-read before and after)."""
    monkeypatch.setenv("RHIP_INGEST_WAL_AUTOCHECKPOINT", str(request.param))
    get_settings.cache_clear()
    yield request.param
    monkeypatch.delenv("RHIP_INGEST_WAL_AUTOCHECKPOINT")
    get_settings.cache_clear()


def _observations(path: Path, n: int) -> Path:
    """n Observations of ~1 KB: enough index and body pages for the WAL to pass 4 MB."""
    lines = (
        orjson.dumps(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"text": "心率" * 40},
                "subject": {"reference": f"Patient/p{i % 97}"},
                "valueQuantity": {"value": i % 40, "unit": "/min"},
                "note": [{"text": f"n{i} " + "z" * 600}],
            }
        )
        for i in range(n)
    )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _load(tmp_path: Path) -> tuple[WalProbe, Path, Store]:
    db = tmp_path / "bulk.sqlite"
    store = Store(f"sqlite:///{db}")
    probe = WalProbe(Path(f"{db}-wal"))
    pipe = Pipeline(store, observers=[probe], chunk_size=500)
    rep = ingest_file(pipe, _observations(tmp_path / "obs.ndjson", 3000), "F1")
    assert rep.stored == 3000
    return probe, Path(f"{db}-wal"), store


def _pooled_pages(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


@pytest.mark.parametrize("wal_pages", [10_000], indirect=True)
def test_bulk_load_checkpoints_rarely_then_truncates_the_wal(tmp_path: Path, wal_pages: int) -> None:
    probe, wal, store = _load(tmp_path)
    try:
        assert probe.pages == [wal_pages] * 6
        assert max(probe.sizes) > WAL_TRUNCATE_BYTES  # the WAL grew past what a checkpoint would allow
        # checkpointed and truncated after the load: what is left is the batch's closing counts
        assert wal.stat().st_size < 16 * 1024
        assert _pooled_pages(store) == SQLITE_DEFAULT_PAGES  # the writer's connection restored
    finally:
        store.close()


@pytest.mark.parametrize("wal_pages", [0], indirect=True)
def test_zero_keeps_sqlite_default_checkpoints(tmp_path: Path, wal_pages: int) -> None:
    probe, wal, store = _load(tmp_path)
    try:
        assert probe.pages == [SQLITE_DEFAULT_PAGES] * 6
        assert 0 < wal.stat().st_size <= WAL_TRUNCATE_BYTES + 64 * 1024
    finally:
        store.close()
