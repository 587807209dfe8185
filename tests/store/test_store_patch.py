"""JSON Patch (RFC 6902) on stored resources."""

from __future__ import annotations

import pytest

from rhip.errors import InvalidRequest, InvalidResource, ResourceGone, ResourceNotFound, VersionConflict
from rhip.store import Store


def _create(store: Store) -> str:
    body = {"resourceType": "Patient", "name": [{"family": "Wang", "given": ["Li"]}], "gender": "female"}
    return store.create(body).res_id


def test_all_operations(store: Store) -> None:
    res_id = _create(store)
    ops = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/name/0/given/-", "value": "Ming"},
        {"op": "copy", "from": "/name/0/family", "path": "/alias"},
        {"op": "move", "from": "/alias", "path": "/name/0/text"},
        {"op": "add", "path": "/active", "value": True},
        {"op": "remove", "path": "/active"},
    ]
    result = store.patch("Patient", res_id, ops, if_match=1)
    assert result.version_id == 2
    body = store.read("Patient", res_id)
    assert body["gender"] == "male"
    assert body["name"] == [{"family": "Wang", "given": ["Li", "Ming"], "text": "Wang"}]
    assert "active" not in body and "alias" not in body
    assert store.history("Patient", res_id).entries[0].method == "PATCH"


def test_failed_test_operation_changes_nothing(store: Store) -> None:
    res_id = _create(store)
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "test", "path": "/gender", "value": "x"},
    ]
    with pytest.raises(InvalidResource) as exc:
        store.patch("Patient", res_id, ops)
    assert exc.value.status == 422 and "operation[1]" in exc.value.diagnostics
    assert store.read("Patient", res_id)["meta"]["versionId"] == "1"
    assert store.read("Patient", res_id)["gender"] == "female"


BAD_PATCHES: list[tuple[object, type[Exception]]] = [
    ({"op": "add"}, InvalidRequest),
    ([{"op": "frobnicate", "path": "/a"}], InvalidRequest),
    ([{"op": "add", "path": "/a"}], InvalidRequest),
    ([{"op": "move", "path": "/a"}], InvalidRequest),
    ([{"op": "remove", "path": "/nothing/here"}], InvalidResource),
    ([{"op": "replace", "path": "/id", "value": "other"}], InvalidResource),
    ([{"op": "replace", "path": "/resourceType", "value": "Group"}], InvalidResource),
]


def test_bad_patches(store: Store) -> None:
    res_id = _create(store)
    for ops, error in BAD_PATCHES:
        with pytest.raises(error):
            store.patch("Patient", res_id, ops)  # type: ignore[arg-type]
    assert store.read("Patient", res_id)["meta"]["versionId"] == "1"


def test_patch_preconditions(store: Store) -> None:
    res_id = _create(store)
    op = [{"op": "replace", "path": "/gender", "value": "male"}]
    with pytest.raises(VersionConflict):
        store.patch("Patient", res_id, op, if_match=7)
    with pytest.raises(ResourceNotFound):
        store.patch("Patient", "missing", op)
    store.delete("Patient", res_id)
    with pytest.raises(ResourceGone):
        store.patch("Patient", res_id, op)
