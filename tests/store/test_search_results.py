"""Sorting, paging, totals, _include/_revinclude, chaining, _has and errors, on both back ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from search_testkit import BACKENDS, CID, database, ids, load

from rhip.errors import InvalidRequest, NotSupported

pytestmark = pytest.mark.xdist_group("search_results")


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("search_results")
    with database(request.param, tmp) as url:
        st = load(url)
        yield st
        st.close()


def _order(store: Any, res_type: str, params: list[tuple[str, str]], **kw: Any) -> list[str]:
    return [m["id"] for m in store.search(res_type, params, count=kw.pop("count", 100), **kw).matches]


def test_sort_by_date_both_directions(store: Any) -> None:
    assert _order(store, "Encounter", [("patient", "p1"), ("_sort", "date")]) == ["e3", "e1", "e2"]
    assert _order(store, "Encounter", [("patient", "p1"), ("_sort", "-date")]) == ["e2", "e1", "e3"]


def test_sort_multiple_keys_missing_last(store: Any) -> None:
    assert _order(store, "Patient", [("_sort", "gender,-_id")]) == ["p2", "p1", "p3"]
    assert _order(store, "Patient", [("_sort", "-gender")]) == ["p1", "p2", "p3"]
    assert _order(store, "Patient", [("_sort", "-_id")]) == ["p3", "p2", "p1"]


def test_sort_by_string_and_quantity(store: Any) -> None:
    assert _order(store, "Patient", [("_sort", "family")]) == ["p1", "p3", "p2"]
    assert _order(store, "Observation", [("code", "8867-4,29463-7"), ("_sort", "-value-quantity")]) == [
        "o3",
        "o1",
        "o2",
    ]


def test_paging_is_stable_and_complete(store: Any) -> None:
    seen: list[str] = []
    for offset in range(0, 20, 3):
        page = store.search("Observation", [("_sort", "status")], count=3, offset=offset)
        assert page.total == 7
        assert page.offset == offset and page.count == len(page.matches)
        seen.extend(m["id"] for m in page.matches)
        if not page.has_next:
            break
    assert sorted(seen) == ["o1", "o2", "o3", "o4", "o5", "o6", "o7"]
    assert len(seen) == len(set(seen))
    assert seen[-1] == "o3"  # preliminary sorts after final
    beyond = store.search("Observation", [], count=5, offset=50)
    assert beyond.matches == [] and beyond.total == 7 and not beyond.has_next


def test_total_modes_and_summary_count(store: Any) -> None:
    assert store.search("Patient", [("_total", "none")], count=10).total is None
    assert store.search("Patient", [("_total", "accurate")], count=1).total == 3
    counted = store.search("Patient", [("_summary", "count")], count=10)
    assert counted.total == 3 and counted.matches == []


def test_include_and_iterate(store: Any) -> None:
    res = store.search("Observation", [("patient", "p1"), ("_include", "Observation:patient")], count=10)
    assert sorted(m["id"] for m in res.matches) == ["o1", "o2"]
    assert [(r["resourceType"], r["id"]) for r in res.includes] == [("Patient", "p1")]  # once
    res = store.search(
        "Observation",
        [("_id", "o1"), ("_include", "Observation:patient"), ("_include:iterate", "Patient:organization")],
        count=10,
    )
    assert sorted(r["id"] for r in res.includes) == ["org1", "p1"]
    res = store.search("Observation", [("_id", "o1"), ("_include", "Observation:patient")], count=10)
    assert sorted(r["id"] for r in res.includes) == ["p1"]  # no iterate, no organisation
    res = store.search("Observation", [("_id", "o1"), ("_include", "*")], count=10)
    assert sorted(r["id"] for r in res.includes) == ["e1", "p1", "pr1"]
    res = store.search(
        "Observation", [("_id", "o1"), ("_include", "Observation:performer:Practitioner")], count=10
    )
    assert [r["id"] for r in res.includes] == ["pr1"]


def test_revinclude_and_iterate(store: Any) -> None:
    res = store.search("Observation", [("_id", "o1"), ("_revinclude", "Provenance:target")], count=10)
    assert [r["id"] for r in res.includes] == ["prov1"]
    res = store.search(
        "Patient",
        [
            ("_id", "p2"),
            ("_revinclude", "Observation:subject"),
            ("_include:iterate", "Observation:has-member"),
        ],
        count=10,
    )
    assert sorted(r["id"] for r in res.includes) == ["o1", "o3", "o6"]


def test_chaining(store: Any) -> None:
    assert ids(store, "Observation", [("subject:Patient.name", "müller")]) == ["o1", "o2"]
    assert ids(store, "Observation", [("patient.identifier", f"{CID}|110101198005170011")]) == ["o1", "o2"]
    assert ids(store, "Observation", [("patient.gender", "female")]) == ["o3", "o6"]
    assert ids(store, "Observation", [("encounter.status", "finished")]) == ["o1"]
    assert ids(store, "Encounter", [("subject:Patient.organization.name", "first")]) == ["e1", "e2", "e3"]


def test_has(store: Any) -> None:
    assert ids(store, "Patient", [("_has:Observation:patient:code", "29463-7")]) == ["p1"]
    assert ids(store, "Patient", [("_has:Observation:patient:status", "final")]) == ["p1", "p2"]
    assert ids(store, "Patient", [("_has:Observation:patient:_has:Provenance:target:agent", "pr1")]) == ["p1"]
    assert ids(store, "Practitioner", [("_has:Observation:performer:code", "8867-4")]) == ["pr1"]


def test_system_search(store: Any) -> None:
    assert ids(store, None, [("_id", "o1,p1,zz")]) == ["o1", "p1"]
    assert ids(store, None, [("_tag", "vip")]) == ["p1"]
    assert ids(store, None, [("_type", "ValueSet")]) == ["vs1", "vs2", "vs3"]


def test_matching_ids(store: Any) -> None:
    from rhip.store.search import matching_ids

    with store.engine.connect() as conn:
        assert matching_ids(conn, "Patient", [("identifier", f"{CID}|110101198005170011")]) == ["p1"]
        assert matching_ids(conn, "Patient", [("identifier", "nobody")]) == []


@pytest.mark.parametrize(
    ("res_type", "params", "error"),
    [
        ("Patient", [("shoe-size", "42")], InvalidRequest),
        ("Patient", [("name:sounds-like", "x")], InvalidRequest),
        ("Patient", [("birthdate:exact", "1980")], NotSupported),
        ("Observation", [("code:in", "http://example.org/vs")], NotSupported),
        ("Patient", [("birthdate", "yesterday")], InvalidRequest),
        ("Observation", [("value-quantity", "heavy")], InvalidRequest),
        ("Patient", [("_sort", "shoe-size")], InvalidRequest),
        ("Patient", [("_include", "Patient:name")], InvalidRequest),
        ("Patient", [("gender:missing", "maybe")], InvalidRequest),
        ("Patient", [("_total", "some")], InvalidRequest),
        ("Observation", [("status.name", "x")], InvalidRequest),
        ("Observation", [("subject:Practitioner", "d1")], InvalidRequest),
        (None, [("name", "x")], InvalidRequest),
    ],
)
def test_errors_name_the_parameter(
    store: Any, res_type: str | None, params: list[tuple[str, str]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.search(res_type, params, count=10)


def test_deleted_and_updated_resources(db_url: str) -> None:
    """Search never returns deleted resources and indexes only the current body."""
    from rhip.store import Store

    st = Store(db_url)
    try:
        st.bulk_write(
            [
                {"resourceType": "Patient", "id": "a", "gender": "male"},
                {"resourceType": "Patient", "id": "b", "gender": "male"},
            ]
        )
        st.delete("Patient", "a")
        st.update("Patient", "b", {"resourceType": "Patient", "id": "b", "gender": "female"})
        assert ids(st, "Patient", [("gender", "male")]) == []
        assert ids(st, "Patient", [("gender", "female")]) == ["b"]
        assert ids(st, "Patient", [("_id", "a")]) == []
        assert st.search("Patient", [], count=10).total == 1
    finally:
        st.close()
