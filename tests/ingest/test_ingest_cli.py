"""``rhip ingest`` on plain folders: stray files are named and skipped, an empty folder is said so."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rhip.cli import app

HL7 = (
    "MSH|^~\\&|HIS|H5|R|R|20261101083000||ADT^A28^ADT_A05|C1|P|2.5\rPID|1||M1^^^H5^MR||Li^Ming||19800101|M\r"
)


def _ingest(path: Path, url: str) -> str:
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--no-link", "--database-url", url], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_stray_file_is_skipped_and_the_rest_ingested(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.hl7").write_text(HL7, encoding="utf-8")
    (folder / "notes.txt").write_text("not a record", encoding="utf-8")
    (folder / "z.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "z1", "gender": "male"}\n')
    out = _ingest(folder, f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert f"skipped {folder / 'notes.txt'}: no connector for '.txt' files" in out
    total = next(line for line in out.splitlines() if "total" in line).split()
    assert total[2:4] == ["2", "2"]  # received, stored: both files ran
    facilities = out[out.index("facility") :].splitlines()
    assert any(line.split()[:2] == ["H5", "1"] for line in facilities if line.strip())  # MSH-4 sender


def test_empty_folder_says_there_is_nothing_to_ingest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = _ingest(tmp_path / "empty", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert f"nothing to ingest in {tmp_path / 'empty'}" in out
