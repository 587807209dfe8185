"""Canonical forms: timestamps with offsets, UCUM, sex codes, full-width folding, ConceptMaps."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rhip.fhir import systems
from rhip.ingest.canonical import Canonicaliser, ConceptTranslator, fold, sex_codes, to_instant, ucum
from rhip.ingest.conceptmaps import shipped_conceptmaps
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.store import Store


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20261101083000", "2026-11-01T08:30:00+08:00"),
        ("202611010830+0000", "2026-11-01T08:30:00+00:00"),
        ("2026-11-01 08:30:00", "2026-11-01T08:30:00+08:00"),
        ("2026-11-01T08:30:00Z", "2026-11-01T08:30:00Z"),
        ("20261101", "2026-11-01"),
        ("2026-11-01", "2026-11-01"),
    ],
)
def test_to_instant(raw: str, expected: str) -> None:
    assert to_instant(raw) == expected


def test_to_instant_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        to_instant("yesterday")


def test_units_sex_and_folding() -> None:
    assert ucum("mmHg") == "mm[Hg]" and ucum("次/分") == "/min" and ucum("×10^9/L") == "10*9/L"
    assert sex_codes("男") == ("male", "1") and sex_codes("F") == ("female", "2") and sex_codes("x") is None
    assert fold("  ＺＨＡＮＧ　San  ") == "ZHANG San"


def test_canonicaliser_patient_and_observation() -> None:
    translator = ConceptTranslator(shipped_conceptmaps())
    canon = Canonicaliser(translator)
    patient = {
        "resourceType": "Patient",
        "gender": "2",
        "name": [{"text": " 王　芳"}],
        "identifier": [{"system": systems.CITIZEN_ID, "value": "１１０１０１１９９００３０７４５１x"}],
    }
    found = canon.apply(patient)
    assert patient["gender"] == "female" and patient["name"][0]["text"] == "王 芳"
    assert patient["identifier"][0]["value"] == "11010119900307451X"
    assert any(i.code == "citizen-id-checksum" for i in found)  # reported, never silently fixed
    med = {
        "resourceType": "MedicationRequest",
        "authoredOn": "2026-03-01 09:00:00",
        "medicationCodeableConcept": {
            "coding": [{"system": systems.local_code_system("H9", "drug"), "code": "D008"}]
        },
    }
    canon.apply(med)
    assert med["authoredOn"] == "2026-03-01T09:00:00+08:00"
    assert {"system": systems.ATC, "code": "B01AC06"} in med["medicationCodeableConcept"]["coding"]
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 120, "unit": "mmHg"}}
    canon.apply(obs)
    assert obs["valueQuantity"]["code"] == "mm[Hg]" and obs["valueQuantity"]["system"] == systems.UCUM


def test_conceptmap_held_in_the_store_is_used(sqlite_store: Store, tmp_path: Path) -> None:
    """A region adds a mapping by storing a ConceptMap; the next pipeline translates with it."""
    local = systems.local_code_system("F1", "lab")
    sqlite_store.bulk_write(
        [
            {
                "resourceType": "ConceptMap",
                "id": "f1-lab",
                "status": "active",
                "group": [
                    {
                        "source": local,
                        "target": systems.LOINC,
                        "element": [
                            {"code": "GLU", "target": [{"code": "14771-0", "equivalence": "equivalent"}]}
                        ],
                    }
                ],
            }
        ]
    )
    pipeline = Pipeline(sqlite_store)
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(
        orjson.dumps(
            {
                "resourceType": "Observation",
                "id": "g1",
                "status": "final",
                "code": {"coding": [{"system": local, "code": "GLU"}]},
                "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
            }
        )
        + b"\n"
    )
    assert ingest_file(pipeline, path, "F1").stored == 1
    obs = sqlite_store.read("Observation", "g1")
    assert {"system": systems.LOINC, "code": "14771-0"} in obs["code"]["coding"]
    assert obs["valueQuantity"]["code"] == "mmol/L"


def test_discharge_disposition_is_translated() -> None:
    canon = Canonicaliser(ConceptTranslator(shipped_conceptmaps()))
    enc = {
        "resourceType": "Encounter",
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [{"system": systems.local_code_system("C1", "discharge"), "code": "5"}]
            }
        },
    }
    canon.apply(enc)
    codes = enc["hospitalization"]["dischargeDisposition"]["coding"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "exp"} in codes


def test_every_local_code_the_generator_writes_has_a_shipped_mapping() -> None:
    """Drugs, vaccines, the lab order code and discharge codes, read from the generator's tables."""
    from rhip.synth.reference import load_reference

    ref = load_reference()
    translator = ConceptTranslator(shipped_conceptmaps())
    local = {
        "drug": {str(row[0]) for row in ref.catalog["drugs"].values()},
        "vaccine": {row["abbr"] for row in ref.schedule},
        "lab-panel": {"LAB"},  # OBR-4 of the generator's ORU^R01 (hl7v2 writer)
        "discharge": {"1", "5"},  # 离院方式 of the community-centre extract
    }
    missing = [
        (domain, code)
        for domain, codes in local.items()
        for code in sorted(codes)
        if translator.translate(systems.local_code_system("ANY-FACILITY", domain), code) is None
    ]
    assert len(local["drug"]) >= 20 and len(local["vaccine"]) >= 10
    assert not missing, missing
    v2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"  # PV1-36 of the generator's ADT
    assert all(translator.translate(v2_0112, code) for code in ("01", "20"))
