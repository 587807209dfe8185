"""``Patient/{id}/$everything`` over the MPI resident, over real HTTP, on SQLite and PostgreSQL.

One resident has a source record at each of two facilities (linked by the MPI through a shared
citizen ID); another person's record stays on its own. On the golden id the operation returns
both records and their clinical data; on a source id it stays that record's own unless
``_mdm=true`` asks for the whole resident.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from mpi_helpers import patient

from rhip.config import Settings
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.service import match_and_link
from rhip.store import Store
from rhip_testkit import running_server

#: Facility A's record of the resident and what was recorded there; likewise facility B.
AT_A = {"s1", "encA", "obsA", "hA"}
AT_B = {"s2", "encB", "obsB", "hB"}
#: Another person (different citizen ID): never part of the resident.
OTHER = {"u1", "encU", "obsU"}


def _visit(enc: str, obs: str, pid: str, org: str) -> list[dict[str, Any]]:
    return [
        {"resourceType": "Encounter", "id": enc, "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": f"Organization/{org}"}},
        _obs(obs, pid, enc),
    ]  # fmt: skip


def _obs(obs: str, pid: str, enc: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "id": obs, "status": "final",
        "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }  # fmt: skip
    if enc:
        body["encounter"] = {"reference": f"Encounter/{enc}"}
    return body


@pytest.fixture
def seeded(mpi_store: Store) -> tuple[str, str]:
    """The resident's golden id and the other person's golden id."""
    cid = make_citizen_id("370102", date(1985, 3, 7), 123, "male")
    other_cid = make_citizen_id("370102", date(1962, 9, 1), 456, "female")
    card_a = (systems.facility_card_system("hA", "outpatient"), "MZ-1")
    card_b = (systems.facility_card_system("hB", "outpatient"), "MZ-2")
    bodies: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "hA", "name": "A"},
        {"resourceType": "Organization", "id": "hB", "name": "B"},
        patient("s1", ("张", "伟"), "1985-03-07", "male", cid=cid, cards=[card_a]),
        patient("s2", ("张", "威"), "1985-03-07", "male", cid=cid, cards=[card_b]),
        patient("u1", ("李", "娜"), "1962-09-01", "female", cid=other_cid),
        *_visit("encA", "obsA", "s1", "hA"),
        *_visit("encB", "obsB", "s2", "hB"),
        *_visit("encU", "obsU", "u1", "hA"),
    ]
    both = _obs("obsBoth", "s1")  # names both records: subject s1, performer s2
    both["performer"] = [{"reference": "Patient/s2"}]
    bodies.append(both)
    residents: dict[str, str] = {}
    for body in bodies:
        mpi_store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            residents[body["id"]] = match_and_link(
                mpi_store, mpi_store.read("Patient", body["id"])
            ).resident_id
    assert residents["s1"] == residents["s2"] != residents["u1"]
    return residents["s1"], residents["u1"]


@pytest.fixture
def server(mpi_store: Store) -> Iterator[httpx.Client]:
    """A real uvicorn serving the FHIR routes and the /mpi router, security off."""
    from rhip.api import create_app

    settings = Settings(auth_enabled=False, database_url=mpi_store.url, max_page_size=500)
    app = create_app(mpi_store, settings, router_modules=("rhip.mpi.api",))
    with (
        running_server(app, lifespan="off", timeout=20) as root,
        httpx.Client(base_url=root, timeout=30) as client,
    ):
        yield client


def _everything(client: httpx.Client, pid: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/Patient/{pid}/$everything", params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    resources = [e["resource"] for e in bundle.get("entry", [])]
    assert bundle["total"] == len(resources)
    return resources


def _ids(resources: list[dict[str, Any]]) -> list[str]:
    return [str(r["id"]) for r in resources]


def test_golden_id_gathers_every_linked_record(server: httpx.Client, seeded: tuple[str, str]) -> None:
    resident, other = seeded
    found = _everything(server, resident)
    ids = _ids(found)
    assert len(ids) == len(set(ids)), "each resource once (obsBoth names both records)"
    assert ids[:3] == [resident, "s1", "s2"]  # the golden Patient first, then the linked records
    assert set(ids) == {resident, "obsBoth"} | AT_A | AT_B
    assert not set(ids) & (OTHER | {other})
    mpi_view = server.get(f"/mpi/resident/{resident}/$everything").json()
    assert {e["resource"]["id"] for e in mpi_view["entry"]} == set(ids)  # one gathering, two routes
    alone = _ids(_everything(server, resident, _mdm="false"))
    assert alone == [resident]  # the golden record itself, as before


def test_type_and_since_still_apply(server: httpx.Client, mpi_store: Store, seeded: tuple[str, str]) -> None:
    resident, _ = seeded
    observations = _ids(_everything(server, resident, _type="Observation"))
    assert set(observations) == {resident, "s1", "s2", "obsA", "obsB", "obsBoth"}
    time.sleep(0.05)
    late = _obs("obsLate", "s2")
    mpi_store.update("Observation", "obsLate", late)
    stamp = mpi_store.read("Observation", "obsLate")["meta"]["lastUpdated"]
    recent = _ids(_everything(server, resident, _since=stamp))
    assert set(recent) == {resident, "s1", "s2", "obsLate"}  # the Patients are always included
    paged = server.get(f"/fhir/Patient/{resident}/$everything", params={"_count": "4"}).json()
    assert paged["total"] == 11 and len(paged["entry"]) == 4
    assert any(link["relation"] == "next" and "_count=4" in link["url"] for link in paged["link"])


def test_source_record_stays_its_own_unless_mdm(server: httpx.Client, seeded: tuple[str, str]) -> None:
    resident, other = seeded
    own = set(_ids(_everything(server, "s1")))
    assert own == {"s1", resident, "obsBoth"} | {"encA", "obsA", "hA"}  # the golden cites s1 (link)
    whole = _ids(_everything(server, "s1", _mdm="true"))
    assert whole[0] == "s1" and set(whole) == {resident, "obsBoth"} | AT_A | AT_B
    posted = server.post(
        "/fhir/Patient/s2/$everything",
        json={"resourceType": "Parameters", "parameter": [{"name": "_mdm", "valueBoolean": True}]},
        headers={"content-type": "application/fhir+json"},
    )
    assert posted.status_code == 200, posted.text
    assert {e["resource"]["id"] for e in posted.json()["entry"]} == set(whole)
    lone = set(_ids(_everything(server, "u1", _mdm="true")))
    assert lone == OTHER | {other, "hA"}  # the unlinked person: their own resident only
    refused = server.get("/fhir/Patient/s1/$everything", params={"_mdm": "perhaps"})
    assert refused.status_code == 400 and "_mdm" in refused.text


def test_unknown_to_the_mpi_and_deleted_records(
    server: httpx.Client, mpi_store: Store, seeded: tuple[str, str]
) -> None:
    resident, _ = seeded
    mpi_store.update("Patient", "walkin", {"resourceType": "Patient", "id": "walkin"})  # never matched
    assert _ids(_everything(server, "walkin", _mdm="true")) == ["walkin"]
    mpi_store.delete("Patient", "s2")
    ids = set(_ids(_everything(server, resident)))
    assert "s2" not in ids and {"s1", "encA", "obsA"} <= ids
