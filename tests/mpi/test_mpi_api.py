"""The /mpi API over a real HTTP server: card lookup, resident $everything, review and merge."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mpi_helpers import patient

from rhip.config import Settings
from rhip.fhir import systems
from rhip.mpi.service import match_and_link
from rhip.store import Store
from rhip_testkit import running_server


@pytest.fixture
def server(mpi_store: Store) -> Iterator[str]:
    from rhip.api import create_app

    settings = Settings(auth_enabled=False, database_url=mpi_store.url)
    app = create_app(mpi_store, settings, router_modules=("rhip.mpi.api",))
    with running_server(app, lifespan="off", timeout=20) as root:
        yield root


def _seed(store: Store, cid: str) -> str:
    card = (systems.facility_card_system("H001", "outpatient"), "MZ-77")
    bodies = [
        patient("s1", ("张", "伟"), "1985-03-07", "male", cid=cid, cards=[card]),
        patient("s2", ("张", "威"), "1985-03-07", "male", cid=cid, phone="13800000001"),
    ]
    for body in bodies:
        store.update("Patient", body["id"], body)
        resident = match_and_link(store, store.read("Patient", body["id"])).resident_id
    for i, pid in enumerate(("s1", "s2")):
        store.update("Observation", f"o{i}", {
            "resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
            "subject": {"reference": f"Patient/{pid}"},
        })  # fmt: skip
    return resident


def test_card_lookup_and_everything(server: str, mpi_store: Store, zhang_wei_cid: str) -> None:
    resident = _seed(mpi_store, zhang_wei_cid)
    with httpx.Client(base_url=server, timeout=30) as client:
        card = f"{systems.facility_card_system('H001', 'outpatient')}|MZ-77"
        bundle = client.get("/mpi/resident", params={"card": card}).json()
        ids = [e["resource"]["id"] for e in bundle["entry"]]
        assert ids == [resident, "s1", "s2"]
        assert (
            client.get(
                "/mpi/resident", params={"card": f"{systems.CITIZEN_ID}|110101199001011234"}
            ).status_code
            == 404
        )
        assert client.get("/mpi/resident", params={"card": "no-bar"}).status_code == 400
        everything = client.get(f"/mpi/resident/{resident}/$everything").json()
        found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]}
        assert {("Observation", "o0"), ("Observation", "o1"), ("Patient", "s1"), ("Patient", "s2")} <= found


def test_review_accept_merge_unmerge_over_http(server: str, mpi_store: Store) -> None:
    for body in (
        patient("q1", ("孙", "丽"), "1990-02-02", "female", address="历下区花园路8号"),
        patient("q2", ("孙", "莉莉"), "1990-02-02", "female", address="历下区花园路8号"),
        patient("q3", ("周", "强"), "1951-05-05", "male"),
    ):
        mpi_store.update("Patient", body["id"], body)
    with httpx.Client(base_url=server, timeout=30) as client:
        decisions = [
            client.post("/mpi/match", json={"record": f"Patient/{r}"}).json() for r in ("q1", "q2", "q3")
        ]
        assert decisions[1]["outcome"] == "review"
        queue = client.get("/mpi/review").json()
        assert queue["total"] == 1 and queue["items"][0]["evidence"]["name"][0] == "else"
        accepted = client.post(f"/mpi/review/{queue['items'][0]['id']}/$accept").json()
        assert accepted["audit"].startswith("AuditEvent/")
        assert client.get("/mpi/review").json()["total"] == 0
        q1_resident = decisions[0]["resident"].removeprefix("Patient/")
        bundle = client.get(f"/mpi/resident/{q1_resident}").json()
        assert [e["resource"]["id"] for e in bundle["entry"]][1:] == ["q1", "q2"]
        merge = client.post(
            "/mpi/merge", json={"source": decisions[2]["resident"], "target": decisions[0]["resident"]}
        )
        assert merge.status_code == 200
        assert len(client.get(f"/mpi/resident/{q1_resident}").json()["entry"]) == 4
        undo = client.post(f"/mpi/change/{merge.json()['change']}/$unmerge")
        assert undo.status_code == 200
        assert len(client.get(f"/mpi/resident/{q1_resident}").json()["entry"]) == 3
        assert client.post(f"/mpi/change/{merge.json()['change']}/$unmerge").status_code == 409
