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
