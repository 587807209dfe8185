"""Write guards: what the store shows them, and that a refusal changes nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from rhip.errors import Forbidden
from rhip.store import Store
from rhip.store.guard import WriteCheck

TAG = "urn:example:tag"


class Recorder:
    """A guard that records every check and refuses writes of bodies tagged ``locked``."""

    def __init__(self) -> None:
        self.checks: list[WriteCheck] = []

    def __call__(self, check: WriteCheck) -> None:
        self.checks.append(check)
        for body in (check.stored, check.new):
            if body is not None and body.get("status") == "locked":
                raise Forbidden(f"{check.res_type}/{check.res_id} is locked")


def _obs(status: str, rid: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "status": status, "code": {"text": "x"}}
    body["identifier"] = [{"system": TAG, "value": rid or status}]
    if rid:
        body["id"] = rid
    return {**body, **extra}


def test_guard_sees_the_stored_version_and_the_new_body(store: Store) -> None:
    store.update("Observation", "o1", _obs("final", "o1"))
    guard = Recorder()
    store.update("Observation", "o1", _obs("amended", "o1"), guard=guard)
    store.patch(
        "Observation", "o1", [{"op": "replace", "path": "/status", "value": "corrected"}], guard=guard
    )
    store.conditional_update("Observation", [("identifier", f"{TAG}|o1")], _obs("final", "o1"), guard=guard)
    store.delete("Observation", "o1", guard=guard)
    seen = [
        (c.method, c.interaction, (c.stored or {}).get("status"), (c.new or {}).get("status"))
        for c in guard.checks
    ]
    assert seen == [
        ("PUT", "update", "final", "amended"),
        ("PATCH", "patch", "amended", "corrected"),
        ("PUT", "update", "corrected", "final"),
        ("DELETE", "delete", "final", None),
    ]
    assert all(c.res_id == "o1" for c in guard.checks)
    store.update("Observation", "o1", _obs("final", "o1"), guard=guard)  # re-created after the delete
    assert guard.checks[-1].stored is None


def test_a_refused_write_changes_nothing(store: Store) -> None:
    store.update("Observation", "o2", _obs("locked", "o2"))
    guard = Recorder()
    attempts = [
        lambda: store.update("Observation", "o2", _obs("final", "o2"), guard=guard),
        lambda: store.patch("Observation", "o2", [{"op": "remove", "path": "/code"}], guard=guard),
        lambda: store.delete("Observation", "o2", guard=guard),
        lambda: store.conditional_delete("Observation", [("identifier", f"{TAG}|o2")], guard=guard),
        lambda: store.create(_obs("locked"), guard=guard),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden):
            attempt()
    assert store.read("Observation", "o2")["meta"]["versionId"] == "1"
    assert store.count("Observation") == 1


def test_bundles_guard_resolved_entries(store: Store) -> None:
    """A transaction's guard sees rewritten references and can read what earlier entries wrote."""
    placeholder = "urn:uuid:5b0e8f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
    read_back: list[str] = []

    def guard(check: WriteCheck) -> None:
        Recorder()(check)
        ref = ((check.new or {}).get("encounter") or {}).get("reference")
        if ref and check.read is not None:
            read_back.append(check.read(*ref.split("/"))["status"])

    encounter = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"}}
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": placeholder,
                "resource": encounter,
                "request": {"method": "POST", "url": "Encounter"},
            },
            {
                "resource": _obs("final", encounter={"reference": placeholder}),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    store.process_bundle(transaction, guard=guard)
    assert read_back == ["in-progress"]
    refused = {
        **transaction,
        "entry": [
            *transaction["entry"],
            {"resource": _obs("locked"), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    before = store.count()
    with pytest.raises(Forbidden, match=r"Bundle\.entry\[2\]"):
        store.process_bundle(refused, guard=guard)
    assert store.count() == before
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [refused["entry"][0], refused["entry"][2]]}
    answer = store.process_bundle(batch, guard=guard)
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created", "403 Forbidden"]
    assert store.count() == before + 1
