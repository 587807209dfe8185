"""Review decisions and corrections: audited, reversible, never losing a source record."""

from __future__ import annotations

import pytest
from mpi_helpers import patient
from sqlalchemy import select

from rhip.errors import VersionConflict
from rhip.mpi import corrections
from rhip.mpi.hooks import MpiSink
from rhip.mpi.schema import mpi_record, mpi_resident
from rhip.mpi.service import match_and_link
from rhip.store import Store


def _link(store: Store, body: dict) -> str:
    store.update("Patient", body["id"], body)
    return match_and_link(store, store.read("Patient", body["id"])).resident_id


def _resident_of(store: Store, record_id: str) -> str:
    with store.engine.connect() as conn:
        return conn.execute(
            select(mpi_record.c.resident_id).where(mpi_record.c.record_id == record_id)
        ).scalar_one()


def _audit_actions(store: Store) -> list[str]:
    return sorted(
        s["display"] for body, *_ in store.iter_current("AuditEvent") if body for s in body["subtype"]
    )


def test_accept_and_reject_review(mpi_store: Store) -> None:
    first = _link(mpi_store, patient("r1", ("孙", "丽"), "1990-02-02", "female", address="历下区花园路8号"))
    mpi_store.update(
        "Patient", "r2", patient("r2", ("孙", "莉莉"), "1990-02-02", "female", address="历下区花园路8号")
    )
    decision = match_and_link(mpi_store, mpi_store.read("Patient", "r2"))
    assert decision.outcome == "review"
    result = corrections.accept_review(mpi_store, decision.review_ids[0], actor="reviewer-1")
    assert _resident_of(mpi_store, "r2") == first
    golden = mpi_store.read("Patient", first)
    assert {lk["other"]["reference"] for lk in golden["link"]} == {"Patient/r1", "Patient/r2"}
    assert mpi_store.read("AuditEvent", result.audit_id)["agent"][0]["who"]["display"] == "reviewer-1"
    with pytest.raises(VersionConflict):
        corrections.reject_review(mpi_store, decision.review_ids[0], actor="reviewer-2")
    # The accepted link is manual: re-matching the record keeps it.
    assert match_and_link(mpi_store, mpi_store.read("Patient", "r2")).outcome == "unchanged"
    corrections.revert_change(mpi_store, result.change_id, actor="reviewer-1")
    assert _resident_of(mpi_store, "r2") == decision.resident_id


def test_reject_keeps_pair_apart(mpi_store: Store) -> None:
    _link(mpi_store, patient("p1", ("孙", "丽"), "1990-02-02", "female", address="历下区花园路8号"))
    mpi_store.update(
        "Patient", "p2", patient("p2", ("孙", "莉莉"), "1990-02-02", "female", address="历下区花园路8号")
    )
    decision = match_and_link(mpi_store, mpi_store.read("Patient", "p2"))
    corrections.reject_review(mpi_store, decision.review_ids[0], actor="reviewer")
    again = match_and_link(mpi_store, mpi_store.read("Patient", "p2"))
    assert again.review_ids == [] and again.resident_id == decision.resident_id


def test_unlink_link_merge_unmerge(mpi_store: Store, zhang_wei_cid: str) -> None:
    resident = _link(mpi_store, patient("m1", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid))
    assert _link(mpi_store, patient("m2", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid)) == resident
    other = _link(mpi_store, patient("m3", ("李", "娜"), "1970-01-01", "female"))

    unlinked = corrections.unlink_record(mpi_store, "m2", actor="ops")
    alone = _resident_of(mpi_store, "m2")
    assert alone not in (resident, other)
    # Automatic re-matching does not undo a manual unlink.
    assert match_and_link(mpi_store, mpi_store.read("Patient", "m2")).resident_id == alone
    corrections.link_record(mpi_store, "m2", resident, actor="ops")
    assert _resident_of(mpi_store, "m2") == resident

    merged = corrections.merge_residents(mpi_store, other, resident, actor="ops")
    assert _resident_of(mpi_store, "m3") == resident
    assert mpi_store.read("Patient", other)["active"] is False
    with mpi_store.engine.connect() as conn:
        status = conn.execute(
            select(mpi_resident.c.status).where(mpi_resident.c.resident_id == other)
        ).scalar_one()
    assert status == "merged"
    corrections.unmerge(mpi_store, merged.change_id, actor="ops")
    assert _resident_of(mpi_store, "m3") == other
    assert mpi_store.read("Patient", other)["active"] is True
    with pytest.raises(VersionConflict):
        corrections.revert_change(mpi_store, merged.change_id, actor="ops")
    # Every source record is still in the store and in the index.
    for rid in ("m1", "m2", "m3"):
        assert mpi_store.read("Patient", rid)["id"] == rid
    assert unlinked.change_id < merged.change_id
    assert _audit_actions(mpi_store) == ["mpi-link", "mpi-merge", "mpi-unlink", "mpi-unmerge"]


def test_adt_a40_merge_through_the_ingest_sink(mpi_store: Store) -> None:
    """ADT^A40 from a facility: two of its records are one person; both records are kept."""
    sink = MpiSink()
    for body in (
        patient("f-100", ("陈", "明"), "1966-06-06", "male"),
        patient("f-200", ("陈", "敏"), "1966-08-06", "female"),
    ):
        mpi_store.update("Patient", body["id"], body)
        sink.on_patient_stored(mpi_store, mpi_store.read("Patient", body["id"]), None)
    assert _resident_of(mpi_store, "f-100") != _resident_of(mpi_store, "f-200")
    sink.on_merge(mpi_store, "Patient/f-100", "Patient/f-200", None)
    assert _resident_of(mpi_store, "f-100") == _resident_of(mpi_store, "f-200")
    assert mpi_store.read("Patient", "f-200")["id"] == "f-200"
