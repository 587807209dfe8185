"""No plaintext citizen ID or phone in the MPI's tables, and matching on them still works."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from mpi_helpers import patient

from rhip.config import Settings
from rhip.fhir import systems
from rhip.mpi.relink import relink_all
from rhip.mpi.schema import MPI_TABLES, mpi_card, mpi_key, mpi_record
from rhip.mpi.service import match_and_link, resolve_card
from rhip.store import Store
from rhip_testkit import running_server

PHONE = "13912345678"
HOME = "历下区花园路8号"


def _typo(cid: str) -> str:
    """The same number with one digit of the birth sequence wrong (fails the checksum)."""
    return cid[:15] + str((int(cid[15]) + 1) % 10) + cid[16:]


def _link(store: Store, cid: str) -> dict[str, object]:
    bodies = [
        patient("p1", ("张", "伟"), "1985-03-07", "male", cid=cid, phone=PHONE, address=HOME),
        patient("p2", ("章", "卫"), "1985-03-07", "male", cid=cid),  # another name, same trusted ID
        patient("p3", ("张", "伟"), "1985-03-07", "male", cid=_typo(cid), phone=PHONE, address=HOME),
    ]
    decisions = {}
    for body in bodies:
        store.update("Patient", body["id"], body)
        decisions[body["id"]] = match_and_link(store, store.read("Patient", body["id"]))
    return decisions


def _cells(store: Store) -> list[str]:
    """Every value of every MPI table, read with raw SQL."""
    out: list[str] = []
    with store.engine.connect() as conn:
        for table in MPI_TABLES:
            for row in conn.execute(sa.text(f"SELECT * FROM {table.name}")):
                out.extend(str(v) for v in row if v is not None)
    return out


def _assert_no_plaintext(store: Store, cid: str) -> None:
    cells = _cells(store)
    assert cells, "the MPI tables are empty"
    for secret in (cid, _typo(cid), PHONE, cid[:17]):
        assert not [c for c in cells if secret in c], f"{secret} is stored in clear"


def test_linked_records_leave_no_plaintext(mpi_store: Store, zhang_wei_cid: str) -> None:
    decisions = _link(mpi_store, zhang_wei_cid)
    _assert_no_plaintext(mpi_store, zhang_wei_cid)
    relink_all(mpi_store)
    _assert_no_plaintext(mpi_store, zhang_wei_cid)
    assert len({d.resident_id for d in decisions.values()}) == 1


def test_matching_on_citizen_id_and_phone_is_unchanged(mpi_store: Store, zhang_wei_cid: str) -> None:
    decisions = _link(mpi_store, zhang_wei_cid)
    assert (decisions["p2"].outcome, decisions["p2"].rule) == ("link", "citizen-id")
    typo = decisions["p3"]
    assert typo.resident_id == decisions["p1"].resident_id
    evidence = next(c for c in typo.candidates if c.record_id == "p1").evidence
    # the raw IDs are decrypted to be compared approximately; phones agree by their pseudonyms
    assert evidence["citizen_id"][0] == "one-edit"
    assert evidence["phone"][0] == "exact"


def test_golden_patient_reads_the_decrypted_values(mpi_store: Store, zhang_wei_cid: str) -> None:
    resident = _link(mpi_store, zhang_wei_cid)["p1"].resident_id
    golden = mpi_store.read("Patient", resident)
    assert golden["telecom"] == [{"system": "phone", "value": PHONE}]
    # sex and birth date agree with the decrypted trusted ID (a pseudonym would fail its checks)
    assert (golden["gender"], golden["birthDate"]) == ("male", "1985-03-07")


def test_card_lookup_by_citizen_id(mpi_store: Store, zhang_wei_cid: str) -> None:
    resident = _link(mpi_store, zhang_wei_cid)["p1"].resident_id
    with mpi_store.engine.connect() as conn:
        assert resolve_card(conn, f"{systems.CITIZEN_ID}|{zhang_wei_cid.lower()}") == resident
    settings = Settings(auth_enabled=False, database_url=mpi_store.url)
    from rhip.api import create_app

    app = create_app(mpi_store, settings, router_modules=("rhip.mpi.api",))
    with running_server(app, lifespan="off", timeout=20) as root, httpx.Client(base_url=root) as client:
        found = client.get("/mpi/resident", params={"card": f"{systems.CITIZEN_ID}|{zhang_wei_cid}"})
        assert found.status_code == 200
        assert found.json()["entry"][0]["resource"]["id"] == resident
        other = f"{systems.CITIZEN_ID}|{_typo(zhang_wei_cid)[:17]}0"
        assert client.get("/mpi/resident", params={"card": other}).status_code == 404


@pytest.fixture
def cleared(mpi_store: Store, zhang_wei_cid: str) -> Iterator[Store]:
    """Rows as revision 0006 leaves them: no citizen ID or phone, no key version."""
    _link(mpi_store, zhang_wei_cid)
    with mpi_store.engine.begin() as conn:
        conn.execute(sa.update(mpi_record).values(cid=None, cid_raw=None, phone=None, key_version=None))
        conn.execute(sa.delete(mpi_key).where(mpi_key.c.bkey.like("c:%") | mpi_key.c.bkey.like("p:%")))
        conn.execute(sa.delete(mpi_card).where(mpi_card.c.system == systems.CITIZEN_ID))
    yield mpi_store


def test_relink_rebuilds_cleared_rows_protected(cleared: Store, zhang_wei_cid: str) -> None:
    relink_all(cleared)
    with cleared.engine.connect() as conn:
        columns = (mpi_record.c.record_id, mpi_record.c.cid, mpi_record.c.key_version)
        rows = conn.execute(sa.select(*columns)).all()
        keys = conn.execute(sa.select(mpi_key.c.bkey).where(mpi_key.c.bkey.like("c:%"))).scalars().all()
    assert {r.record_id for r in rows if r.cid} == {"p1", "p2"}
    assert all(r.key_version is not None for r in rows)
    assert len(set(keys)) == 2  # the trusted ID and the mistyped one, as pseudonyms
    _assert_no_plaintext(cleared, zhang_wei_cid)
    with cleared.engine.connect() as conn:
        assert resolve_card(conn, f"{systems.CITIZEN_ID}|{zhang_wei_cid}")
