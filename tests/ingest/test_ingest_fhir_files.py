"""FHIR NDJSON and bundles: Synthea loads fully; bad input is quarantined; re-delivery stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.ingest.schema import ingest_quarantine

DATA = Path(__file__).resolve().parents[1] / "data"

NDJSON_DIR = DATA / "synthea-bulk-ndjson"
BUNDLES = sorted((DATA / "synthea-r4").glob("*.json"))


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def _reasons(pipeline: Pipeline) -> list[list[dict[str, str]]]:
    with pipeline.engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(select(ingest_quarantine.c.reasons).order_by("q_id"))]


def test_synthea_ndjson_loads_fully_with_provenance(pipeline: Pipeline) -> None:
    for path in sorted(NDJSON_DIR.glob("*.ndjson")):
        rep = ingest_file(pipeline, path, "SYN")
        assert rep.reconciled
        assert rep.quarantined == 0, _reasons(pipeline)
        assert rep.stored == _lines(path)
    store = pipeline.store
    assert store.count("Patient") == _lines(NDJSON_DIR / "Patient.000.ndjson")
    prov = next(iter(store.iter_current("Provenance")))[0]
    assert prov is not None
    assert prov["agent"][0]["who"]["identifier"]["value"] == "SYN"
    assert ".000.ndjson:1.." in prov["entity"][0]["what"]["identifier"]["value"]
    patient = next(iter(store.iter_current("Patient")))[0]
    assert patient is not None and patient["meta"]["source"].startswith("urn:rhip:ingest:SYN/fhir-ndjson/")


def test_ndjson_redelivery_stores_nothing_twice(pipeline: Pipeline) -> None:
    path = NDJSON_DIR / "Patient.000.ndjson"
    first = ingest_file(pipeline, path, "SYN")
    second = ingest_file(pipeline, path, "SYN")
    assert first.stored == _lines(path)
    assert (second.stored, second.duplicates) == (0, _lines(path))
    assert pipeline.store.count("Patient") == _lines(path)
    assert all(e.version_id == 1 for e in pipeline.store.history("Patient", count=100).entries)


def test_update_from_same_source_is_a_new_version(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1990-01-01"}
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(orjson.dumps(patient) + b"\n")
    ingest_file(sqlite_pipeline, path, "F1")
    patient["birthDate"] = "1990-01-02"
    path.write_bytes(orjson.dumps(patient) + b"\n")
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert rep.stored == 1
    assert sqlite_pipeline.store.read("Patient", "p1")["meta"]["versionId"] == "2"
    assert sqlite_pipeline.store.count("Patient") == 1


def test_bad_ndjson_lines_are_quarantined_with_reasons(pipeline: Pipeline, tmp_path: Path) -> None:
    good = orjson.dumps({"resourceType": "Patient", "id": "ok1", "gender": "female"})
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(
        b"\n".join(
            [
                good,
                b'{"resourceType": "Patient", "id": "x1", ',  # malformed JSON
                b'{"resourceType": "Spaceship", "id": "s1"}',  # unknown resource type
                b'{"resourceType": "Patient", "id": "x2", "birthDate": 19900101}',  # wrong data type
                b'["not", "an", "object"]',
                b"",
                b'{"resourceType": "Patient", "id": "trunc", "name": [{"fam',  # truncated last line
            ]
        )
    )
    rep = ingest_file(pipeline, path, "F1")
    assert (rep.received, rep.stored, rep.quarantined) == (6, 1, 5)
    assert rep.reconciled
    rules = [[r["rule"] for r in reasons] for reasons in _reasons(pipeline)]
    assert rules[0] == ["json-syntax"]
    assert rules[1] and rules[1][0] != "json-syntax"  # unknown type, named by the validator
    assert rules[4] == ["json-syntax"]
    paths = [r["path"] for r in _reasons(pipeline)[2]]
    assert any("birthDate" in p for p in paths)
    assert pipeline.store.count("Patient") == 1


def test_wrong_types_in_elements_the_canonicaliser_reads_are_quarantined(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    """Names, telecoms, extensions, codings, units, components and stays of the wrong JSON type
    reach the validator, which names the element; they never stop the file."""
    lines = [
        {"resourceType": "Patient", "id": "n1", "name": 5},
        {"resourceType": "Patient", "id": "n2", "telecom": 7, "gender": "male"},
        {"resourceType": "Patient", "id": "n3", "gender": "male", "extension": [1, "x"]},
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": ["8867-4"]}]},
            "valueQuantity": {"value": 1, "unit": 5},
            "component": 3,
        },
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "hospitalization": "x",
        },
        {"resourceType": "Patient", "id": "ok1", "gender": "female"},
    ]
    path = tmp_path / "types.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert (rep.received, rep.stored, rep.quarantined) == (6, 1, 5) and rep.reconciled
    first_paths = [reasons[0]["path"] for reasons in _reasons(sqlite_pipeline)]
    assert first_paths == [
        "Patient.name",
        "Patient.telecom",
        "Patient.extension[0]",
        "Observation.code.coding[0].code",
        "Encounter.hospitalization",
    ]


def test_typed_file_rejects_other_types(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(
        orjson.dumps({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}})
        + b"\n"
    )
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert rep.quarantined == 1 and _reasons(sqlite_pipeline)[0][0]["rule"] == "resource-type"


def test_empty_file_is_an_empty_batch(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    for name in ("Patient.ndjson", "empty.json", "empty.hl7", "empty.csv", "empty.jsonl", "empty.dcm"):
        path = tmp_path / name
        path.write_bytes(b"")
        rep = ingest_file(sqlite_pipeline, path, "F1")
        assert rep.reconciled and rep.stored == 0
    assert sqlite_pipeline.store.count() == 0


def test_synthea_bundles_load_fully(pipeline: Pipeline) -> None:
    expected = 0
    for path in BUNDLES:
        bundle = orjson.loads(path.read_bytes())
        expected += len(bundle["entry"])
        rep = ingest_file(pipeline, path, "SYN")
        assert (rep.stored, rep.quarantined) == (1, 0), _reasons(pipeline)
    store = pipeline.store
    assert store.count("Patient") == len(BUNDLES)
    assert store.count() - store.count("Provenance") == expected
    enc = next(iter(store.iter_current("Encounter")))[0]
    assert enc is not None and enc["subject"]["reference"].startswith("Patient/")
    again = ingest_file(pipeline, BUNDLES[0], "SYN")
    assert again.duplicates == 1


def test_non_bundle_json_is_quarantined(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{"resourceType": "Patient"}')
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert rep.quarantined == 1 and _reasons(sqlite_pipeline)[0][0]["rule"] == "resource-type"


def test_a_canonicaliser_failure_quarantines_the_record_not_the_file(
    sqlite_pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(resource: dict[str, object]) -> list[object]:
        raise KeyError("a shape nobody foresaw")

    monkeypatch.setattr(sqlite_pipeline.preparer.canonicaliser, "apply", fails)
    path = tmp_path / "one.ndjson"
    path.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1", "gender": "female"}) + b"\n")
    rep = ingest_file(sqlite_pipeline, path, "F1")
    assert (rep.received, rep.quarantined) == (1, 1) and rep.reconciled
    (reason,) = _reasons(sqlite_pipeline)[0]
    assert (reason["rule"], reason["path"]) == ("canonicalise-error", "Patient")
    assert reason["message"] == "KeyError"
