"""Batch bundles: each entry is a record, stored or quarantined on its own; transactions stay whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fuzzing import assert_batch_sound

from rhip.ingest.model import BatchReport
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.quarantine import list_entries, replay
from rhip.ingest.runner import ingest_file

P1 = "urn:uuid:11111111-1111-4111-8111-111111111111"
P2 = "urn:uuid:22222222-2222-4222-8222-222222222222"


def _entry(request: dict[str, Any], resource: dict[str, Any] | None = None, full: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"request": request}
    if resource is not None:
        entry["resource"] = resource
    if full:
        entry["fullUrl"] = full
    return entry


def _observation(code: str, subject: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": code},
        "subject": {"reference": subject},
        **more,
    }


def _load(pipeline: Pipeline, path: Path, kind: str, entries: list[dict[str, Any]]) -> BatchReport:
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}))
    report = ingest_file(pipeline, path, "F1")
    assert_batch_sound(pipeline, report)  # reconciled, and quarantined == its quarantine rows
    return report


def _counts(report: BatchReport) -> tuple[int, int, int, int]:
    return report.received, report.stored, report.quarantined, report.duplicates


def test_failed_batch_entries_are_quarantined_alone(pipeline: Pipeline, tmp_path: Path) -> None:
    """A batch bundle with failed entries was quarantined whole (the validator's failure kept every
    entry out; the store's left the others written and counted nothing stored)."""
    entries = [
        _entry({"method": "POST", "url": "Patient"}, {"resourceType": "Patient", "gender": "male"}, P1),
        _entry({"method": "POST", "url": "Patient"}, {"resourceType": "Patient", "birthDate": "1990-13"}, P2),
        _entry({"method": "POST", "url": "Observation"}, _observation("a", P1)),
        _entry({"method": "GET", "url": "Patient/unknown"}),
        _entry(
            {"method": "POST", "url": "Observation", "ifNoneExist": "identifier=urn:lab|9"},
            _observation("b", "Patient/p", identifier=[{"system": "urn:lab", "value": "9"}], status="bad"),
        ),
    ]
    report = _load(pipeline, tmp_path / "b.json", "batch", entries)
    assert _counts(report) == (5, 2, 3, 0)
    found = [(e.position, [(r["rule"], r["path"]) for r in e.reasons]) for e in list_entries(pipeline.engine)]
    assert found[:2] == [
        ("b.json:entry[1]", [("value", "Patient.birthDate")]),
        ("b.json:entry[3]", [("not-found", "Bundle.entry[3]")]),
    ]
    assert found[2][0] == "b.json:entry[4]"
    assert found[2][1] and all(path.startswith("Bundle.entry[4]") for _rule, path in found[2][1]), found
    assert pipeline.store.count("Patient") == 1 and pipeline.store.count("Observation") == 1
    ((obs, *_),) = list(pipeline.store.iter_current("Observation"))
    assert obs["subject"]["reference"] == f"Patient/{P1[9:]}"  # the bundle's reference, rewritten

    again = ingest_file(pipeline, tmp_path / "b.json", "F1")  # re-delivery: nothing new
    assert _counts(again) == (5, 0, 0, 5)
    assert len(list_entries(pipeline.engine, status=None)) == 3


def test_failed_batch_entry_is_replayed_alone(pipeline: Pipeline, tmp_path: Path) -> None:
    """A batch entry whose conditional reference found no Patient is stored by replay once the
    Patient has arrived; the bundle's other entries are not applied again."""
    lab = _observation("glucose", "Patient?identifier=urn:mrn|77")
    entries = [
        _entry({"method": "POST", "url": "Observation"}, _observation("a", "Patient/x"), P1),
        _entry({"method": "POST", "url": "Observation", "ifNoneExist": "identifier=urn:lab|1"}, lab),
    ]
    report = _load(pipeline, tmp_path / "b.json", "batch", entries)
    assert _counts(report) == (2, 1, 1, 0)
    (entry,) = list_entries(pipeline.engine)
    assert entry.position == "b.json:entry[1]" and entry.reasons[0]["path"] == "Bundle.entry[1]"
    assert "Bundle.entry[1].resource.subject" in entry.reasons[0]["message"]

    still = replay(pipeline, [entry])
    assert (still.received, still.quarantined) == (1, 1)

    patient = {"resourceType": "Patient", "id": "m77", "identifier": [{"system": "urn:mrn", "value": "77"}]}
    (tmp_path / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    ingest_file(pipeline, tmp_path / "Patient.ndjson", "F1")
    fixed = replay(pipeline, [entry])
    assert (fixed.received, fixed.stored, fixed.quarantined) == (1, 1, 0)
    assert list_entries(pipeline.engine) == []
    subjects = sorted(o["subject"]["reference"] for o, *_ in pipeline.store.iter_current("Observation"))
    assert subjects == ["Patient/m77", "Patient/x"]


def test_transaction_with_a_failed_entry_stays_whole(pipeline: Pipeline, tmp_path: Path) -> None:
    """A transaction is all or nothing: one record, quarantined whole, nothing written."""
    entries = [
        _entry({"method": "POST", "url": "Patient"}, {"resourceType": "Patient", "gender": "male"}),
        _entry({"method": "DELETE", "url": "Patient/unknown"}),
    ]
    report = _load(pipeline, tmp_path / "t.json", "transaction", entries)
    assert _counts(report) == (1, 0, 1, 0)
    (entry,) = list_entries(pipeline.engine)
    assert entry.position == "t.json" and entry.reasons[0]["rule"] == "not-found"
    assert pipeline.store.count("Patient") == 0
