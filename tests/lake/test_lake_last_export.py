"""When the lake was last exported, and whether the store has changed since (``rhip status``)."""

from __future__ import annotations

import time
from pathlib import Path

from rhip.lake.export import export_store, last_export
from rhip.store import Store


def test_last_export_and_the_store_changing_after_it(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}") as store:
        assert last_export(lake) is None
        store.create({"resourceType": "Patient", "gender": "male"})
        before = time.time()
        export_store(store, lake)
        found = last_export(lake)
        assert found is not None
        at, watermark = found
        assert before - 1 <= at <= time.time() + 1
        assert watermark == store.last_write()  # nothing written since the export
        store.create({"resourceType": "Observation", "status": "final", "code": {"text": "t"}})
        newest = store.last_write()
        assert newest is not None and newest > watermark
