"""Big files stream: memory stays flat whatever the size (the 2 GB run: benchmarks/ingest_ndjson.py)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
import pytest

from rhip.ingest.canonical import Canonicaliser, ConceptTranslator
from rhip.ingest.fhir_files import iter_ndjson
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.ingest.validate import ResourceValidator

LINE = orjson.dumps(
    {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x" * 900}}
)


def _file(path: Path, lines: int, unique: bool = False) -> Path:
    with path.open("wb") as fh:
        for i in range(lines):
            fh.write(LINE.replace(b'"id":"o"', f'"id":"o{i}"'.encode()) + b"\n" if unique else LINE + b"\n")
    return path


def _peak(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_connector_streams_a_large_file_in_bounded_memory(tmp_path: Path) -> None:
    big = _file(tmp_path / "big.ndjson", 60_000)  # ~56 MB
    assert big.stat().st_size > 50_000_000
    canon, validator = Canonicaliser(ConceptTranslator()), ResourceValidator()
    validator.errors(orjson.loads(LINE))  # load the validator's tables before measuring

    def run() -> None:
        for rec in iter_ndjson(big):
            res = orjson.loads(rec.raw)
            canon.apply(res)
            assert not validator.errors(res)

    assert _peak(run) < 5_000_000  # a few lines' worth, not the 56 MB file


@pytest.mark.slow
def test_pipeline_memory_does_not_grow_with_file_size(sqlite_store: object, tmp_path: Path) -> None:
    small = _file(tmp_path / "small.ndjson", 400, unique=True)
    large = _file(tmp_path / "large.ndjson", 2000, unique=True)
    pipe = Pipeline(sqlite_store, chunk_size=200)
    ingest_file(pipe, _file(tmp_path / "warm.ndjson", 200, unique=True), "W")  # warm caches
    peak_small = _peak(lambda: ingest_file(pipe, small, "S"))
    peak_large = _peak(lambda: ingest_file(pipe, large, "L"))
    assert peak_large < peak_small * 1.5 + 1_000_000, (peak_small, peak_large)


_HL7 = (
    "MSH|^~\\&|HIS|H1|R|R|20261101083000||ADT^A28^ADT_A05|{n}|P|2.5\rPID|1||{n}^^^H1^MR||Li^Ming||19800101|M"
)
_GOOD = {
    ".ndjson": lambda n: orjson.dumps({"resourceType": "Patient", "id": n, "gender": "male"}),
    ".hl7": lambda n: _HL7.format(n=n).encode(),
    ".jsonl": lambda n: orjson.dumps(
        {"device_id": n, "patient_id": "p1", "type": "heart-rate", "value": 70, "time": "2026-11-01T08:00:00"}
    ),
    ".csv": lambda n: f"{n},Li".encode(),
}
_MAPPING = (
    "name: tiny\nencoding: utf-8\ntables:\n  big.csv:\n    resources:\n      - type: Patient\n"
    "        id_from: [id]\n        fields:\n          name[0].text: {column: name}\n"
)


def _sparse(path: Path, head: bytes, tail: bytes, hole: int = 2 * 1024**3) -> Path:
    """A file of ``hole`` zero bytes with no line break between two records (sparse: no disk)."""
    with path.open("wb") as fh:
        fh.write(head + b"\n")
        fh.seek(hole, 1)
        fh.write(b"\n" + tail + b"\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suffix", "hole"),
    [(".ndjson", 2 * 1024**3), (".hl7", 2 * 1024**3), (".csv", 80 * 1024**2), (".jsonl", 80 * 1024**2)],
)
def test_an_over_long_line_is_quarantined_in_bounded_memory(
    sqlite_pipeline: Pipeline, tmp_path: Path, suffix: str, hole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose middle has no line break (2 GB for FHIR and HL7; past the 64 MiB line limit
    for CSV and devices, which share the FHIR reader): the records around it are stored, memory
    stays bounded by the line limit, and the long line is one quarantined record with its size."""
    from rhip.config import get_settings
    from rhip.ingest.lines import KEPT
    from rhip.ingest.quarantine import list_entries

    monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", "0")  # this process's reader (its peak memory)
    get_settings.cache_clear()  # the pipeline fixture has read the settings already
    good = _GOOD[suffix]
    head = b"id,name\n" + good("a1") if suffix == ".csv" else good("a1")
    path = _sparse(tmp_path / f"big{suffix}", head, good("a2"), hole)
    assert path.stat().st_size > hole
    mapping = tmp_path / "tiny.yaml"
    mapping.write_text(_MAPPING, encoding="utf-8")
    rep = None

    def run() -> None:
        nonlocal rep
        rep = ingest_file(sqlite_pipeline, path, "F1", mapping=str(mapping))

    peak = _peak(run)
    # HL7: the long line is a segment of the message before it, which it takes into quarantine
    expected = (2, 1, 1) if suffix == ".hl7" else (3, 2, 1)
    assert rep is not None and (rep.received, rep.stored, rep.quarantined) == expected, rep
    assert peak < 400_000_000, peak  # a few line-limit buffers at most, never the whole line
    (entry,) = list_entries(sqlite_pipeline.engine)
    assert entry.reasons[0]["rule"] == "size-limit"
    assert entry.reasons[0]["message"].startswith(f"line of {hole} bytes exceeds")
    assert len(entry.raw) <= KEPT + len(head) + 1


@pytest.mark.slow
def test_a_2_gb_bundle_is_not_read_into_memory(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = _sparse(tmp_path / "bundle.json", b'{"resourceType": "Bundle", "type": "batch", "entry": [', b"]}")
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert (rep.received, rep.quarantined) == (1, 1)
    with sqlite_pipeline.engine.connect() as conn:
        from sqlalchemy import select

        from rhip.ingest.schema import ingest_quarantine

        reasons = conn.execute(select(ingest_quarantine.c.reasons)).scalar_one()
    assert "size-limit" in reasons
