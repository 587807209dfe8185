"""``rhip fhir validate`` and ``rhip fhir terminology`` on real files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from rhip.fhir import validate_resource
from rhip.fhir.cli import register

DATA = Path(__file__).resolve().parents[1] / "data"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def test_validate_ndjson_reports_line_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = orjson.loads((DATA / "fhir-r4-examples" / "patient-example.json").read_bytes())
    bad = dict(good, birthDate="1974-13-25")
    ndjson = tmp_path / "Patient.ndjson"
    ndjson.write_bytes(b"\n".join([orjson.dumps(good), orjson.dumps(bad), b"{not json"]) + b"\n")
    monkeypatch.chdir(tmp_path)  # short, relative locations keep the table from wrapping them
    result = CliRunner().invoke(_app(), ["fhir", "validate", ndjson.name], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "Patient.birthDate" in result.output and "Patient.ndjson:2" in result.output
    assert "Patient.ndjson:3" in result.output and "3 resources checked, 2 with errors" in result.output


def test_validate_clean_file_exits_zero() -> None:
    path = DATA / "fhir-r4-examples" / "observation-example.json"
    result = CliRunner().invoke(_app(), ["fhir", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 resources checked, 0 with errors" in result.output


def test_terminology_export_writes_valid_resources(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["fhir", "terminology", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [
        "CodeSystem-icd10-cn.json",
        "CodeSystem-icd9cm3-cn.json",
        "CodeSystem-notifiable-disease.json",
        "ValueSet-common-lab-tests.json",
    ]
    for name in files:
        assert validate_resource(orjson.loads((tmp_path / "out" / name).read_bytes())) == []
