"""Quality rules: each dimension detects what it should; scores reconcile; the catalogue is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.quality import RULES, QualityCollector, catalogue, facility_scores, rule_scores
from rhip.quality.rules import RuleContext
from rhip.store import Store

ROOT = Path(__file__).resolve().parents[2]
GOOD_ID = make_citizen_id("330402", __import__("datetime").date(1980, 5, 6), 11, "male")


def _check(rule_id: str, resource: dict[str, object], ctx: RuleContext | None = None) -> bool | None:
    return RULES[rule_id].check(resource, ctx or RuleContext())


def test_completeness_and_conformance() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": systems.CITIZEN_ID, "value": GOOD_ID}],
        "gender": "male",
        "birthDate": "1980-05-06",
        "name": [{"text": "张三"}],
    }
    assert _check("completeness.patient-name", patient) is True
    assert _check("completeness.patient-birthdate", {"resourceType": "Patient"}) is False
    assert _check("conformance.citizen-id", patient) is True
    bad = dict(patient, identifier=[{"system": systems.CITIZEN_ID, "value": GOOD_ID[:17] + "0"}])
    assert _check("conformance.citizen-id", bad) is (GOOD_ID[17] == "0")
    assert _check("conformance.citizen-id", {"resourceType": "Patient"}) is None
    local = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": systems.local_code_system("F", "lab"), "code": "X1"}]},
    }
    assert _check("conformance.standard-code", local) is False
    assert (
        _check(
            "conformance.ucum-unit",
            {"resourceType": "Observation", "valueQuantity": {"value": 1, "unit": "bpm"}},
        )
        is False
    )


def test_plausibility() -> None:
    hr = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": systems.LOINC, "code": "8867-4"}]},
        "valueQuantity": {"value": 400},
    }
    assert _check("plausibility.vital-range", hr) is False
    hr["valueQuantity"] = {"value": 70}
    assert _check("plausibility.vital-range", hr) is True
    assert (
        _check("plausibility.birthdate-range", {"resourceType": "Patient", "birthDate": "2999-01-01"})
        is False
    )
    enc = {
        "resourceType": "Encounter",
        "period": {"start": "2026-01-02T10:00:00+08:00", "end": "2026-01-01T10:00:00+08:00"},
    }
    assert _check("plausibility.period-order", enc) is False
    ctx = RuleContext(patients={"Patient/m": {"gender": "male"}})
    pregnancy = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/m"},
        "code": {"coding": [{"system": systems.ICD10_CN, "code": "O80.000"}]},
    }
    assert _check("plausibility.sex-appropriate", pregnancy, ctx) is False
    assert (
        _check(
            "plausibility.not-future",
            {"resourceType": "Observation", "effectiveDateTime": "2999-01-01T00:00:00+08:00"},
        )
        is False
    )


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_collector_scores_per_facility_day_rule(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'q.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_pg_url")
    )
    store = Store(url)
    try:
        collector = QualityCollector(store.engine)
        src = SourceInfo("F1", "hl7v2")
        event = 1_790_000_000.0  # 2026-09-21 (UTC+8)
        good = Mapped(
            [
                {
                    "resourceType": "Patient",
                    "id": "a",
                    "gender": "male",
                    "birthDate": "1980-01-01",
                    "identifier": [{"value": "1"}],
                    "name": [{"text": "A"}],
                }
            ],
            event_time=event,
        )
        late = Mapped(
            [
                {
                    "resourceType": "Patient",
                    "id": "b",
                    "gender": "female",
                    "identifier": [{"value": "2"}],
                    "name": [{"text": "B"}],
                }
            ],
            event_time=event,
        )
        collector.on_stored(Record(b"", "1"), good, src, event + 60)
        collector.on_stored(Record(b"", "2"), late, src, event + 3 * 86400)
        collector.on_quarantined(Record(b"", "3"), [], src)
        collector.on_chunk_end()
        collector.on_chunk_end()  # nothing pending: no double counting
        rules = {(r["day"], r["rule"]): r for r in rule_scores(store.engine, facility="F1")}
        birth = rules[("2026-09-21", "completeness.patient-birthdate")]
        assert (birth["checked"], birth["failed"], birth["score"]) == (2, 1, 50.0)
        timely = rules[("2026-09-21", "timeliness.arrival-24h")]
        assert (timely["checked"], timely["failed"]) == (2, 1) and timely["mean_delay_seconds"] > 86400
        scores = facility_scores(store.engine, facility="F1")
        day = next(s for s in scores if s["day"] == "2026-09-21")
        assert day["timeliness"] == 50.0 and 0 < day["score"] < 100
    finally:
        store.close()


def test_catalogue_is_documented() -> None:
    text = (ROOT / "docs" / "quality.md").read_text(encoding="utf-8")
    missing = [r["id"] for r in catalogue() if f"`{r['id']}`" not in text]
    assert not missing, f"rules missing from docs/quality.md: {missing}"


def test_age_appropriate_and_after_birth() -> None:
    ctx = RuleContext(
        patients={
            "Patient/c": {"gender": "female", "birthDate": "2020-01-01"},
            "Patient/w": {"gender": "female", "birthDate": "1990-01-01"},
        }
    )
    bcg = {
        "resourceType": "Immunization",
        "patient": {"reference": "Patient/w"},
        "vaccineCode": {"coding": [{"system": "x", "code": "BCG"}]},
        "occurrenceDateTime": "2026-01-01",
    }
    assert _check("plausibility.age-appropriate", bcg, ctx) is False
    assert _check("plausibility.age-appropriate", dict(bcg, patient={"reference": "Patient/c"}), ctx) is True
    perinatal = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/c"},
        "code": {"coding": [{"system": systems.ICD10_CN, "code": "P07.300"}]},
        "recordedDate": "2026-01-01",
    }
    assert _check("plausibility.age-appropriate", perinatal, ctx) is False
    pregnancy = dict(
        perinatal,
        subject={"reference": "Patient/w"},
        code={"coding": [{"system": systems.ICD10_CN, "code": "O80.000"}]},
    )
    assert _check("plausibility.age-appropriate", pregnancy, ctx) is True
    before = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/c"},
        "effectiveDateTime": "2019-06-01T08:00:00+08:00",
    }
    assert _check("plausibility.after-birth", before, ctx) is False
    assert _check("plausibility.after-birth", dict(before, effectiveDateTime="2021-06-01"), ctx) is True
    assert (
        _check("plausibility.after-birth", dict(before, subject={"reference": "Patient/unknown"}), ctx)
        is None
    )
