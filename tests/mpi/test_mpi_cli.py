"""``rhip link`` and ``rhip mpi`` through the real command line on a configured SQLite store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.config import get_settings
from rhip.mpi.sample import sample_population
from rhip.mpi.service import reset_model_cache
from rhip.store import Store


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RHIP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    reset_model_cache()
    yield tmp_path
    get_settings.cache_clear()
    reset_model_cache()


def test_link_new_then_all_with_truth(configured: Path) -> None:
    patients, truth = sample_population(60, seed=5)
    with Store.from_settings() as store:
        store.bulk_write(patients)
    truth_file = configured / "patient_links.csv"
    with truth_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_system", "facility_code", "source_patient_id", "resident_id", "noise"])
        for record_id, resident in truth.items():
            writer.writerow(["fhir", record_id.split("-")[0].upper(), record_id, resident, ""])
    runner = CliRunner()
    first = runner.invoke(app, ["link"])
    assert first.exit_code == 0, first.output
    assert f"linked {len(patients)} new records: " in first.output
    assert "{" not in first.output and "a new resident" in first.output  # words, not the outcome dict
    again = runner.invoke(app, ["link"])
    assert "linked 0 new records: every stored source Patient is linked already" in again.output
    batch = runner.invoke(app, ["link", "--all", "--truth", str(truth_file)])
    assert batch.exit_code == 0, batch.output
    report = next(line for line in batch.output.splitlines() if line.startswith("{"))
    assert json.loads(report)["records"] == len(patients)
    assert "pair_precision" in batch.output
    # the measures are explained under the table (their names alone told a newcomer little)
    assert "precision: share of linked record pairs that are one person" in " ".join(batch.output.split())
    card = patients[0]["identifier"][0]
    shown = runner.invoke(app, ["mpi", "resident", f"{card['system']}|{card['value']}"])
    assert shown.exit_code == 0 and patients[0]["id"] in shown.output
    assert runner.invoke(app, ["mpi", "review"]).exit_code == 0
    missing = runner.invoke(app, ["mpi", "resident", "urn:x|nobody"])
    assert missing.exit_code != 0


def test_corrections_take_ids_as_review_prints_them(configured: Path) -> None:
    """``rhip mpi review`` prints ``Patient/ID``; pasting that into unlink/link said 'record unknown'."""
    patients, _truth = sample_population(20, seed=7)
    with Store.from_settings() as store:
        store.bulk_write(patients)
    runner = CliRunner()
    assert runner.invoke(app, ["link"]).exit_code == 0
    record = patients[0]["id"]
    unlinked = runner.invoke(app, ["mpi", "unlink", f"Patient/{record}"])
    assert unlinked.exit_code == 0, unlinked.output
    assert unlinked.output.startswith("change ")
    residents = unlinked.output.strip().split("; residents ")[1].split(", ")
    relinked = runner.invoke(app, ["mpi", "link", f"Patient/{record}", f"Patient/{residents[0]}"])
    assert relinked.exit_code == 0, relinked.output
    # an id the MPI does not know is named, with where the known ones are listed
    # (it said only 'record unknown to the MPI' and 'unknown review item')
    missing = runner.invoke(app, ["mpi", "unlink", "Patient/nope"])
    assert "Patient/nope is unknown to the MPI" in str(missing.exception) and "`rhip link`" in str(
        missing.exception
    )
    review = runner.invoke(app, ["mpi", "accept", "999"])
    assert "no review item 999" in str(review.exception) and "rhip mpi review" in str(review.exception)
