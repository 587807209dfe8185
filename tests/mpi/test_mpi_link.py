"""Real-time linkage on a real store (SQLite and PostgreSQL): the hard cases, golden Patients, cards."""

from __future__ import annotations

from datetime import date

from mpi_helpers import patient
from sqlalchemy import select

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.schema import mpi_review
from rhip.mpi.service import match_and_link, resident_summary, resolve_card
from rhip.store import Store


def _put(store: Store, body: dict) -> dict:
    return store.update("Patient", body["id"], body).resource


def test_citizen_id_links_deterministically(mpi_store: Store, zhang_wei_cid: str) -> None:
    first = match_and_link(
        mpi_store, _put(mpi_store, patient("h1-1", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid))
    )
    # Different name spelling and no phone: only the trusted citizen ID ties them.
    second = match_and_link(
        mpi_store, _put(mpi_store, patient("h2-9", ("张", "卫国"), "1985-03-07", "male", cid=zhang_wei_cid))
    )
    assert first.outcome == "new"
    assert second.outcome == "link" and second.rule == "citizen-id"
    assert second.resident_id == first.resident_id


def test_homophone_and_swap_link_probabilistically(mpi_store: Store) -> None:
    a = match_and_link(
        mpi_store,
        _put(
            mpi_store,
            patient(
                "c1-1", ("王", "伟"), "1979-04-11", "male", phone="13900000002", address="历下区经十路1号"
            ),
        ),
    )
    b = match_and_link(
        mpi_store,
        _put(
            mpi_store,
            patient(
                "c2-1", ("王", "威"), "1979-11-04", "male", phone="13900000002", address="历下区经十路1号"
            ),
        ),
    )
    assert b.outcome == "link" and b.rule == "probabilistic"
    assert b.resident_id == a.resident_id
    assert b.candidates[0].evidence["name"][0] == "pinyin-exact"
    assert b.candidates[0].evidence["birth_date"][0] == "day-month-swap"


def test_invalid_id_is_never_trusted(mpi_store: Store, zhang_wei_cid: str) -> None:
    """Same invalid number on two different people must not link them."""
    bad = zhang_wei_cid[:17] + ("0" if zhang_wei_cid[17] != "0" else "1")
    a = match_and_link(
        mpi_store, _put(mpi_store, patient("x1", ("赵", "敏"), "1960-01-01", "female", cid=bad))
    )
    b = match_and_link(mpi_store, _put(mpi_store, patient("x2", ("钱", "强"), "2001-09-09", "male", cid=bad)))
    assert a.resident_id != b.resident_id and b.outcome == "new"


def test_twins_stay_apart(mpi_store: Store) -> None:
    born = date(2012, 6, 1)
    common = {"phone": "13700000003", "address": "历下区解放路5号"}
    a = match_and_link(
        mpi_store, _put(mpi_store, patient("t1", ("刘", "文涛"), born.isoformat(), "male", **common))
    )
    b = match_and_link(
        mpi_store, _put(mpi_store, patient("t2", ("刘", "文杰"), born.isoformat(), "male", **common))
    )
    assert a.resident_id != b.resident_id
    assert b.outcome in ("review", "new")
    cid_b, cid_a = make_citizen_id("370102", born, 13, "male"), make_citizen_id("370102", born, 11, "male")
    c = match_and_link(
        mpi_store,
        _put(mpi_store, patient("t3", ("刘", "文杰"), born.isoformat(), "male", cid=cid_b, **common)),
    )
    d = match_and_link(
        mpi_store,
        _put(mpi_store, patient("t4", ("刘", "文涛"), born.isoformat(), "male", cid=cid_a, **common)),
    )
    assert c.resident_id == b.resident_id and d.resident_id == a.resident_id


def test_possible_match_goes_to_review(mpi_store: Store) -> None:
    match_and_link(
        mpi_store,
        _put(mpi_store, patient("r1", ("孙", "丽"), "1990-02-02", "female", address="历下区花园路8号")),
    )
    d = match_and_link(
        mpi_store,
        _put(mpi_store, patient("r2", ("孙", "莉莉"), "1990-02-02", "female", address="历下区花园路8号")),
    )
    assert d.outcome == "review" and d.review_ids
    with mpi_store.engine.connect() as conn:
        row = (
            conn.execute(select(mpi_review).where(mpi_review.c.review_id == d.review_ids[0])).mappings().one()
        )
    assert row["status"] == "open" and row["record_id"] == "r2"


def test_golden_patient_and_card_lookup(mpi_store: Store, zhang_wei_cid: str) -> None:
    card = (systems.facility_card_system("H001", "outpatient"), "MZ0001")
    match_and_link(
        mpi_store,
        _put(mpi_store, patient("g1", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid, cards=[card])),
    )
    d = match_and_link(
        mpi_store,
        _put(
            mpi_store,
            patient("g2", ("张", "伟"), "1985-03-07", "male", phone="13800000001", cid=zhang_wei_cid),
        ),
    )
    golden = mpi_store.read("Patient", d.resident_id)
    assert golden["meta"]["tag"][0]["code"] == "golden"
    assert {link["other"]["reference"] for link in golden["link"]} == {"Patient/g1", "Patient/g2"}
    assert golden["identifier"][0]["system"] == systems.VIRTUAL_HEALTH_CARD
    assert golden["telecom"][0]["value"] == "13800000001" and golden["birthDate"] == "1985-03-07"
    with mpi_store.engine.connect() as conn:
        assert resolve_card(conn, f"{card[0]}|{card[1]}") == d.resident_id
        assert resolve_card(conn, f"{systems.CITIZEN_ID}|{zhang_wei_cid}") == d.resident_id
        vhc = golden["identifier"][0]["value"]
        assert resolve_card(conn, f"{systems.VIRTUAL_HEALTH_CARD}|{vhc}") == d.resident_id
        assert [r["record_id"] for r in resident_summary(conn, d.resident_id)["records"]] == ["g1", "g2"]
    # The store's identifier search answers any card with the source record(s), never the golden one.
    found = mpi_store.search("Patient", [("identifier", f"{systems.CITIZEN_ID}|{zhang_wei_cid}")]).matches
    assert sorted(p["id"] for p in found) == ["g1", "g2"]
    found = mpi_store.search("Patient", [("identifier", f"{card[0]}|{card[1]}")]).matches
    assert [p["id"] for p in found] == ["g1"]


def test_update_of_a_record_rematches(mpi_store: Store, zhang_wei_cid: str) -> None:
    a = match_and_link(
        mpi_store, _put(mpi_store, patient("u1", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid))
    )
    b = match_and_link(mpi_store, _put(mpi_store, patient("u2", ("李", "娜"), "1970-01-01", "female")))
    assert a.resident_id != b.resident_id
    fixed = match_and_link(
        mpi_store, _put(mpi_store, patient("u2", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid))
    )
    assert fixed.resident_id == a.resident_id and fixed.previous_resident_id == b.resident_id
    again = match_and_link(mpi_store, mpi_store.read("Patient", "u2"))
    assert again.outcome == "unchanged"
