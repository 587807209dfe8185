"""Quarantine keeps records verbatim with reasons; replay stores them once the mapping is fixed."""

from __future__ import annotations

from pathlib import Path

from clinic_mapping import CLINIC_MAPPING
from typer.testing import CliRunner

from rhip.cli import app
from rhip.ingest.hooks import patient_sinks, unregister_patient_sink
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.quarantine import count_open, get_entry, list_entries, replay
from rhip.ingest.runner import ingest_file


def test_replay_after_fixing_mapping(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    mapping = tmp_path / "clinic.yaml"
    mapping.write_text(CLINIC_MAPPING, encoding="utf-8")
    data = tmp_path / "person.csv"
    data.write_text("pid,name,sex\n1,Wang,1\n2,Li,M\n3,Zhao,F\n", encoding="utf-8")
    rep = ingest_file(sqlite_pipeline, data, "C1", mapping=str(mapping))
    assert (rep.stored, rep.quarantined) == (1, 2) and rep.reconciled
    entries = list_entries(sqlite_pipeline.engine, facility="C1")
    assert [e.reasons[0]["rule"] for e in entries] == ["value-map", "value-map"]
    assert entries[0].raw == b"2,Li,M" and entries[0].position == "person.csv:3"
    assert count_open(sqlite_pipeline.engine) == {"C1": 2}
    assert "Li" not in str(entries[0].summary())  # summaries never carry the record's data

    still = replay(sqlite_pipeline, entries)  # mapping not fixed yet: still quarantined, no new entries
    assert (still.stored, still.quarantined) == (0, 2)
    assert len(list_entries(sqlite_pipeline.engine, status=None)) == 2

    mapping.write_text(
        CLINIC_MAPPING.replace('{"1": male, "2": female}', '{"1": male, "2": female, M: male, F: female}'),
        encoding="utf-8",
    )
    fixed = replay(sqlite_pipeline, entries)
    assert (fixed.stored, fixed.quarantined) == (2, 0)
    assert sqlite_pipeline.store.count("Patient") == 3
    assert list_entries(sqlite_pipeline.engine) == []
    assert get_entry(sqlite_pipeline.engine, entries[0].q_id).status == "replayed"


def test_cli_quarantine_list_show_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    bad = tmp_path / "Patient.ndjson"
    bad.write_bytes(b'{"resourceType": "Patient", "id": "p1", "gender": "boy"}\n')
    runner = CliRunner()
    before = patient_sinks()
    try:
        _cli_steps(runner, bad, url)
    finally:
        for sink in patient_sinks():
            if sink not in before:
                unregister_patient_sink(sink)  # the CLI installs the identity sink process-wide


def _cli_steps(runner: CliRunner, bad: Path, url: str) -> None:
    result = runner.invoke(app, ["ingest", str(bad), "--facility", "F9", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "quarantined" in result.output
    listed = runner.invoke(app, ["quarantine", "list", "--database-url", url])
    assert listed.exit_code == 0 and "F9" in listed.output and "value-set" in listed.output
    shown = runner.invoke(app, ["quarantine", "show", "1", "--database-url", url])
    assert shown.exit_code == 0 and "Patient.gender" in shown.output and "boy" not in shown.output
    replayed = runner.invoke(app, ["quarantine", "replay", "--database-url", url])
    assert replayed.exit_code == 0 and "still quarantined 1" in replayed.output
