"""The ``/mpi`` HTTP API: card lookup, resident records and ``$everything``, review queue, corrections.

Residents answer as FHIR Bundles (the golden Patient first, then every linked source Patient);
review items and corrections answer as plain JSON with the evidence (comparison levels and
weights) a reviewer needs. Every correction is audited (AuditEvent) and reversible.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from rhip.errors import InvalidRequest, RhipError
from rhip.mpi import corrections
from rhip.mpi.link import LinkDecision
from rhip.mpi.schema import mpi_review
from rhip.mpi.service import match_and_link, ready, resident_summary, resolve_card

if TYPE_CHECKING:
    from rhip.store import Store

router = APIRouter(prefix="/mpi", tags=["mpi"])


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    ready(store.engine)
    return store


def _actor(request: Request, interaction: str, resident: str | None = None) -> str:
    from rhip.api.deps import begin

    ctx = begin(request, interaction, "Patient", resident)
    return ctx.principal or "anonymous"


def _bundle(entries: list[tuple[dict[str, Any], str]], kind: str = "searchset") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "type": kind,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "total": sum(1 for _, mode in entries if mode == "match"),
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": mode}}
            for r, mode in entries
        ],
    }


def resident_bundle(store: Store, resident_id: str) -> dict[str, Any]:
    """The golden Patient (match) and every linked source Patient (include) of a resident."""
    with store.engine.connect() as conn:
        summary = resident_summary(conn, resident_id)
    entries: list[tuple[dict[str, Any], str]] = [(store.read("Patient", resident_id), "match")]
    for rec in summary["records"]:
        try:
            entries.append((store.read("Patient", rec["record_id"]), "include"))
        except RhipError:
            continue
    return _bundle(entries)


@router.get("/resident")
def find_resident(request: Request, card: str = Query(..., description="system|value of any card"),
                  store: Store = Depends(_store)) -> dict[str, Any]:  # fmt: skip
    """The resident holding a card (citizen ID, health card, any facility number, VHC) with all records."""
    with store.engine.connect() as conn:
        resident_id = resolve_card(conn, card)
    _actor(request, "read", resident_id)
    return resident_bundle(store, resident_id)


@router.get("/resident/{resident_id}")
def read_resident(request: Request, resident_id: str, store: Store = Depends(_store)) -> dict[str, Any]:
    """A resident's golden Patient and linked source records."""
    _actor(request, "read", resident_id)
    return resident_bundle(store, resident_id)


@router.get("/resident/{resident_id}/$everything")
def resident_everything(request: Request, resident_id: str, store: Store = Depends(_store)) -> dict[str, Any]:
    """Everything of every linked source record, from every institution, in one Bundle."""
    from rhip.api.everything import everything

    _actor(request, "operation", resident_id)
    with store.engine.connect() as conn:
        summary = resident_summary(conn, resident_id)
    found: dict[tuple[str, str], dict[str, Any]] = {
        ("Patient", resident_id): store.read("Patient", resident_id)
    }
    for rec in summary["records"]:
        try:
            for res in everything(store, rec["record_id"]):
                found.setdefault((res["resourceType"], str(res["id"])), res)
        except RhipError:
            continue
    return _bundle([(r, "match") for r in found.values()])


def _decision_json(decision: LinkDecision) -> dict[str, Any]:
    return {
        "record": f"Patient/{decision.record_id}",
        "resident": f"Patient/{decision.resident_id}",
        "outcome": decision.outcome,
        "rule": decision.rule,
        "weight": decision.weight,
        "probability": decision.probability,
        "review_ids": decision.review_ids,
        "candidates": [
            {"resident": f"Patient/{c.resident_id}", "weight": c.weight, "probability": c.probability,
             "rule": c.rule, "evidence": c.evidence}
            for c in decision.candidates[:10]
        ],
    }  # fmt: skip


class RecordRef(BaseModel):
    """A source Patient by id."""

    record: str


@router.post("/match")
def match(request: Request, body: RecordRef, store: Store = Depends(_store)) -> dict[str, Any]:
    """Match a stored source Patient now and link it (what ingest does on arrival)."""
    record_id = body.record.removeprefix("Patient/")
    _actor(request, "update", record_id)
    return _decision_json(match_and_link(store, store.read("Patient", record_id)))


@router.get("/review")
def list_reviews(
    request: Request, status: str = "open", count: int = Query(50, alias="_count", ge=1, le=1000),
    offset: int = Query(0, alias="_offset", ge=0), store: Store = Depends(_store),
) -> dict[str, Any]:  # fmt: skip
    """The review queue (possible matches) with the evidence of each pair, strongest first."""
    _actor(request, "search-type")
    return review_page(store, status, count, offset)


def review_page(store: Store, status: str, count: int, offset: int) -> dict[str, Any]:
    """One page of review items of a status (open, accepted, rejected, closed)."""
    if status not in ("open", "accepted", "rejected", "closed"):
        raise InvalidRequest("status must be open, accepted, rejected or closed", expression=("status",))
    query = select(mpi_review).where(mpi_review.c.status == status)
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = conn.execute(
            query.order_by(mpi_review.c.weight.desc(), mpi_review.c.review_id).limit(count).offset(offset)
        ).mappings()
        items = [
            {"id": r["review_id"], "record": f"Patient/{r['record_id']}",
             "candidate": f"Patient/{r['candidate_resident_id']}", "weight": r["weight"],
             "probability": r["probability"], "status": r["status"], "evidence": json.loads(r["evidence"])}
            for r in rows
        ]  # fmt: skip
    return {"total": total, "offset": offset, "count": len(items), "items": items}


def _change_json(result: corrections.ChangeResult | None) -> dict[str, Any]:
    if result is None:
        return {"change": None, "residents": []}
    return {
        "change": result.change_id,
        "audit": f"AuditEvent/{result.audit_id}",
        "residents": [f"Patient/{r}" for r in result.residents],
    }


@router.post("/review/{review_id}/$accept")
def accept(request: Request, review_id: int, store: Store = Depends(_store)) -> dict[str, Any]:
    """Accept a possible match: the record joins the candidate resident."""
    return _change_json(corrections.accept_review(store, review_id, actor=_actor(request, "update")))


@router.post("/review/{review_id}/$reject")
def reject(request: Request, review_id: int, store: Store = Depends(_store)) -> dict[str, Any]:
    """Reject a possible match: the pair is not proposed again."""
    return _change_json(corrections.reject_review(store, review_id, actor=_actor(request, "update")))


class LinkBody(BaseModel):
    """Link a source record to a resident."""

    record: str
    resident: str


@router.post("/link")
def link(request: Request, body: LinkBody, store: Store = Depends(_store)) -> dict[str, Any]:
    """Manually link a source record to a resident."""
    actor = _actor(request, "update")
    result = corrections.link_record(
        store, body.record.removeprefix("Patient/"), body.resident.removeprefix("Patient/"), actor=actor
    )
    return _change_json(result)


@router.post("/unlink")
def unlink(request: Request, body: RecordRef, store: Store = Depends(_store)) -> dict[str, Any]:
    """Take a source record out of its resident into a resident of its own."""
    actor = _actor(request, "update")
    return _change_json(corrections.unlink_record(store, body.record.removeprefix("Patient/"), actor=actor))


class MergeBody(BaseModel):
    """Merge resident ``source`` into resident ``target``."""

    source: str
    target: str


@router.post("/merge")
def merge(request: Request, body: MergeBody, store: Store = Depends(_store)) -> dict[str, Any]:
    """Merge two residents (the source's records move; the source is kept, marked merged)."""
    actor = _actor(request, "update")
    result = corrections.merge_residents(
        store, body.source.removeprefix("Patient/"), body.target.removeprefix("Patient/"), actor=actor
    )
    return _change_json(result)


@router.post("/change/{change_id}/$unmerge")
def unmerge(request: Request, change_id: int, store: Store = Depends(_store)) -> dict[str, Any]:
    """Undo a merge."""
    return _change_json(corrections.unmerge(store, change_id, actor=_actor(request, "update")))


@router.post("/change/{change_id}/$revert")
def revert(request: Request, change_id: int, store: Store = Depends(_store)) -> dict[str, Any]:
    """Undo any correction (link, unlink, accept, reject, merge)."""
    return _change_json(corrections.revert_change(store, change_id, actor=_actor(request, "update")))
