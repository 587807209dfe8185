"""Review decisions and manual corrections: accept, reject, link, unlink, merge, unmerge, revert.

Every correction moves source records between residents (never deletes one), is written to
``mpi_change`` with the exact before/after state so it can be reverted, refreshes the golden
Patients involved and records one AuditEvent. Manual links are sticky: real-time re-matching of
an updated record keeps them, and an unlinked pair is remembered as rejected so it is not re-linked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from rhip.errors import InvalidRequest, ResourceNotFound, VersionConflict
from rhip.mpi.audit import record_audit
from rhip.mpi.golden import StoreLike, refresh_golden
from rhip.mpi.link import lock_keys, new_resident
from rhip.mpi.schema import mpi_change, mpi_record, mpi_resident, mpi_review
from rhip.mpi.service import follow_merges, ready
from rhip.store.engine import write_transaction


@dataclass(frozen=True)
class ChangeResult:
    """Outcome of one correction: its change id, audit event id and the residents touched."""

    change_id: int
    audit_id: str
    residents: list[str]


class _Change:
    """Collects the before/after state of one correction inside its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.now = time.time()
        self.moves: list[dict[str, Any]] = []
        self.residents: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []

    def move(self, record_id: str, to_resident: str, source: str) -> None:
        row = self.conn.execute(
            select(mpi_record.c.resident_id, mpi_record.c.link_source).where(
                mpi_record.c.record_id == record_id
            )
        ).first()
        if row is None:
            raise ResourceNotFound(_unknown_record(record_id))
        self.conn.execute(
            update(mpi_record)
            .where(mpi_record.c.record_id == record_id)
            .values(resident_id=to_resident, link_source=source, updated=self.now)
        )
        self.moves.append(
            {"record_id": record_id, "from": row.resident_id, "to": to_resident,
             "from_source": row.link_source, "to_source": source}
        )  # fmt: skip

    def set_resident(self, resident_id: str, status: str, merged_into: str | None) -> None:
        row = self.conn.execute(select(mpi_resident).where(mpi_resident.c.resident_id == resident_id)).first()
        if row is None:
            raise ResourceNotFound("unknown resident")
        self.conn.execute(
            update(mpi_resident)
            .where(mpi_resident.c.resident_id == resident_id)
            .values(status=status, merged_into=merged_into, updated=self.now)
        )
        self.residents.append(
            {
                "resident_id": resident_id,
                "before": [row.status, row.merged_into],
                "after": [status, merged_into],
            }
        )

    def set_review(self, review_id: int, status: str, actor: str | None) -> None:
        row = self.conn.execute(
            select(mpi_review.c.status).where(mpi_review.c.review_id == review_id)
        ).first()
        if row is None:
            raise ResourceNotFound(_unknown_review(review_id))
        resolved = None if status == "open" else self.now
        self.conn.execute(
            update(mpi_review)
            .where(mpi_review.c.review_id == review_id)
            .values(status=status, resolved=resolved, resolved_by=actor)
        )
        self.reviews.append({"review_id": review_id, "before": row.status, "after": status})

    def retire_empty(self, resident_ids: set[str]) -> None:
        """Residents left without records become ``retired`` (kept, golden inactive)."""
        for rid in sorted(resident_ids):
            left = self.conn.execute(
                select(mpi_record.c.record_id).where(mpi_record.c.resident_id == rid).limit(1)
            )
            status = self.conn.execute(
                select(mpi_resident.c.status).where(mpi_resident.c.resident_id == rid)
            ).first()
            if left.first() is None and status is not None and status[0] == "active":
                self.set_resident(rid, "retired", None)

    def save(self, action: str, actor: str) -> int:
        details = {"moves": self.moves, "residents": self.residents, "reviews": self.reviews}
        result = self.conn.execute(
            insert(mpi_change).values(action=action, actor=actor, at=self.now, details=json.dumps(details))
        )
        pk = result.inserted_primary_key
        if pk is None:
            raise RuntimeError("mpi_change insert returned no key")
        return int(pk[0])

    def touched(self) -> list[str]:
        ids = {m["from"] for m in self.moves} | {m["to"] for m in self.moves}
        ids |= {r["resident_id"] for r in self.residents}
        return sorted(ids)


def _finish(change: _Change, action: str, actor: str) -> ChangeResult:
    change_id = change.save(action, actor)
    return ChangeResult(change_id, "", change.touched())


def _after(
    store: StoreLike, result: ChangeResult, action: str, actor: str, entities: dict[str, str]
) -> ChangeResult:
    refresh_golden(store, result.residents)
    audit_id = record_audit(store, action, actor, entities, result.change_id)
    return ChangeResult(result.change_id, audit_id, result.residents)


def _unknown_record(record_id: str) -> str:
    """The error for a record id the MPI has no row for, naming it and the way out."""
    return (
        f"Patient/{record_id} is unknown to the MPI: not a stored source Patient, or not linked yet "
        "(`rhip link`)"
    )


def _unknown_review(review_id: int) -> str:
    """The error for a review id that does not exist, naming it and where the ids are listed."""
    return f"no review item {review_id}; the queue (`rhip mpi review`, GET /mpi/review) lists the ids"


def _record_resident(conn: Connection, record_id: str) -> str:
    row = conn.execute(select(mpi_record.c.resident_id).where(mpi_record.c.record_id == record_id)).first()
    if row is None:
        raise ResourceNotFound(_unknown_record(record_id))
    return str(row[0])


def link_record(
    store: StoreLike, record_id: str, resident_id: str, *, actor: str, action: str = "link"
) -> ChangeResult:
    """Manually link a source record to a resident (sticky against automatic re-matching)."""
    ready(store.engine)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"r:{record_id}", f"res:{resident_id}"])
        target = follow_merges(conn, resident_id)
        if (
            conn.execute(select(mpi_resident.c.status).where(mpi_resident.c.resident_id == target)).first()
            is None
        ):
            raise ResourceNotFound("unknown resident")
        change = _Change(conn)
        old = _record_resident(conn, record_id)
        change.move(record_id, target, "manual")
        status = conn.execute(
            select(mpi_resident.c.status).where(mpi_resident.c.resident_id == target)
        ).scalar_one()
        if status == "retired":
            change.set_resident(target, "active", None)
        for review in conn.execute(
            select(mpi_review.c.review_id).where(
                mpi_review.c.record_id == record_id, mpi_review.c.status == "open"
            )
        ).all():
            change.set_review(int(review[0]), "closed", actor)
        change.retire_empty({old} - {target})
        result = _finish(change, action, actor)
    entities = {"record": f"Patient/{record_id}", "resident": f"Patient/{target}"}
    return _after(store, result, action, actor, entities)


def unlink_record(store: StoreLike, record_id: str, *, actor: str) -> ChangeResult:
    """Move a record out of its resident into a new one of its own; the pair is remembered as rejected."""
    ready(store.engine)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"r:{record_id}"])
        change = _Change(conn)
        old = _record_resident(conn, record_id)
        fresh = new_resident(conn, change.now)
        change.move(record_id, fresh, "manual")
        result = conn.execute(
            insert(mpi_review).values(
                record_id=record_id, candidate_resident_id=old, weight=0.0, probability=0.0,
                evidence="{}", status="rejected", created=change.now, resolved=change.now, resolved_by=actor,
            )
        )  # fmt: skip
        pk = result.inserted_primary_key
        if pk is not None:
            change.reviews.append({"review_id": int(pk[0]), "before": "rejected", "after": "rejected"})
        change.retire_empty({old})
        res = _finish(change, "unlink", actor)
    return _after(
        store, res, "unlink", actor, {"record": f"Patient/{record_id}", "resident": f"Patient/{old}"}
    )


def accept_review(store: StoreLike, review_id: int, *, actor: str) -> ChangeResult:
    """Accept a possible match: the record joins the candidate resident."""
    record_id, candidate = _open_review(store, review_id)
    return link_record(store, record_id, candidate, actor=actor, action="accept")


def reject_review(store: StoreLike, review_id: int, *, actor: str) -> ChangeResult:
    """Reject a possible match: the record stays apart and the pair is not proposed again."""
    record_id, candidate = _open_review(store, review_id)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"r:{record_id}"])
        change = _Change(conn)
        change.set_review(review_id, "rejected", actor)
        result = _finish(change, "reject", actor)
    entities = {"record": f"Patient/{record_id}", "candidate": f"Patient/{candidate}"}
    return _after(store, result, "reject", actor, entities)


def _open_review(store: StoreLike, review_id: int) -> tuple[str, str]:
    ready(store.engine)
    with store.engine.connect() as conn:
        row = conn.execute(select(mpi_review).where(mpi_review.c.review_id == review_id)).first()
    if row is None:
        raise ResourceNotFound(_unknown_review(review_id))
    if row.status != "open":
        raise VersionConflict("review item is already resolved", status=409)
    return str(row.record_id), str(row.candidate_resident_id)


def merge_residents(store: StoreLike, source_id: str, target_id: str, *, actor: str) -> ChangeResult:
    """Merge resident ``source_id`` into ``target_id``: all its records move, it is marked merged."""
    ready(store.engine)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"res:{source_id}", f"res:{target_id}"])
        source, target = follow_merges(conn, source_id), follow_merges(conn, target_id)
        if source == target:
            raise InvalidRequest("both residents are already the same", code="business-rule")
        change = _Change(conn)
        records = conn.execute(select(mpi_record.c.record_id).where(mpi_record.c.resident_id == source)).all()
        for rec in records:
            change.move(str(rec[0]), target, "manual")
        change.set_resident(source, "merged", target)
        result = _finish(change, "merge", actor)
    entities = {"merged": f"Patient/{source}", "survivor": f"Patient/{target}"}
    return _after(store, result, "merge", actor, entities)


def merge_source_records(
    store: StoreLike, survivor_record_id: str, merged_record_id: str, *, actor: str
) -> ChangeResult | None:
    """HL7 ADT^A40 (merge patient): the two source records are one person; merge their residents.

    Both source records are kept. Returns None when they already share a resident.
    """
    ready(store.engine)
    with store.engine.connect() as conn:
        survivor = follow_merges(conn, _record_resident(conn, survivor_record_id))
        merged = follow_merges(conn, _record_resident(conn, merged_record_id))
    if survivor == merged:
        return None
    return merge_residents(store, merged, survivor, actor=actor)


def revert_change(store: StoreLike, change_id: int, *, actor: str, action: str = "revert") -> ChangeResult:
    """Undo one change exactly (records moved back, residents and reviews restored).

    Raises:
        VersionConflict: a later change moved the same records; revert that one first.
    """
    ready(store.engine)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"change:{change_id}"])
        row = conn.execute(select(mpi_change).where(mpi_change.c.change_id == change_id)).first()
        if row is None:
            raise ResourceNotFound("unknown change")
        if row.reverted_by is not None:
            raise VersionConflict("change already reverted", status=409)
        details = json.loads(row.details)
        change = _Change(conn)
        for move in reversed(details["moves"]):
            if _record_resident(conn, move["record_id"]) != move["to"]:
                raise VersionConflict("a later change moved these records; revert it first", status=409)
            change.move(move["record_id"], move["from"], move["from_source"])
        for res in reversed(details["residents"]):
            change.set_resident(res["resident_id"], *res["before"])
        change.retire_empty({m["to"] for m in details["moves"]} - {m["from"] for m in details["moves"]})
        for rev in reversed(details["reviews"]):
            if rev["before"] != rev["after"]:
                change.set_review(rev["review_id"], rev["before"], None if rev["before"] == "open" else actor)
        result = _finish(change, action, actor)
        conn.execute(
            update(mpi_change).where(mpi_change.c.change_id == change_id).values(reverted_by=result.change_id)
        )
    return _after(store, result, action, actor, {"change": f"mpi-change-{change_id}"})


def unmerge(store: StoreLike, change_id: int, *, actor: str) -> ChangeResult:
    """Undo a merge: the merged resident and its records come back as they were."""
    with store.engine.connect() as conn:
        row = conn.execute(select(mpi_change.c.action).where(mpi_change.c.change_id == change_id)).first()
    if row is None or row.action != "merge":
        raise InvalidRequest("change is not a merge", code="business-rule")
    return revert_change(store, change_id, actor=actor, action="unmerge")
