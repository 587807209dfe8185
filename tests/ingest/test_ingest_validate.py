"""Structure is checked once per resource: before canonicalisation, then the platform validator alone."""

from __future__ import annotations

import orjson

from rhip.ingest.canonical import ConceptTranslator
from rhip.ingest.fhir_files import map_ndjson
from rhip.ingest.mappers import MapContext
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import RecordPreparer
from rhip.ingest.validate import ResourceValidator, structural_issues

SOURCE = SourceInfo(facility="F1", connector="fhir-ndjson")


def _prepare(resource: object) -> tuple[object, list[dict[str, str]]]:
    translator = ConceptTranslator()
    preparer = RecordPreparer(translator, "Asia/Shanghai", ResourceValidator())
    ctx = MapContext(SOURCE, "Asia/Shanghai", translator)
    return preparer.map_record(Record(orjson.dumps(resource), "f.ndjson:1"), "k1", ctx, map_ndjson)


def test_content_errors_leaves_structure_to_the_caller() -> None:
    validator = ResourceValidator()
    bad_id = {"resourceType": "Patient", "id": "no spaces allowed", "gender": "female"}
    assert [i.code for i in validator.errors(bad_id)] == ["id-format"]
    assert "id-format" not in [i.code for i in validator.content_errors(bad_id)]
    bad_content = {"resourceType": "Patient", "id": "p1", "birthDate": 19900105}
    assert structural_issues(bad_content) == []
    assert validator.errors(bad_content) == validator.content_errors(bad_content) != []
    assert ResourceValidator(use_platform=False).content_errors(bad_content) == []


def test_map_record_reports_a_structural_problem_once() -> None:
    mapped, reasons = _prepare({"resourceType": "Patient", "id": "bad id!", "birthDate": 19900105})
    assert mapped is None
    assert [(r["rule"], r["path"]) for r in reasons] == [("id-format", "Patient.id")]


def test_map_record_runs_the_platform_validator_after_canonicalising() -> None:
    mapped, reasons = _prepare({"resourceType": "Patient", "id": "p1", "birthDate": 19900105})
    assert mapped is None
    assert [(r["rule"], r["path"]) for r in reasons] == [("structure", "Patient.birthDate")]
    mapped, reasons = _prepare({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert reasons == [] and mapped is not None
    (obs,) = mapped.resources
    assert structural_issues(obs) == [] and len(obs["id"]) == 32
    assert obs["meta"]["source"] == "urn:rhip:ingest:F1/fhir-ndjson/f.ndjson:1"
