"""Batch re-link with Splink on DuckDB: accuracy on a noisy population, ids and manual links kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from rhip.config import get_settings
from rhip.mpi import corrections
from rhip.mpi.evaluate import evaluate
from rhip.mpi.relink import relink_all
from rhip.mpi.sample import sample_population
from rhip.mpi.schema import mpi_record
from rhip.mpi.service import reset_model_cache
from rhip.mpi.truth import predicted_links
from rhip.store import Store


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    reset_model_cache()
    yield tmp_path / "data"
    get_settings.cache_clear()
    reset_model_cache()


def test_batch_relink_accuracy_and_stability(mpi_store: Store, data_dir: Path) -> None:
    patients, truth = sample_population(400, seed=21)
    mpi_store.bulk_write(patients)
    report = relink_all(mpi_store, retrain=True, max_pairs=2e5)
    assert report.records == len(patients)
    assert (data_dir / "mpi" / "model.json").exists() and report.model.startswith("splink-duckdb")
    with mpi_store.engine.connect() as conn:
        first = predicted_links(conn)
    acc = evaluate(first, truth)
    assert acc.pair_precision >= 0.99 and acc.pair_recall >= 0.97, acc
    golden = mpi_store.read("Patient", first[patients[0]["id"]])
    assert f"Patient/{patients[0]['id']}" in {lk["other"]["reference"] for lk in golden["link"]}

    # A manual unlink survives a re-link, and residents keep their ids.
    some = patients[1]["id"]
    corrections.unlink_record(mpi_store, some, actor="ops")
    with mpi_store.engine.connect() as conn:
        manual = conn.execute(
            select(mpi_record.c.resident_id).where(mpi_record.c.record_id == some)
        ).scalar_one()
    again = relink_all(mpi_store)
    assert again.new_residents == 0
    with mpi_store.engine.connect() as conn:
        second = predicted_links(conn)
    assert second[some] == manual
    same = sum(1 for rid, res in first.items() if rid != some and second[rid] == res)
    assert same == len(first) - 1
