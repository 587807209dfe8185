"""``rhip export`` and ``rhip sql`` through the real CLI app over a real store and lake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.errors import InvalidRequest


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from rhip.config import get_settings
    from rhip.store import Store

    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    store.bulk_write(
        [
            {"resourceType": "Patient", "id": f"p{i}", "gender": "male" if i < 3 else "female"}
            for i in range(5)
        ]
        + [
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "Patient/p1"},
            }
        ]
    )
    store.close()
    yield tmp_path
    get_settings.cache_clear()


def test_export_then_sql_table_csv_and_parquet(data_dir: Path) -> None:
    runner = CliRunner()
    exported = runner.invoke(app, ["export"])
    assert exported.exit_code == 0, exported.output
    assert "full export" in exported.output and "view patient" in exported.output
    table = runner.invoke(app, ["sql", "SELECT gender, count(*) AS n FROM patient GROUP BY 1 ORDER BY 1"])
    assert table.exit_code == 0, table.output
    assert "female" in table.output and "2 rows" in table.output
    csv_out = runner.invoke(app, ["sql", "SELECT id FROM encounter", "--format", "csv"])
    assert csv_out.output.splitlines() == ["id", "e1"]
    target = data_dir / "out.parquet"
    parquet = runner.invoke(app, ["sql", "SELECT * FROM patient", "-f", "parquet", "-o", str(target)])
    assert parquet.exit_code == 0 and target.exists()
    again = runner.invoke(app, ["export", "--no-views"])
    assert "incremental export: 0 rows" in again.output


def test_sql_runs_a_view_definition_file(data_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["export", "--no-views"]).exit_code == 0
    view = data_dir / "v.json"
    view.write_text(
        json.dumps({"resource": "Patient", "select": [{"column": [{"name": "g", "path": "gender"}]}]})
    )
    out = runner.invoke(app, ["sql", "--view", str(view), "-f", "json"])
    assert out.exit_code == 0, out.output
    assert sorted(json.loads(line)["g"] for line in out.output.splitlines()) == ["female"] * 2 + ["male"] * 3


def test_sql_errors_are_reported_without_a_traceback(data_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["export"]).exit_code == 0
    out = runner.invoke(app, ["sql", "SELECT * FROM no_such_table"])
    assert out.exit_code != 0
    assert "query failed" in str(out.exception) or "query failed" in out.output


def test_sql_with_an_unknown_table_lists_the_tables_and_views(data_dir: Path) -> None:
    """Regression: an unknown table's error named only the table, not the ones there are."""
    runner = CliRunner()
    assert runner.invoke(app, ["export"]).exit_code == 0
    out = runner.invoke(app, ["sql", "SELECT * FROM patients"])
    assert isinstance(out.exception, InvalidRequest), out.output
    text = out.exception.diagnostics
    assert text.startswith("query failed: Catalog Error: Table with name patients does not exist")
    listed = text.split("; tables and views: ", 1)[1].split(", ")
    assert {"fhir_patient", "fhir_encounter", "patient", "vital_signs"} <= set(listed), text
    bad_column = runner.invoke(app, ["sql", "SELECT nothing FROM patient"])
    assert isinstance(bad_column.exception, InvalidRequest)
    assert "tables and views" not in bad_column.exception.diagnostics


def test_sql_before_any_export_says_to_export(data_dir: Path) -> None:
    """Before the first export every table was 'does not exist', which sent one to the SQL."""
    out = CliRunner().invoke(app, ["sql", "SELECT * FROM patient"])
    assert isinstance(out.exception, InvalidRequest), out.output
    assert (
        out.exception.diagnostics
        == f"no lake at {data_dir / 'lake'}: run `rhip export` first, or give --lake-dir"
    )
