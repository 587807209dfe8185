"""``rhip quarantine show --raw`` reads the record in its own encoding and names it; ``--bytes``
writes the verbatim bytes."""

from __future__ import annotations

from pathlib import Path

from clinic_mapping import clinic_mapping
from typer.testing import CliRunner

from rhip.cli import app
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.quarantine import list_entries
from rhip.ingest.runner import ingest_file

HL7 = (
    "MSH|^~\\&|HIS|H1|R|R|20261101083000||ADT^A28^ADT_A05|C1|P|2.5||||||GBK\r"
    "PID|1||M1^^^H1^MR||王^芳||1980-99|F\r"
)


def _show(db_url: str, *args: str) -> tuple[str, bytes]:
    (entry,) = list_entries_of(db_url)
    result = CliRunner().invoke(app, ["quarantine", "show", str(entry), *args, "--database-url", db_url])
    assert result.exit_code == 0, result.output
    return result.output, result.stdout_bytes


def list_entries_of(db_url: str) -> list[int]:
    from rhip.store import Store

    store = Store(db_url)
    try:
        return [e.q_id for e in list_entries(store.engine, status=None)]
    finally:
        store.close()


def test_a_gbk_csv_row_is_shown_as_gbk(pipeline: Pipeline, db_url: str, tmp_path: Path) -> None:
    """A GBK row was printed as UTF-8 with replacement characters (mojibake)."""
    mapping = tmp_path / "clinic.yaml"
    mapping.write_text(clinic_mapping("gbk"), encoding="utf-8")
    path = tmp_path / "person.csv"
    row = "2,王芳,M".encode("gbk")
    path.write_bytes("pid,name,sex\n1,李明,1\n".encode("gbk") + row + b"\n")
    assert ingest_file(pipeline, path, "F1", mapping=str(mapping)).quarantined == 1
    text, _ = _show(db_url, "--raw")
    assert "raw record (gbk, declared by the mapping):\n2,王芳,M\n" in text
    assert "\ufffd" not in text
    _, verbatim = _show(db_url, "--bytes")
    assert verbatim == row


def test_a_gbk_hl7_message_is_read_in_its_msh18_charset(
    pipeline: Pipeline, db_url: str, tmp_path: Path
) -> None:
    """An HL7 message declared GBK in MSH-18 was printed as mojibake."""
    path = tmp_path / "adt.hl7"
    message = HL7.encode("gbk")
    path.write_bytes(message)
    assert ingest_file(pipeline, path, "F1").quarantined == 1
    text, _ = _show(db_url, "--raw")
    assert "raw record (gbk, declared in MSH-18):\n" in text and "王^芳" in text
    _, verbatim = _show(db_url, "--bytes")
    assert verbatim.rstrip(b"\r\n") == message.rstrip(b"\r\n")


def test_an_undeclared_encoding_is_detected_and_named(
    pipeline: Pipeline, db_url: str, tmp_path: Path
) -> None:
    """A GB18030 NDJSON line (no declared encoding) was printed as mojibake."""
    path = tmp_path / "Patient.ndjson"
    line = '{"resourceType": "Patient", "id": "p1", "name": [{"text": "王芳"}]}'.encode("gb18030")
    path.write_bytes(line + b"\n")
    assert ingest_file(pipeline, path, "F1").quarantined == 1
    text, _ = _show(db_url, "--raw")
    assert (
        'raw record (gb18030, detected):\n{"resourceType": "Patient", "id": "p1", "name": [{"text": "王芳"}]}'
        in text
    )
    _, verbatim = _show(db_url, "--bytes")
    assert verbatim == line
