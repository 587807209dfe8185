"""Incremental Parquet export from a real store (SQLite and PostgreSQL), read back through views."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rhip.fhir import systems
from rhip.lake.engine import DuckDBEngine, SparkEngine
from rhip.lake.export import export_store, read_state
from rhip.lake.library import load_views, materialize


def _region(n_patients: int = 20) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n_patients):
        out.append({
            "resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
            "birthDate": f"19{50 + i}-03-0{1 + i % 9}",
            "name": [{"text": f"N{i}", "family": "F", "given": ["G"]}],
        })  # fmt: skip
        for j in range(5):
            cat = "vital-signs" if j < 3 else "laboratory"
            out.append({
                "resourceType": "Observation", "id": f"o{i}-{j}", "status": "final",
                "category": [{"coding": [{"system": systems.OBSERVATION_CATEGORY, "code": cat}]}],
                "code": {"coding": [{"system": systems.LOINC, "code": f"L{j}"}]},
                "subject": {"reference": f"Patient/p{i}"}, "effectiveDateTime": "2024-05-01T08:00:00+08:00",
                "valueQuantity": {"value": 10 * i + j, "unit": "mmHg", "code": "mm[Hg]"},
            })  # fmt: skip
    out.append({
        "resourceType": "Patient", "id": "res1",
        "meta": {"tag": [{"system": systems.MPI_TAG, "code": "golden"}]},
        "identifier": [{"system": systems.VIRTUAL_HEALTH_CARD, "value": "VHC-1"}],
        "link": [{"type": "seealso", "other": {"reference": "Patient/p0"}},
                 {"type": "seealso", "other": {"reference": "Patient/p1"}}],
    })  # fmt: skip
    return out


def _rows(lake: Path, sql: str) -> list[tuple[Any, ...]]:
    engine = DuckDBEngine()
    try:
        engine.attach_lake(lake)
        return engine.con.execute(sql).fetchall()
    finally:
        engine.close()


def test_incremental_export_honours_updates_and_deletions(db_url: str, tmp_path: Path) -> None:
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(db_url)
    try:
        store.bulk_write(_region())
        first = export_store(store, lake)
        assert first.mode == "full"
        assert first.written == {"Observation": 100, "Patient": 21}
        again = export_store(store, lake)
        assert again.total == 0, "nothing changed, nothing exported"
        time.sleep(0.01)
        store.delete("Observation", "o3-1")
        changed = store.read("Observation", "o4-0")
        changed["valueQuantity"]["value"] = 999
        store.update("Observation", "o4-0", changed)
        store.create({"resourceType": "Observation", "id": "new1", "status": "final", "code": {"text": "n"}})
        delta = export_store(store, lake)
    finally:
        store.close()
    assert delta.mode == "incremental"
    assert delta.written == {"Observation": 2, "Patient": 0} and delta.deleted["Observation"] == 1
    state = read_state(lake)["types"]["Observation"]
    assert state["delta_batches"], "small changes stay as a delta batch"
    assert _rows(lake, "SELECT count(*) FROM fhir_observation") == [(100,)]
    value = "SELECT resource->>'$.valueQuantity.value' FROM fhir_observation WHERE id = 'o4-0'"
    assert _rows(lake, value) == [("999",)]
    assert _rows(lake, "SELECT count(*) FROM fhir_observation WHERE id = 'o3-1'") == [(0,)]


def test_compaction_folds_deltas_into_a_new_base(tmp_path: Path) -> None:
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write(_region(4))
        export_store(store, lake)
        for j in range(5):
            store.delete("Observation", f"o0-{j}")
            store.delete("Observation", f"o1-{j}")
        report = export_store(store, lake)
    finally:
        store.close()
    assert report.compacted == ["Observation"]
    state = read_state(lake)["types"]["Observation"]
    assert state["delta_batches"] == [] and state["base_rows"] == 10
    assert _rows(lake, "SELECT count(*) FROM fhir_observation") == [(10,)]


def test_materialised_views_and_resident_ids(tmp_path: Path) -> None:
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write(_region(6))
        export_store(store, lake)
    finally:
        store.close()
    counts = materialize(lake)
    assert counts["vital_signs"] == 18 and counts["lab_results"] == 12 and counts["observation"] == 30
    assert counts["encounter"] == 0 and counts["patient_demographics"] == 7
    views = lake / "views"
    demo = _rows(
        lake,
        f"SELECT patient_id, resident_id, resident_card FROM '{views}/patient_demographics.parquet'",
    )
    assert ("p0", "res1", "VHC-1") in demo and ("p1", "res1", "VHC-1") in demo and ("p2", None, None) in demo
    vitals = _rows(lake, f"SELECT avg(value) FROM '{views}/vital_signs.parquet' WHERE patient_id = 'p2'")
    assert vitals == [(21.0,)]


@pytest.mark.spark
@pytest.mark.xdist_group("spark")
def test_spark_reads_the_same_lake(tmp_path: Path, spark_session: Any) -> None:
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write(_region(5))
        export_store(store, lake)
        store.delete("Observation", "o2-2")
        export_store(store, lake)
    finally:
        store.close()
    view = load_views()["vital_signs"]
    spark = SparkEngine(spark_session)
    spark.attach_lake(lake)
    duck = DuckDBEngine()
    duck.attach_lake(lake)
    spark_rows = sorted(tuple(r.values()) for r in spark.run_view(view).rows)
    duck_rows = sorted(tuple(r.values()) for r in duck.run_view(view).rows)
    duck.close()
    assert len(duck_rows) == 14
    assert spark_rows == duck_rows


def test_stored_view_definitions_are_materialised(tmp_path: Path) -> None:
    from rhip.lake.library import store_views
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write(_region(3))
        store.create({
            "resourceType": "ViewDefinition", "name": "obs_per_patient", "resource": "Observation",
            "select": [{"column": [{"name": "patient_id", "path": "subject.getReferenceKey(Patient)"}]}],
        })  # fmt: skip
        store.create({"resourceType": "ViewDefinition", "name": "broken", "resource": "Observation"})
        export_store(store, lake)
        stored = store_views(store)
    finally:
        store.close()
    assert sorted(stored) == ["obs_per_patient"], "invalid stored views are skipped"
    counts = materialize(lake, {**load_views(), **stored})
    assert counts["obs_per_patient"] == 15
    rows = _rows(lake, f"SELECT count(DISTINCT patient_id) FROM '{lake}/views/obs_per_patient.parquet'")
    assert rows == [(3,)]
