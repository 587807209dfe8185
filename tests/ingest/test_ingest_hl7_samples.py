"""HL7 v2: the real-world samples (not written by us) are each stored or quarantined with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from rhip.ingest import hl7v2
from rhip.ingest.mappers import MAPPERS, MapContext
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import ingest_quarantine

DATA = Path(__file__).resolve().parents[1] / "data"

SAMPLES = sorted((DATA / "hl7v2" / "messages").glob("*.hl7"))
EXPECTED_QUARANTINE = {
    "ADT-A09-01.hl7": "unsupported-event",
    "ADT-A11-01.hl7": "unsupported-event",
    "ADT-A41-01.hl7": "unsupported-event",
    "ADT-A45-01.hl7": "unsupported-event",
    "ADT-A47-01.hl7": "unsupported-event",
    "ADT-A60-01.hl7": "unsupported-event",
    "LAB-ORM-1.hl7": "unsupported-message-type",
    "MDHHS-OML-O21-1.hl7": "unsupported-message-type",
    "MDM-T02-01.hl7": "unsupported-message-type",
    "ORM-O01-01.hl7": "unsupported-message-type",
    "OUL-R22-01.hl7": "unsupported-message-type",
    "SIU-S12-01.hl7": "unsupported-message-type",
    "PC1-Problem-Add-v2.3.1.hl7": "unsupported-message-type",
    "PC1-Problem-Delete-v2.3.1.hl7": "unsupported-message-type",
    "PC1-Problem-Update-v2.3.1.hl7": "unsupported-message-type",
    "ORU-R01-01.hl7": "required",  # its second OBX has no observation identifier
    "pyhl7-sample_hl7-ORU-R01-v2.4.hl7": "value",  # PID-7 is 19620352 (day 52)
}


def test_there_are_forty_samples() -> None:
    assert len(SAMPLES) == 40


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_each_sample_is_stored_or_quarantined_with_reason(sqlite_pipeline: Pipeline, path: Path) -> None:
    report = sqlite_pipeline.run(SourceInfo(path.stem, "hl7v2", path.name), hl7v2.iter_hl7_file(path))
    assert report.received == 1 and report.reconciled
    if path.name in EXPECTED_QUARANTINE:
        assert report.quarantined == 1
        with sqlite_pipeline.engine.connect() as conn:
            reasons = conn.execute(select(ingest_quarantine.c.reasons)).scalar_one()
        assert EXPECTED_QUARANTINE[path.name] in reasons
    else:
        assert report.stored == 1, path.name
        assert report.resources_written >= 1


def test_all_samples_on_both_backends(pipeline: Pipeline) -> None:
    """One run over every sample per back end: counts reconcile, ORU results become Observations."""
    total_stored = total_q = 0
    for path in SAMPLES:
        rep = pipeline.run(SourceInfo(path.stem, "hl7v2", path.name), hl7v2.iter_hl7_file(path))
        assert rep.reconciled
        total_stored += rep.stored
        total_q += rep.quarantined
    assert total_stored == 40 - len(EXPECTED_QUARANTINE)
    assert total_q == len(EXPECTED_QUARANTINE)
    store = pipeline.store
    assert store.count("Observation") >= 10
    assert store.count("Immunization") >= 3
    assert store.count("MedicationRequest") >= 1
    assert store.count("Provenance") == total_stored


def test_batch_file_envelope_is_unwrapped() -> None:
    path = DATA / "hl7v2" / "messages" / "pyhl7-sample_file-batch-ADT-A04-v2.5.hl7"
    records = list(hl7v2.iter_hl7_file(path))
    assert len(records) == 1
    assert records[0].raw.startswith(b"MSH|")


def _one(pipeline: Pipeline, raw: bytes) -> tuple[str, str]:
    source = SourceInfo("H1", "hl7v2", "t")
    ctx = MapContext(source, pipeline.tz, pipeline.translator)
    ((outcome, reasons),) = pipeline.process_chunk(
        pipeline.open_batch(source), ctx, [Record(raw, "t#1")], MAPPERS["hl7v2"], track=True
    )
    return outcome, reasons[0]["rule"] if reasons else ""


MSG = (
    "MSH|^~\\&|HIS|H1|R|R|20261101||ADT^A28^ADT_A05|E{n}|P|2.5|||||CHN|{charset}\r"
    "PID|1||M{n}^^^H1^MR||王^芳||19800506|F\r"
)


def test_gb18030_message_declared_in_msh18(sqlite_pipeline: Pipeline) -> None:
    raw = MSG.format(n=1, charset="GB 18030-2000").encode("gb18030")
    assert _one(sqlite_pipeline, raw) == ("stored", "")
    patient = next(iter(sqlite_pipeline.store.iter_current("Patient")))[0]
    assert patient is not None and patient["name"][0]["text"] == "王芳"


def test_undecodable_bytes_and_broken_segments_are_quarantined(sqlite_pipeline: Pipeline) -> None:
    garbage = MSG.format(n=2, charset="").encode("utf-8").replace("王".encode(), b"\xff\xfe\xfd")
    assert _one(sqlite_pipeline, garbage) == ("quarantined", "encoding")
    broken = MSG.format(n=3, charset="").replace("PID|1", "pid|1").encode()
    assert _one(sqlite_pipeline, broken) == ("quarantined", "segment-syntax")
    no_pid = MSG.format(n=4, charset="").split("\r")[0].encode()
    assert _one(sqlite_pipeline, no_pid) == ("quarantined", "required")
