"""Two records of the same new person arriving at the same moment on two connections: one resident."""

from __future__ import annotations

import threading

import pytest
from mpi_helpers import patient
from sqlalchemy import func, select

from rhip.mpi.link import LinkDecision
from rhip.mpi.schema import ensure_schema, mpi_record
from rhip.mpi.service import match_and_link
from rhip.store import Store

ROUNDS = 8


def _race(store: Store, bodies: list[dict]) -> list[LinkDecision]:
    barrier = threading.Barrier(len(bodies))
    results: list[LinkDecision | BaseException] = [RuntimeError("not run")] * len(bodies)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = match_and_link(store, bodies[i])
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return [r for r in results if isinstance(r, LinkDecision)]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_simultaneous_arrivals_make_one_resident(
    backend: str, tmp_path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'race.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_pg_url")
    )
    store = Store(url)
    ensure_schema(store.engine)
    try:
        for n in range(ROUNDS):
            # Same person, two facilities, homophone given name, no citizen ID: only matching can tie them.
            day = f"19{50 + n}-0{1 + n % 9}-1{n % 9}"
            bodies = [
                patient(
                    f"a{n}", ("周", "伟"), day, "male", phone=f"1380000{n:04d}", address="历下区经十路9号"
                ),
                patient(
                    f"b{n}", ("周", "威"), day, "male", phone=f"1380000{n:04d}", address="历下区经十路9号"
                ),
            ]
            for body in bodies:
                store.update("Patient", body["id"], body)
            decisions = _race(store, bodies)
            assert decisions[0].resident_id == decisions[1].resident_id, f"round {n}"
            assert sorted(d.outcome for d in decisions) == ["link", "new"]
        with store.engine.connect() as conn:
            residents = conn.execute(select(func.count(func.distinct(mpi_record.c.resident_id)))).scalar_one()
        assert residents == ROUNDS
    finally:
        store.close()
