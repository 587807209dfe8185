"""Group commit of creates on SQLite (rhip.api.batching): groups, per-request answers, big bodies."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rhip.api import create_app
from rhip.api.batching import CreateBatcher, CreateResult, batcher_for
from rhip.api.deps import INLINE_CREATE_BYTES
from rhip.config import Settings
from rhip.errors import InvalidResource
from rhip.store import Store, WriteResult


class CountingStore(Store):
    """A real SQLite store that records the size of every grouped create."""

    groups: list[int]

    def create_new(self, resources: list[dict[str, Any]]) -> list[WriteResult]:
        """Record the group size, then create as the store does."""
        self.groups.append(len(resources))
        return super().create_new(resources)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    """A counting SQLite store."""
    s = CountingStore(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    s.groups = []
    yield s
    s.close()


def _patient(i: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Group", "given": [f"G{i}"]}], **extra}


def test_concurrent_creates_share_transactions_and_each_gets_its_resource(store: Any) -> None:
    """40 creates awaited together are committed in fewer transactions, each with its own answer."""
    batcher = CreateBatcher(store, threading.Lock())

    async def all_at_once() -> list[CreateResult]:
        return await asyncio.gather(*(batcher.create(_patient(i)) for i in range(40)))

    results = asyncio.run(all_at_once())
    assert [r.resource["name"][0]["given"][0] for r in results] == [f"G{i}" for i in range(40)]
    assert len({r.resource["id"] for r in results}) == 40
    assert all(r.created and r.version_id == 1 for r in results)
    assert store.groups and max(store.groups) > 1  # grouped, not one transaction per create
    for result in results:
        assert store.read("Patient", result.resource["id"]) == result.resource


def test_a_bad_resource_in_a_group_fails_alone(store: Any) -> None:
    """The group falls back to one by one: the bad create gets its error, the others their resource."""
    batcher = CreateBatcher(store, threading.Lock())
    resources = [_patient(0), _patient(1, multipleBirthInteger=2**70), _patient(2)]
    outcomes = batcher.commit(resources)
    assert isinstance(outcomes[1], InvalidResource)
    assert isinstance(outcomes[0], CreateResult) and isinstance(outcomes[2], CreateResult)
    assert store.count("Patient") == 2

    async def one_bad() -> list[Any]:
        return await asyncio.gather(*(batcher.create(r) for r in resources), return_exceptions=True)

    answers = asyncio.run(one_bad())
    assert isinstance(answers[1], InvalidResource)
    assert [type(a) for a in (answers[0], answers[2])] == [CreateResult, CreateResult]


def test_each_event_loop_has_its_own_batcher(store: Any) -> None:
    """Futures belong to their loop, so two loops never share a queue."""

    class State:
        pass

    state, lock = State(), threading.Lock()

    async def mine() -> CreateBatcher:
        first = batcher_for(state, store, lock)
        assert batcher_for(state, store, lock) is first
        return first

    assert asyncio.run(mine()) is not asyncio.run(mine())


def test_big_and_conditional_bodies_are_created_in_a_worker_thread(tmp_path: Path) -> None:
    """A body over INLINE_CREATE_BYTES and an If-None-Exist create still answer as before."""
    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store = Store(url)
    settings = Settings(data_dir=tmp_path, database_url=url, auth_enabled=False)
    app = create_app(store, settings, router_modules=())
    big = _patient(0, text={"status": "generated", "div": "<div>" + "x" * INLINE_CREATE_BYTES + "</div>"})
    headers = {"content-type": "application/fhir+json"}
    with TestClient(app) as client:
        created = client.post("/fhir/Patient", content=json.dumps(big), headers=headers)
        assert created.status_code == 201, created.text
        assert client.get(f"/fhir/Patient/{created.json()['id']}").json() == created.json()
        cond = {**headers, "If-None-Exist": "family=Group"}
        again = client.post("/fhir/Patient", content=json.dumps(_patient(1)), headers=cond)
        assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
        bad = client.post("/fhir/Patient", content=json.dumps(_patient(1, gender=7)), headers=headers)
        assert bad.status_code == 422
    store.close()
