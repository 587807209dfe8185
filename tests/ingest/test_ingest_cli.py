"""``rhip ingest`` and ``rhip quarantine`` as operators use them: stray files are named and skipped,
an empty folder is said so, and every mistake gets a message that names the way out."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner, Result

from rhip.cli import app
from rhip.errors import RhipError

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


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, [*args], env={"COLUMNS": "200"})


def _refused(result: Result) -> str:
    """The platform error a command stopped with (``rhip`` prints it as one ``error:`` line)."""
    assert isinstance(result.exception, RhipError), result.output
    return result.exception.diagnostics


def test_a_file_of_unknown_extension_names_the_known_ones(tmp_path: Path) -> None:
    """'no connector for .txt files' said neither which extensions work nor about --connector."""
    (tmp_path / "export.txt").write_text("x", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    message = _refused(_invoke("ingest", str(tmp_path / "export.txt"), "--database-url", url))
    assert ".ndjson (fhir-ndjson)" in message and ".csv (csv)" in message and "--connector" in message
    assert not (tmp_path / "x.sqlite").exists()  # refused before a database was created


def test_an_unknown_connector_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """--connector foo created the database, then said only 'unknown connector'."""
    (tmp_path / "a.hl7").write_text(HL7, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    message = _refused(
        _invoke("ingest", str(tmp_path / "a.hl7"), "--connector", "hl7", "--database-url", url)
    )
    assert (
        message == "unknown connector 'hl7'; known: csv, device-json, dicom, fhir-bundle, fhir-ndjson, hl7v2"
    )
    assert not (tmp_path / "x.sqlite").exists()


def test_a_mapping_that_does_not_exist(tmp_path: Path) -> None:
    """--mapping with a mistyped name or path said 'unknown CSV mapping' for both."""
    (tmp_path / "person.csv").write_text("id,name\n1,Wang\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    by_name = _refused(
        _invoke("ingest", str(tmp_path / "person.csv"), "--mapping", "clinic", "--database-url", url)
    )
    assert "shipped mappings are community-centre" in by_name and "path of its YAML file" in by_name
    missing = tmp_path / "conf" / "clinic.yaml"
    by_path = _refused(
        _invoke("ingest", str(tmp_path / "person.csv"), "--mapping", str(missing), "--database-url", url)
    )
    assert by_path == f"mapping file {missing} not found"
    assert not (tmp_path / "x.sqlite").exists()


def test_a_mapping_that_does_not_exist_is_refused_for_other_files_too(tmp_path: Path) -> None:
    """--mapping nope with an NDJSON or HL7 file was ignored and the file ingested."""
    (tmp_path / "a.hl7").write_text(HL7, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    message = _refused(_invoke("ingest", str(tmp_path / "a.hl7"), "--mapping", "nope", "--database-url", url))
    assert message.startswith("unknown CSV mapping 'nope'")
    assert not (tmp_path / "x.sqlite").exists()


def test_a_csv_file_the_mapping_has_no_table_for_is_named(tmp_path: Path) -> None:
    """Every row of a CSV file whose name the mapping does not know was quarantined without a word."""
    (tmp_path / "patients.csv").write_text("档案编号,姓名\n1,张三\n", encoding="utf-8")
    out = _ingest(tmp_path / "patients.csv", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert "mapping 'community-centre' has no table 'patients.csv' (its tables: person.csv," in out
    assert (
        "1 records quarantined" in out and "rhip quarantine list" in out and "rhip quarantine replay" in out
    )


def test_an_empty_file_is_said_to_have_no_records(tmp_path: Path) -> None:
    """An empty file gave a table of zeros and no word on why."""
    (tmp_path / "Patient.ndjson").write_bytes(b"")
    out = _ingest(tmp_path / "Patient.ndjson", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert f"{tmp_path / 'Patient.ndjson'}: no records in this file" in out
    assert "quarantined (隔离)" not in out


def test_quarantine_commands_on_wrong_ids_and_values(tmp_path: Path) -> None:
    """A wrong id said only 'no quarantine entry 7'; --status bogus listed nothing; the entry's
    time was epoch seconds; replay with nothing open said 'replayed 0'."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    (tmp_path / "Patient.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "p1", "gender": "boy"}\n')
    _ingest(tmp_path / "Patient.ndjson", url)
    for command in (["show", "7"], ["replay", "1", "7"]):
        message = _refused(_invoke("quarantine", *command, "--database-url", url))
        assert message == "no quarantine entry 7; `rhip quarantine list --status all` lists the ids"
    bogus = _invoke("quarantine", "list", "--status", "closed", "--database-url", url)
    assert bogus.exit_code == 2 and "'closed' is not one of open, replayed, all" in bogus.output
    shown = _invoke("quarantine", "show", "1", "--database-url", url)
    assert re.search(r'"created": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00"', shown.output), shown.output
    nothing = _invoke("quarantine", "replay", "--facility", "H404", "--database-url", url)
    assert nothing.exit_code == 0 and "nothing to replay" in nothing.output


def test_ingest_help_names_every_connector_and_an_example() -> None:
    """``--connector`` said 'Force a connector' without naming one; the help had no example."""
    from rhip.ingest.runner import EXTENSIONS

    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.replace("│", " ").split())
    assert all(name in text for name in set(EXTENSIONS.values())), text
    assert "Examples: `rhip ingest /data/drop/H001 --facility H001`" in text


def test_reconciliation_says_what_it_counts(tmp_path: Path) -> None:
    """'received 2, resources 7' left a newcomer guessing what a record and a resource are."""
    (tmp_path / "a.hl7").write_text(HL7, encoding="utf-8")
    out = " ".join(_ingest(tmp_path / "a.hl7", f"sqlite:///{tmp_path / 'x.sqlite'}").split())
    assert "Counts are records (an NDJSON line, an HL7 message, a CSV row, a file, a reading)" in out
    assert "resources are the FHIR resources written from them" in out


def test_files_without_facility_say_they_go_to_unknown(tmp_path: Path) -> None:
    """Without --facility, NDJSON/CSV records silently went to a facility named 'unknown'."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.hl7").write_text(HL7, encoding="utf-8")
    only_hl7 = _ingest(folder, f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert "no --facility" not in only_hl7  # HL7 names its sender
    (folder / "z.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "z1"}\n')
    mixed = " ".join(_ingest(folder, f"sqlite:///{tmp_path / 'x.sqlite'}").split())
    assert "no --facility: records of files other than HL7" in mixed and "'unknown'" in mixed


def test_a_drop_folder_with_a_csv_subfolder_and_a_facility_is_read_as_files(tmp_path: Path) -> None:
    """A folder holding csv/ was taken for a generated region even with --facility and --mapping:
    both were ignored, rows were credited to a facility named 'csv' and mapped with the default."""
    mapping = tmp_path / "clinic.yaml"
    mapping.write_text(
        "name: clinic\ntables:\n  visits.csv:\n    resources:\n      - type: Patient\n"
        "        id_from: [pid]\n        fields:\n          gender: {column: sex, map: {'1': male}}\n",
        encoding="utf-8",
    )
    drop = tmp_path / "drop"
    (drop / "csv").mkdir(parents=True)
    (drop / "csv" / "visits.csv").write_text("pid,sex\n7,1\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    result = _invoke(
        "ingest", str(drop), "-f", "C01", "--mapping", str(mapping), "--no-link", "--database-url", url
    )
    assert result.exit_code == 0, result.output
    facilities = result.output[result.output.index("facility 机构") :].splitlines()[1].split()
    assert facilities[:3] == ["C01", "1", "1"]  # received, stored under the facility given
    assert "read as a generated region" not in result.output
    plain = _invoke("ingest", str(drop), "--no-link", "--database-url", url)
    assert "read as a generated region" in " ".join(plain.output.split())


def test_via_options_on_plain_files_are_said_to_be_for_regions(tmp_path: Path) -> None:
    """``--via-mllp`` on a plain HL7 file was ignored without a word."""
    (tmp_path / "a.hl7").write_text(HL7, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    result = _invoke("ingest", str(tmp_path / "a.hl7"), "--via-mllp", "--no-link", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "--via-mllp and --via-http apply to a generated region" in " ".join(result.output.split())
