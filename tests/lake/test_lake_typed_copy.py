"""The typed copy written at export: its structure, when views use it, and that results never change."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from rhip.fhir import systems
from rhip.lake.compiler import compile_view
from rhip.lake.engine import DuckDBEngine
from rhip.lake.export import export_store, read_state
from rhip.lake.fhirpath_struct import Schema
from rhip.lake.library import load_views
from rhip.lake.typed_copy import TYPED_COLUMN, covers, infer_structure, merge_structures

NOTE_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "note", "path": "note.first().text", "type": "string"},
            ]
        }
    ],
}


def _observations(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": f"o{i}", "status": "final",
            "category": [{"coding": [{"system": systems.OBSERVATION_CATEGORY,
                                      "code": "laboratory" if i % 3 == 0 else "vital-signs"}]}],
            "code": {"coding": [{"system": systems.LOINC, "code": f"L{i % 4}", "display": "d"}]},
            "subject": {"reference": f"Patient/p{i % 5}"},
            "effectiveDateTime": "2024-05-01T08:00:00+08:00",
            "valueQuantity": {"value": 10 + i, "unit": "mmHg", "code": "mm[Hg]"},
            "extension": [{"url": "http://example.org/x", "valueString": "ext"}],
        }  # fmt: skip
        if i % 7 == 0:
            obs["note"] = [{"text": f"note {i}"}]
        out.append(obs)
    return out


def _rows(engine: DuckDBEngine, view: dict[str, Any], *, typed: bool) -> list[tuple[Any, ...]]:
    """Rows of a view read through the typed copy (engine default) or from the JSON text only."""
    compiled = engine.compile(view)
    if not typed:
        compiled = compile_view(view, "duckdb", source=f"fhir_{view['resource'].lower()}")
    return sorted(engine.execute(compiled.sql, compiled.params), key=repr)


def test_structure_follows_the_model_and_the_library_views() -> None:
    con = duckdb.connect()
    try:
        bodies = [json.dumps({**r, "notAnElement": {"a": 1}}) for r in _observations(10)]
        con.register("obs_", pa.table({"resource": bodies}))
        structure = infer_structure(con, "obs_", "Observation")
    finally:
        con.close()
    assert "notAnElement" not in structure and "resourceType" not in structure
    assert structure["extension"] == [{"url": "VARCHAR", "valueString": "VARCHAR"}]
    assert structure["category"] == [{"coding": [{"system": "VARCHAR", "code": "VARCHAR"}]}]
    assert structure["valueQuantity"]["value"] == "VARCHAR"
    # Not in the data, but read by the library's lab view: present so that view stays typed.
    assert "referenceRange" in structure and "valueString" in structure


def test_covers_needs_every_element_in_the_same_shape() -> None:
    wanted = compile_view(load_views()["vital_signs"]).typed_elements or {}
    schema = Schema(leaf=False)
    schema.children["code"] = Schema(leaf=False, children={"text": Schema()})
    schema.children["category"] = Schema(
        is_array=True, leaf=False, children={"coding": Schema(is_array=True)}
    )
    assert covers({"code": {"text": "VARCHAR"}, "category": [{"coding": ["VARCHAR"]}]}, schema)
    assert not covers({"code": {"text": "VARCHAR"}}, schema), "missing element"
    assert not covers({"code": "VARCHAR", "category": [{"coding": ["VARCHAR"]}]}, schema), "text vs struct"
    assert not covers({"code": {"text": "VARCHAR"}, "category": {"coding": ["VARCHAR"]}}, schema), "list"
    merged = merge_structures({"code": "VARCHAR"}, wanted)
    assert merged["code"] == wanted["code"], "children win over text"


def test_views_read_the_typed_copy_and_agree_with_json(tmp_path: Path) -> None:
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write(_observations(60))
        export_store(store, lake)
        time.sleep(0.01)
        changed = store.read("Observation", "o4")
        changed["valueQuantity"]["value"] = 999
        store.update("Observation", "o4", changed)
        store.delete("Observation", "o5")
        export_store(store, lake)
    finally:
        store.close()
    state = read_state(lake)["types"]["Observation"]
    assert state["delta_batches"] and state["typed_structure"]["code"]["coding"]
    for layer in ("base", "delta"):
        for part in (lake / "Observation").glob(f"layer={layer}/batch=*/*.parquet"):
            assert TYPED_COLUMN in pq.read_schema(part).names, part
    engine = DuckDBEngine()
    try:
        engine.attach_lake(lake)
        for name in ("vital_signs", "lab_results"):
            view = load_views()[name]
            assert f"{TYPED_COLUMN} AS t_" in engine.compile(view).sql, name
            typed, plain = _rows(engine, view, typed=True), _rows(engine, view, typed=False)
            assert typed == plain and len(typed) == (39 if name == "vital_signs" else 20)
        values = {r[0]: r[8] for r in _rows(engine, load_views()["vital_signs"], typed=True)}
        assert float(values["o4"]) == 999.0 and "o5" not in values
        # note.text is in the data, so it is typed too; an element nowhere in data or views is not.
        assert f"{TYPED_COLUMN} AS t_" in engine.compile(NOTE_VIEW).sql
        assert _rows(engine, NOTE_VIEW, typed=True) == _rows(engine, NOTE_VIEW, typed=False)
    finally:
        engine.close()


def test_element_missing_from_the_typed_copy_falls_back_to_json(tmp_path: Path) -> None:
    """A delta keeps the base's structure: elements new in the delta must be read from the JSON."""
    from rhip.store import Store

    lake = tmp_path / "lake"
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        store.bulk_write([o for o in _observations(6) if "note" not in o])  # o0 has the only note
        export_store(store, lake)
        time.sleep(0.01)
        store.create(_observations(1)[0])
        export_store(store, lake)
    finally:
        store.close()
    assert "note" not in read_state(lake)["types"]["Observation"]["typed_structure"]
    engine = DuckDBEngine()
    try:
        engine.attach_lake(lake)
        sql = engine.compile(NOTE_VIEW).sql
        assert "json_transform(resource" in sql and f"{TYPED_COLUMN} AS t_" not in sql
        rows = {r["id"]: r["note"] for r in engine.run_view(NOTE_VIEW).rows}
        assert rows == {"o0": "note 0", "o1": None, "o2": None, "o3": None, "o4": None, "o5": None}
    finally:
        engine.close()
