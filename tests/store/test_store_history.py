"""History of an instance, a type and the whole system, with since and paging."""

from __future__ import annotations

import pytest

from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.store import Store


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def test_instance_history_newest_first_with_delete(store: Store) -> None:
    res_id = store.create(_patient("A")).res_id
    store.update("Patient", res_id, _patient("B"))
    store.patch("Patient", res_id, [{"op": "replace", "path": "/name/0/family", "value": "C"}])
    store.delete("Patient", res_id)
    page = store.history("Patient", res_id)
    assert page.total == 4 and not page.has_next
    assert [(e.version_id, e.method) for e in page.entries] == [
        (4, "DELETE"),
        (3, "PATCH"),
        (2, "PUT"),
        (1, "POST"),
    ]
    assert page.entries[0].body is None
    assert [e.body["name"][0]["family"] for e in page.entries[1:] if e.body] == ["C", "B", "A"]
    assert all(e.res_type == "Patient" and e.res_id == res_id for e in page.entries)
    stamps = [e.last_updated for e in page.entries]
    assert stamps == sorted(stamps, reverse=True)


def test_instance_history_of_unknown_id_is_404(store: Store) -> None:
    with pytest.raises(ResourceNotFound):
        store.history("Patient", "never")
    with pytest.raises(InvalidRequest):
        store.history(None, "x")


def test_type_and_system_history(store: Store) -> None:
    p = store.create(_patient("A"))
    store.create({"resourceType": "Organization", "name": "Hospital"})
    store.update("Patient", p.res_id, _patient("B"))
    assert store.history("Patient").total == 2
    assert store.history("Organization").total == 1
    assert store.history("Observation").total == 0
    system = store.history()
    assert system.total == 3
    assert {e.res_type for e in system.entries} == {"Patient", "Organization"}


def test_history_since_is_inclusive(store: Store) -> None:
    first = store.create(_patient("A"))
    second = store.update("Patient", first.res_id, _patient("B"))
    page = store.history("Patient", first.res_id, since=second.last_updated)
    assert [e.version_id for e in page.entries] == [2]
    assert store.history(since=second.last_updated + 60).total == 0
    assert store.history("Patient", first.res_id, since=second.last_updated + 60).entries == []


def test_history_paging(store: Store) -> None:
    res_id = store.create(_patient("v1")).res_id
    for i in range(2, 8):
        store.update("Patient", res_id, _patient(f"v{i}"))
    seen: list[int] = []
    offset = 0
    while True:
        page = store.history("Patient", res_id, count=3, offset=offset)
        assert page.total == 7
        seen += [e.version_id for e in page.entries]
        if not page.has_next:
            break
        offset += page.count
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    assert store.history("Patient", res_id, count=0).entries == []
    with pytest.raises(InvalidRequest):
        store.history(count=-1)
