"""Conditional create, update and delete with zero, one and several matches."""

from __future__ import annotations

import pytest

from rhip.errors import InvalidRequest, MultipleMatches, VersionConflict
from rhip.store import Store

SYS = "urn:oid:2.16.156.10011.1.19"


def _patient(card: str, family: str = "Wang") -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYS, "value": card}],
        "name": [{"family": family}],
    }


def test_conditional_create(store: Store) -> None:
    crit = [("identifier", f"{SYS}|c1")]
    first = store.create(_patient("c1"), if_none_exist=crit)
    assert first.created and first.outcome == "created"
    second = store.create(_patient("c1", "Other"), if_none_exist=crit)
    assert not second.created and second.outcome == "existing"
    assert second.res_id == first.res_id and second.resource == first.resource
    assert store.count("Patient") == 1
    store.create(_patient("c1"))
    with pytest.raises(MultipleMatches) as exc:
        store.create(_patient("c1"), if_none_exist=crit)
    assert exc.value.status == 412
    assert store.count("Patient") == 2


def test_conditional_update(store: Store) -> None:
    crit = [("identifier", f"{SYS}|u1")]
    created = store.conditional_update("Patient", crit, _patient("u1", "A"))
    assert created.created
    updated = store.conditional_update("Patient", crit, _patient("u1", "B"))
    assert not updated.created and updated.res_id == created.res_id and updated.version_id == 2
    assert store.read("Patient", created.res_id)["name"] == [{"family": "B"}]
    with pytest.raises(InvalidRequest):
        store.conditional_update("Patient", crit, {**_patient("u1"), "id": "someone-else"})
    store.create(_patient("u1"))
    with pytest.raises(MultipleMatches):
        store.conditional_update("Patient", crit, _patient("u1", "C"))


def test_conditional_update_no_match_with_id_creates_that_id(store: Store) -> None:
    result = store.conditional_update(
        "Patient", [("identifier", f"{SYS}|u2")], {**_patient("u2"), "id": "given"}
    )
    assert result.created and result.res_id == "given"


def test_conditional_delete(store: Store) -> None:
    crit = [("identifier", f"{SYS}|d1")]
    assert store.conditional_delete("Patient", crit) == 0
    only = store.create(_patient("d1")).res_id
    assert store.conditional_delete("Patient", crit) == 1
    assert store.history("Patient", only).entries[0].method == "DELETE"
    store.create(_patient("d1"))
    store.create(_patient("d1"))
    with pytest.raises(MultipleMatches):
        store.conditional_delete("Patient", crit)
    assert store.count("Patient") == 2
    assert store.conditional_delete("Patient", crit, allow_multiple=True) == 2
    assert store.count("Patient") == 0


def test_conditional_without_criteria_is_rejected(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        store.conditional_delete("Patient", [])


def test_conditional_update_will_not_take_over_another_resource(store: Store) -> None:
    store.create(_patient("other", "Keep") | {"id": "taken"})
    with pytest.raises(VersionConflict) as exc:
        store.conditional_update("Patient", [("identifier", f"{SYS}|u3")], {**_patient("u3"), "id": "taken"})
    assert exc.value.status == 409
    assert store.read("Patient", "taken")["name"] == [{"family": "Keep"}]
