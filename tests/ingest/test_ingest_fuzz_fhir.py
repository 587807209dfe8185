"""Fuzz: mutated NDJSON lines and bundles go through the real pipeline; nothing crashes or is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fuzzing import assert_batch_sound, fuzz_settings, mutated_bytes, mutated_json, shown_on_failure
from hypothesis import given
from hypothesis import strategies as st

from rhip.ingest.runner import ingest_file

DATA = Path(__file__).resolve().parents[1] / "data"


def _ndjson_seeds(region: Path) -> list[tuple[str, dict[str, Any]]]:
    """A few valid lines of each resource type the generator and Synthea write."""
    seeds: list[tuple[str, dict[str, Any]]] = []
    paths = sorted((region / "fhir").rglob("*.ndjson"))[:12] + sorted((region / "region").glob("*.ndjson"))
    paths += sorted((DATA / "synthea-bulk-ndjson").glob("*.ndjson"))
    for path in paths:
        lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()][:3]
        seeds.extend((path.name.split(".")[0], json.loads(ln)) for ln in lines)
    return seeds


@pytest.fixture(scope="module")
def ndjson_seeds(generated_region: Path) -> list[tuple[str, dict[str, Any]]]:
    return _ndjson_seeds(generated_region)


def _line(data: st.DataObject, seed: dict[str, Any]) -> bytes:
    raw = json.dumps(seed, ensure_ascii=False).encode()
    if data.draw(st.booleans()):
        return data.draw(mutated_json(seed))
    return data.draw(mutated_bytes(raw))


@fuzz_settings(default=30)
@given(data=st.data())
def test_mutated_ndjson_lines_are_stored_or_quarantined(
    data: st.DataObject, ndjson_seeds: list[tuple[str, dict[str, Any]]], store_factory: Any, tmp_path: Path
) -> None:
    """Wrong types at any path, deletions, byte flips and odd unicode: a reason or a valid resource."""
    rtype, seed = data.draw(st.sampled_from(ndjson_seeds))
    lines = [_line(data, seed) for _ in range(data.draw(st.integers(1, 3)))]
    typed = data.draw(st.booleans())
    path = tmp_path / (f"{rtype}.ndjson" if typed else "mixed.ndjson")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with shown_on_failure(lines=lines), store_factory.pipeline() as pipeline:
        report = ingest_file(pipeline, path, "FUZZ")
        assert_batch_sound(pipeline, report)


def _bundle_seed(seeds: list[tuple[str, dict[str, Any]]], picks: list[int], kind: str) -> dict[str, Any]:
    entries = []
    for n, i in enumerate(picks):
        res = dict(seeds[i % len(seeds)][1])
        res.pop("id", None)
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
                "resource": res,
                "request": {"method": "POST", "url": res.get("resourceType", "")},
            }
        )
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@fuzz_settings(default=20)
@given(data=st.data())
def test_mutated_bundles_are_stored_or_quarantined(
    data: st.DataObject, ndjson_seeds: list[tuple[str, dict[str, Any]]], store_factory: Any, tmp_path: Path
) -> None:
    """Transaction/batch bundles with mutated entries, requests and resources."""
    picks = data.draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=4))
    kind = data.draw(st.sampled_from(["transaction", "batch", "collection"]))
    seed = _bundle_seed(ndjson_seeds, picks, kind)
    if data.draw(st.booleans()):
        raw = data.draw(mutated_json(seed, max_ops=4))
    else:
        raw = data.draw(mutated_bytes(json.dumps(seed, ensure_ascii=False).encode()))
    path = tmp_path / "bundle.json"
    path.write_bytes(raw)
    with shown_on_failure(bundle=raw), store_factory.pipeline() as pipeline:
        report = ingest_file(pipeline, path, "FUZZ")
        assert_batch_sound(pipeline, report, received=_records_of(raw))


def _records_of(raw: bytes) -> int:
    """How many records a bundle file is: one per entry of a batch bundle, else one."""
    try:
        bundle = orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
    except orjson.JSONDecodeError:
        return 1
    if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" and bundle.get("type") == "batch":
        entries = bundle.get("entry")
        if isinstance(entries, list) and entries:
            return len(entries)
    return 1
