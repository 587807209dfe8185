"""Parameters that share index rows (``combo-*`` of Observation) search exactly as before.

``combo-code`` is ``code`` plus ``component-code``: its rows are written once, under those two, and
a search on ``combo-code`` reads all three. These tests pin the FHIR results of every form of
search on a shared parameter (value, :missing, :not, _sort, composites) on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from rhip.fhir.search_params import register_search_param, search_params_for, unregister_search_param
from rhip.store import Store
from rhip.store.index_extract import index_rows, stored_params
from rhip.store.search_values import normalize

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _qty(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def _dataset() -> list[dict[str, Any]]:
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Wang"}]}
    group = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True}
    bp = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": _qty(120, "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": _qty(80, "mm[Hg]")},
        ],
    }
    hr = {
        "resourceType": "Observation",
        "id": "hr",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "valueQuantity": _qty(72, "/min"),
        "subject": {"reference": "Patient/p1"},
    }
    note = {
        "resourceType": "Observation",
        "id": "note",
        "status": "final",
        "code": {"text": "free text only"},
        "subject": {"reference": "Group/g1"},
    }
    return [bp, hr, note, patient, group]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.bulk_write(_dataset())
    try:
        yield s
    finally:
        s.close()


def _ids(store: Store, params: list[tuple[str, str]]) -> list[str]:
    return sorted(m["id"] for m in store.search("Observation", params, count=50).matches)


def test_shared_params_read_the_rows_of_their_parts() -> None:
    combo = stored_params("Observation", "combo-code")
    assert set(combo) == {("combo-code", None), ("code", None), ("component-code", None)}
    assert stored_params("Observation", "patient") == (("subject", "Patient"),)
    assert stored_params("Observation", "code") == (("code", None),)
    assert stored_params("Patient", "name") == (("name", None),)
    assert stored_params("Observation", "no-such-param") == (("no-such-param", None),)


def test_shared_values_are_written_once() -> None:
    rows = index_rows(_dataset()[1])
    params = [r["param"] for table in rows.values() for r in table]
    assert params.count("code") == 1
    assert "combo-code" not in params and "combo-value-quantity" not in params
    assert params.count("value-quantity") == 1
    assert params.count("code-value-quantity") == 1
    assert "combo-code-value-quantity" not in params
    assert "patient" not in params and params.count("subject") == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("combo-code", "8867-4")], ["hr"]),  # from Observation.code
        ([("combo-code", f"{LOINC}|8480-6")], ["bp"]),  # from component.code
        ([("combo-code", "85354-9,8462-4")], ["bp"]),
        ([("combo-code:not", "8480-6")], ["hr", "note"]),
        ([("combo-code:missing", "true")], []),  # note has code.text: a text-only token row
        ([("combo-code:missing", "false")], ["bp", "hr", "note"]),
        ([("combo-code:text", "free text")], ["note"]),
        ([("combo-value-quantity", "gt100")], ["bp"]),
        ([("combo-value-quantity", "72")], ["hr"]),
        ([("combo-value-quantity:missing", "true")], ["note"]),
        ([("value-quantity", "120")], []),  # a component's value is not the Observation's value
        ([("combo-code-value-quantity", "8480-6$120")], ["bp"]),
        ([("combo-code-value-quantity", "8867-4$72")], ["hr"]),
        ([("combo-code-value-quantity", "8480-6$80")], []),  # pairs stay within one component
        ([("code-value-quantity", "8480-6$120")], []),
        ([("patient", "p1")], ["hr"]),  # subject rows whose target is a Patient
        ([("patient", "Patient/p1")], ["hr"]),
        ([("patient", "g1")], []),  # a Group subject is not a patient
        ([("subject", "g1")], ["note"]),
        ([("patient:missing", "true")], ["bp", "note"]),
        ([("patient:missing", "false")], ["hr"]),
        ([("subject:missing", "true")], ["bp"]),
        ([("patient.name", "wang")], ["hr"]),
    ],
)
def test_search_on_shared_params(store: Store, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert _ids(store, params) == expected


def test_sort_on_shared_param_uses_every_part(store: Store) -> None:
    result = store.search(
        "Observation", [("combo-value-quantity:missing", "false"), ("_sort", "combo-value-quantity")]
    )
    assert [m["id"] for m in result.matches] == ["hr", "bp"]  # lowest value first: 72 < 80
    result = store.search(
        "Observation", [("combo-value-quantity:missing", "false"), ("_sort", "-combo-value-quantity")]
    )
    assert [m["id"] for m in result.matches] == ["bp", "hr"]  # highest value first: 120 > 72


def test_includes_and_has_through_a_filtered_param(store: Store) -> None:
    result = store.search("Observation", [("_id", "hr,note"), ("_include", "Observation:patient")])
    assert sorted(m["id"] for m in result.matches) == ["hr", "note"]
    assert [r["id"] for r in result.includes] == ["p1"]  # the Group subject is not included
    result = store.search("Patient", [("_id", "p1"), ("_revinclude", "Observation:patient")])
    assert [r["id"] for r in result.includes] == ["hr"]
    has = store.search("Patient", [("_has:Observation:patient:code", "8867-4")])
    assert [m["id"] for m in has.matches] == ["p1"]
    assert store.search("Group", [("_has:Observation:patient:code", "free")]).matches == []


def test_update_replaces_shared_rows(store: Store) -> None:
    hr = _dataset()[1]
    hr["code"] = {"coding": [{"system": LOINC, "code": "9279-1"}], "text": "Résp rate"}
    store.bulk_write([hr])
    assert _ids(store, [("combo-code", "8867-4")]) == []
    assert _ids(store, [("combo-code", "9279-1")]) == ["hr"]
    assert _ids(store, [("combo-code:text", normalize("RESP"))]) == ["hr"]


def test_registered_params_keep_their_own_rows() -> None:
    """A region's parameter never shares rows: unregistering it must not take rows from others."""
    code = search_params_for("Observation")["code"]
    mine = replace(code, name="region-code", url="https://rhip.example.org/fhir/SearchParameter/region-code")
    register_search_param("Observation", mine)
    try:
        assert stored_params("Observation", "region-code") == (("region-code", None),)
        assert stored_params("Observation", "code") == (("code", None),)
        rows = index_rows(_dataset()[1])["idx_token"]
        assert {r["param"] for r in rows if r["code"] == "8867-4"} == {"code", "region-code"}
    finally:
        unregister_search_param("Observation", "region-code")
    assert stored_params("Observation", "region-code") == (("region-code", None),)
