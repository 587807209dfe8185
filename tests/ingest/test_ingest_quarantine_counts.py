"""Every batch's counts reconcile with the quarantine table: ``quarantined`` is its number of rows.

Identical bad records share one quarantine entry (its key is the record's key or content hash),
so the second one, in the same chunk, a later chunk or a re-delivery, counts as a duplicate, as a
second identical good record does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clinic_mapping import CLINIC_MAPPING
from sqlalchemy import func, select
from typer.testing import CliRunner

from rhip.cli import app
from rhip.ingest.mllp import ack_of
from rhip.ingest.model import BatchReport
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.quarantine import list_entries
from rhip.ingest.runner import ingest_file
from rhip.ingest.schema import ingest_batch, ingest_quarantine
from rhip.quality import QualityCollector
from rhip.store import Store


def make_pipeline(store: Store, chunk_size: int) -> Pipeline:
    """A pipeline with the quality collector attached, reading ``chunk_size`` records a chunk."""
    return Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=chunk_size)


def _batch_rows(pipeline: Pipeline, report: BatchReport) -> int:
    """The batch's counts as saved agree with the report; returns its number of quarantine rows."""
    with pipeline.engine.connect() as conn:
        row = conn.execute(select(ingest_batch).where(ingest_batch.c.batch_id == report.batch_id)).one()
        q = ingest_quarantine
        rows = conn.execute(select(func.count()).where(q.c.batch_id == report.batch_id)).scalar_one()
    saved = (row.received, row.stored, row.quarantined, row.duplicates, row.stale)
    assert saved == (report.received, report.stored, report.quarantined, report.duplicates, report.stale)
    assert report.reconciled, report
    return int(rows)


def _listed(db_url: str) -> int:
    """How many entries `rhip quarantine list --status all` shows."""
    result = CliRunner().invoke(app, ["quarantine", "list", "--status", "all", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    found = re.search(r"\((\d+) shown", result.output)
    assert found, result.output
    return int(found.group(1))


def _load_twice(pipeline: Pipeline, db_url: str, path: Path, bad: int, **kw: str) -> None:
    """Load ``path`` (``bad`` distinct bad records, each twice) and deliver it again."""
    first = ingest_file(pipeline, path, "F1", **kw)
    assert first.quarantined == bad and first.duplicates >= bad, first
    assert _batch_rows(pipeline, first) == first.quarantined
    again = ingest_file(pipeline, path, "F1", **kw)  # re-delivery adds no quarantine entry
    assert again.quarantined == 0 and again.duplicates >= 2 * bad, again
    assert _batch_rows(pipeline, again) == 0
    assert len(list_entries(pipeline.engine, status=None)) == bad == _listed(db_url)


GOOD = b'{"resourceType": "Patient", "id": "p%d", "gender": "male"}'
BAD = b'{"resourceType": "Patient", "id": "q%d", "gender": "boy"}'


@pytest.mark.parametrize("chunk_size", [1000, 2])
def test_identical_bad_ndjson_lines_are_one_entry(
    store: Store, db_url: str, tmp_path: Path, chunk_size: int
) -> None:
    """Two identical bad NDJSON lines counted 2 quarantined for one quarantine row."""
    pipeline = make_pipeline(store, chunk_size=chunk_size)
    path = tmp_path / "Patient.ndjson"
    lines = [GOOD % 1, BAD % 1, BAD % 1, GOOD % 2, BAD % 2, BAD % 1, BAD % 2]
    path.write_bytes(b"\n".join(lines) + b"\n")
    _load_twice(pipeline, db_url, path, bad=2)


MSG = (
    "MSH|^~\\&|HIS|H1|R|R|20261101083000||ADT^A28^ADT_A05|C{n}|P|2.5\r"
    "PID|1||M{n}^^^H1^MR||Wang^Fang||{birth}|F\r"
)


@pytest.mark.parametrize("chunk_size", [1000, 2])
def test_identical_bad_hl7_messages_are_one_entry(
    store: Store, db_url: str, tmp_path: Path, chunk_size: int
) -> None:
    """Two identical bad HL7 messages in a file counted 2 quarantined for one row when a chunk
    boundary fell between them, and a re-delivered bad message counted as quarantined again."""
    pipeline = make_pipeline(store, chunk_size=chunk_size)
    path = tmp_path / "adt.hl7"
    good, bad = MSG.format(n=1, birth="19800506"), MSG.format(n=2, birth="1980-99")
    path.write_text(good + bad + MSG.format(n=3, birth="19800101") + bad, encoding="utf-8")
    _load_twice(pipeline, db_url, path, bad=1)


@pytest.mark.parametrize("chunk_size", [1000, 2])
def test_identical_bad_csv_rows_are_one_entry(
    store: Store, db_url: str, tmp_path: Path, chunk_size: int
) -> None:
    """Two identical bad CSV rows counted 2 quarantined for one row across a chunk boundary."""
    pipeline = make_pipeline(store, chunk_size=chunk_size)
    mapping = tmp_path / "clinic.yaml"
    mapping.write_text(CLINIC_MAPPING, encoding="utf-8")
    path = tmp_path / "person.csv"
    path.write_text("pid,name,sex\n1,Wang,1\n2,Li,M\n3,Zhao,2\n2,Li,M\n", encoding="utf-8")
    _load_twice(pipeline, db_url, path, bad=1, mapping=str(mapping))


def test_resent_bad_mllp_message_is_answered_ae_and_counted_once(pipeline: Pipeline) -> None:
    """A bad message resent over MLLP counted as quarantined each time, for one quarantine row;
    a resend in the same batch got AA."""
    from test_ingest_mllp import ORU, _reports, _run

    bad = ORU.format(n=3, value="not-a-number")
    acks = _run(pipeline, [bad, bad, bad])
    acks += _run(pipeline, [bad, bad], connections=2)  # both in one batch
    assert [ack_of(a)["code"] for a in acks] == ["AE"] * 5
    assert all("data-type" in ack_of(a)["errors"][0] for a in acks)
    counts = [(r["received"], r["stored"], r["quarantined"], r["duplicates"]) for r in _reports(pipeline)]
    assert sorted(counts) == [(2, 0, 0, 2), (3, 0, 1, 2)]
    assert len(list_entries(pipeline.engine, status=None)) == 1


def _accepted_tally(pipeline: Pipeline) -> tuple[int, int]:
    """The facility's ``conformance.record-accepted`` tally: (checked, failed) over all days."""
    from rhip.quality.schema import quality_tally as t

    rule = t.c.rule == "conformance.record-accepted"
    with pipeline.engine.connect() as conn:
        checked, failed = conn.execute(select(func.sum(t.c.checked), func.sum(t.c.failed)).where(rule)).one()
    return int(checked or 0), int(failed or 0)


@pytest.mark.parametrize("producer", [False, True], ids=["in-process", "producer"])
def test_identical_good_ndjson_lines_in_a_chunk_are_stored_once(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer: bool
) -> None:
    """Two identical good NDJSON lines in one chunk counted 2 stored for one written version (the
    second's meta.source won); the quality tally scored both."""
    from rhip.config import get_settings

    monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", "1" if producer else "0")
    get_settings.cache_clear()
    pipeline = make_pipeline(store, chunk_size=1000)
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join([GOOD % 1, GOOD % 1, GOOD % 2, BAD % 1, GOOD % 1, BAD % 1]) + b"\n")
    first = ingest_file(pipeline, path, "F1")
    assert pipeline.producer_stats is not None or not producer
    counts = (first.received, first.stored, first.quarantined, first.duplicates)
    assert counts == (6, 2, 1, 3), first
    _batch_rows(pipeline, first)
    p1 = store.read("Patient", "p1")
    assert p1["meta"]["versionId"] == "1" and p1["meta"]["source"].endswith("Patient.ndjson:1")
    assert _accepted_tally(pipeline) == (3, 1)  # the records stored and quarantined, not every line
    again = ingest_file(pipeline, path, "F1")
    assert (again.stored, again.quarantined, again.duplicates) == (0, 0, 6), again
    assert store.read("Patient", "p1")["meta"]["versionId"] == "1"


@pytest.mark.parametrize("producer", [False, True], ids=["in-process", "producer"])
def test_an_identical_good_line_in_a_later_chunk_is_a_duplicate(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer: bool
) -> None:
    """A good line repeated in a later chunk of the file, with no other version of its resource in
    between, counts as a duplicate: no new version, its resource still names the first line, and
    the quality rules score it once."""
    from rhip.config import get_settings

    monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", "1" if producer else "0")
    get_settings.cache_clear()
    pipeline = make_pipeline(store, chunk_size=2)
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join([GOOD % 1, GOOD % 2, GOOD % 3, GOOD % 1, GOOD % 2]) + b"\n")
    report = ingest_file(pipeline, path, "F1")
    assert pipeline.producer_stats is not None or not producer
    assert (report.received, report.stored, report.duplicates) == (5, 3, 2), report
    _batch_rows(pipeline, report)
    for n in (1, 2):
        res = store.read("Patient", f"p{n}")
        assert res["meta"]["versionId"] == "1" and res["meta"]["source"].endswith(f"Patient.ndjson:{n}")
    assert _accepted_tally(pipeline) == (3, 0)


@pytest.mark.parametrize("chunk_size", [1000, 1])
def test_a_later_different_line_of_the_same_resource_still_wins(
    store: Store, tmp_path: Path, chunk_size: int
) -> None:
    """A line repeating an earlier one after a different version of its resource is an update,
    in one chunk and across chunks."""
    pipeline = make_pipeline(store, chunk_size=chunk_size)
    path = tmp_path / "Patient.ndjson"
    other = b'{"resourceType": "Patient", "id": "p1", "gender": "female"}'
    path.write_bytes(b"\n".join([GOOD % 1, other, GOOD % 1]) + b"\n")
    report = ingest_file(pipeline, path, "F1")
    assert (report.stored, report.duplicates) == (3, 0), report
    p1 = store.read("Patient", "p1")
    assert p1["gender"] == "male" and p1["meta"]["source"].endswith("Patient.ndjson:3")


@pytest.mark.parametrize("chunk_size", [1000, 2])
def test_quality_tallies_agree_with_the_batch_counts(store: Store, tmp_path: Path, chunk_size: int) -> None:
    """Repeated bad lines, counted once as quarantined by the batch, each failed the
    record-accepted rule again (in the same chunk, a later chunk and a re-delivery)."""
    pipeline = make_pipeline(store, chunk_size=chunk_size)
    path = tmp_path / "Patient.ndjson"
    lines = [GOOD % 1, BAD % 1, BAD % 1, GOOD % 2, BAD % 2, BAD % 1, BAD % 2]
    path.write_bytes(b"\n".join(lines) + b"\n")
    first = ingest_file(pipeline, path, "F1")
    assert (first.stored, first.quarantined) == (2, 2), first
    assert _accepted_tally(pipeline) == (first.stored + first.quarantined, first.quarantined)
    again = ingest_file(pipeline, path, "F1")
    assert (again.stored, again.quarantined, again.duplicates) == (0, 0, 7), again
    assert _accepted_tally(pipeline) == (4, 2)
