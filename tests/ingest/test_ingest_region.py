"""A generated region goes through every connector (HL7 v2 over real MLLP, devices over real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rhip.cli import app
from rhip.fhir import systems
from rhip.ingest.conceptmaps import install_conceptmaps
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_region
from rhip.ingest.schema import ingest_batch
from rhip.quality import facility_scores
from rhip.quality.collector import QualityCollector
from rhip.store import Store


@pytest.mark.slow
def test_generated_region_via_mllp(tmp_path: Path) -> None:
    region = tmp_path / "region"
    params = tmp_path / "params.yaml"  # a region this small has no device at the default share
    params.write_text("wearable:\n  share_of_chronic: 1.0\n  max_devices: 2\n  days: 1\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["generate", "--out", str(region), "--residents", "30", "--years", "1", "--params", str(params)],
    )
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{tmp_path / 'region.sqlite'}")
    try:
        install_conceptmaps(store)
        pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
        report = ingest_region(pipeline, region, via_mllp=True, via_http=True)
        total = report.total
        assert total.received > 0 and total.reconciled
        assert total.quarantined == 0, report.by_connector
        for name in ("fhir-ndjson", "hl7v2", "csv", "dicom", "device-json"):
            assert report.by_connector[name].stored > 0, name
            assert report.by_connector[name].resources_written > 0, name  # the table's "resources"
        with store.engine.connect() as conn:
            where = select(ingest_batch.c.location).where(ingest_batch.c.connector == "device-json")
            assert set(conn.execute(where).scalars()) == {"http"}  # posted over HTTP, not read
        assert store.count("Patient") > 0 and store.count("Provenance") > 0
        meds = [m for m, *_ in store.iter_current("MedicationRequest") if m]
        local = [
            m
            for m in meds
            if any("/CodeSystem/local/" in c["system"] for c in m["medicationCodeableConcept"]["coding"])
        ]
        assert local and all(
            any(c["system"] == systems.ATC for c in m["medicationCodeableConcept"]["coding"]) for m in local
        )
        assert facility_scores(store.engine, by_day=False)
        again = ingest_region(pipeline, region, via_mllp=True, via_http=True).total
        assert again.stored == 0 and again.duplicates == again.received  # re-delivery stores nothing
    finally:
        store.close()
