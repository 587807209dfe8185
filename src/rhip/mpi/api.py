"""The ``/mpi`` HTTP API: card lookup, resident records and ``$everything``, review queue, corrections.

Residents answer as FHIR Bundles (the golden Patient first, then every linked source Patient);
review items and corrections answer as plain JSON with the evidence (comparison levels and
weights) a reviewer needs. Every correction is audited (AuditEvent) and reversible.

Access goes through the platform's single policy point (:mod:`rhip.api.access`): every record a
route returns passes ``filter_results`` for the caller and every call, answered or refused, is
recorded with ``audit``. The golden Patient of a resident is shown to a caller who may see at least
one of the resident's linked source records (a care relationship with any of them); a caller who
may see none of them gets 404, as if the resident did not exist. The security middleware lets
practitioners use the resident reads; review, match and corrections stay with the roles that see
everybody (``rhip.security.middleware.MODULE_GATES``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from rhip.api import access
from rhip.errors import InvalidRequest, ResourceNotFound, RhipError
from rhip.mpi import corrections
from rhip.mpi.link import LinkDecision
from rhip.mpi.schema import mpi_review
from rhip.mpi.service import match_and_link, ready, resident_summary, resolve_card

if TYPE_CHECKING:
    from rhip.store import Store

router = APIRouter(prefix="/mpi", tags=["mpi"])
#: Row ids and offsets are SQL BIGINTs: larger values are client errors, not database overflows.
_INT64_MAX = 2**63 - 1


def _row_id() -> Any:
    """A fresh path-parameter spec per route (FastAPI must not share one FieldInfo between routes)."""
    return Path(..., ge=0, le=_INT64_MAX)


T = TypeVar("T")


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    ready(store.engine)
    return store


def _guarded(
    request: Request,
    interaction: str,
    work: Callable[[access.RequestContext], tuple[T, list[tuple[str, str]]]],
) -> T:
    """Authorise ``interaction`` on Patient, run ``work``, and audit the outcome either way.

    ``work`` returns the answer and the (type, id) entities it touched. Instance checks are left to
    ``work`` (it filters what it returns), so the golden Patient id is never checked on its own.
    """
    from rhip.api.deps import request_context

    ctx = request_context(request)
    ctx.extra["interaction"] = interaction
    ctx.extra.setdefault("entities", [])
    try:
        access.authorize(ctx, interaction, "Patient")
        answer, entities = work(ctx)
    except RhipError as exc:
        access.audit(ctx, interaction, "4" if exc.status < 500 else "8", ctx.extra["entities"])
        raise
    except Exception:
        access.audit(ctx, interaction, "8", ctx.extra["entities"])
        raise
    access.audit(ctx, interaction, "0", entities)
    return answer


def _actor(ctx: access.RequestContext) -> str:
    return ctx.principal or "anonymous"


def _visible_resident(
    ctx: access.RequestContext, store: Store, resident_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The golden Patient, the source Patients the caller may see, and all linked record ids.

    ResourceNotFound when the caller may see neither the golden Patient nor any linked record.
    """
    ctx.extra["entities"] = [("Patient", resident_id)]
    with store.engine.connect() as conn:
        summary = resident_summary(conn, resident_id)
    golden = store.read("Patient", resident_id)
    record_ids = [str(rec["record_id"]) for rec in summary["records"]]
    sources: list[dict[str, Any]] = []
    for record_id in record_ids:
        if record_id == resident_id:
            continue
        try:
            sources.append(store.read("Patient", record_id))
        except RhipError:
            continue
    shown = access.filter_results(ctx, sources)
    if not access.filter_results(ctx, [golden]) and not shown:
        raise ResourceNotFound(f"Patient/{resident_id} is not available")
    return golden, shown, record_ids


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


def resident_bundle(
    store: Store, resident_id: str, ctx: access.RequestContext | None = None
) -> dict[str, Any]:
    """The golden Patient (match) and every linked source Patient (include) the caller may see.

    Without ``ctx`` (internal use) every linked record is included.
    """
    golden, shown, _ = _visible_resident(ctx or _internal_context(), store, resident_id)
    entries: list[tuple[dict[str, Any], str]] = [(golden, "match")]
    entries += [(source, "include") for source in shown]
    return _bundle(entries)


def _internal_context() -> access.RequestContext:
    """A context without a security runtime: the access hooks allow everything and record nothing."""
    return access.RequestContext(method="GET", path="/mpi/resident")


def _entities(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(e["resource"]["resourceType"]), str(e["resource"]["id"]))
        for e in bundle["entry"]
        if e["resource"].get("resourceType") == "Patient"
    ]


@router.get("/resident")
def find_resident(request: Request, card: str = Query(..., description="system|value of any card"),
                  store: Store = Depends(_store)) -> dict[str, Any]:  # fmt: skip
    """The resident holding a card (citizen ID, health card, any facility number, VHC) with all records."""

    def work(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        with store.engine.connect() as conn:
            resident_id = resolve_card(conn, card)
        bundle = resident_bundle(store, resident_id, ctx)
        return bundle, _entities(bundle)

    return _guarded(request, "read", work)


@router.get("/resident/{resident_id}")
def read_resident(request: Request, resident_id: str, store: Store = Depends(_store)) -> dict[str, Any]:
    """A resident's golden Patient and linked source records."""

    def work(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        bundle = resident_bundle(store, resident_id, ctx)
        return bundle, _entities(bundle)

    return _guarded(request, "read", work)


@router.get("/resident/{resident_id}/$everything")
def resident_everything(request: Request, resident_id: str, store: Store = Depends(_store)) -> dict[str, Any]:
    """Everything of every linked source record the caller may see, from every institution, in one Bundle."""

    def work(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return _everything(ctx, store, resident_id), [("Patient", resident_id)]

    return _guarded(request, "operation", work)


def _everything(ctx: access.RequestContext, store: Store, resident_id: str) -> dict[str, Any]:
    """The golden Patient and, filtered for the caller, what ``Patient/{id}/$everything`` gathers."""
    from rhip.api.everything import everything

    golden, _, _ = _visible_resident(ctx, store, resident_id)
    found = everything(
        store, resident_id, resident=True, visible=lambda resources: access.filter_results(ctx, resources)
    )
    shown = [r for r in found if (r.get("resourceType"), str(r.get("id"))) != ("Patient", resident_id)]
    return _bundle([(golden, "match")] + [(r, "match") for r in shown])


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

    def work(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        ctx.extra["entities"] = [("Patient", record_id)]
        shown = access.filter_results(ctx, [store.read("Patient", record_id)])
        if not shown:
            raise ResourceNotFound(f"Patient/{record_id} is not available")
        decision = match_and_link(store, shown[0])
        return _decision_json(decision), [("Patient", record_id), ("Patient", decision.resident_id)]

    return _guarded(request, "update", work)


@router.get("/review")
def list_reviews(
    request: Request, status: str = "open", count: int = Query(50, alias="_count", ge=1, le=1000),
    offset: int = Query(0, alias="_offset", ge=0, le=_INT64_MAX), store: Store = Depends(_store),
) -> dict[str, Any]:  # fmt: skip
    """The review queue (possible matches) with the evidence of each pair, strongest first."""

    def work(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        page = review_page(store, status, count, offset, ctx)
        refs = {ref for item in page["items"] for ref in (item["record"], item["candidate"])}
        return page, [("Patient", ref.removeprefix("Patient/")) for ref in sorted(refs)]

    return _guarded(request, "search-type", work)


def _visible_items(
    store: Store, items: list[dict[str, Any]], ctx: access.RequestContext
) -> list[dict[str, Any]]:
    """Review items whose every stored Patient (record and candidate) the caller may see."""
    refs = {ref.removeprefix("Patient/") for item in items for ref in (item["record"], item["candidate"])}
    bodies: dict[str, dict[str, Any]] = {}
    for rid in refs:
        try:
            bodies[rid] = store.read("Patient", rid)
        except RhipError:
            continue  # nothing stored to disclose beyond the id
    visible = {str(b["id"]) for b in access.filter_results(ctx, list(bodies.values()))}
    hidden = set(bodies) - visible
    return [
        item
        for item in items
        if not {item["record"].removeprefix("Patient/"), item["candidate"].removeprefix("Patient/")} & hidden
    ]


def review_page(
    store: Store, status: str, count: int, offset: int, ctx: access.RequestContext | None = None
) -> dict[str, Any]:
    """One page of review items of a status (open, accepted, rejected, closed).

    With ``ctx``, items naming a Patient the caller may not see are left out of the page.
    """
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
    if ctx is not None:
        items = _visible_items(store, items, ctx)
    return {"total": total, "offset": offset, "count": len(items), "items": items}


def _correct(
    request: Request, work: Callable[[str], corrections.ChangeResult | None], *refs: str
) -> dict[str, Any]:
    """Run one correction as the caller (``update`` on Patient) and audit it with the residents it moved."""

    def run(ctx: access.RequestContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        named = [("Patient", ref.removeprefix("Patient/")) for ref in refs]
        ctx.extra["entities"] = named
        result = work(_actor(ctx))
        moved = [("Patient", r) for r in (result.residents if result else [])]
        return _change_json(result), named + [m for m in moved if m not in named]

    return _guarded(request, "update", run)


def _change_json(result: corrections.ChangeResult | None) -> dict[str, Any]:
    if result is None:
        return {"change": None, "residents": []}
    return {
        "change": result.change_id,
        "audit": f"AuditEvent/{result.audit_id}",
        "residents": [f"Patient/{r}" for r in result.residents],
    }


@router.post("/review/{review_id}/$accept")
def accept(request: Request, review_id: int = _row_id(), store: Store = Depends(_store)) -> dict[str, Any]:
    """Accept a possible match: the record joins the candidate resident."""
    return _correct(request, lambda actor: corrections.accept_review(store, review_id, actor=actor))


@router.post("/review/{review_id}/$reject")
def reject(request: Request, review_id: int = _row_id(), store: Store = Depends(_store)) -> dict[str, Any]:
    """Reject a possible match: the pair is not proposed again."""
    return _correct(request, lambda actor: corrections.reject_review(store, review_id, actor=actor))


class LinkBody(BaseModel):
    """Link a source record to a resident."""

    record: str
    resident: str


@router.post("/link")
def link(request: Request, body: LinkBody, store: Store = Depends(_store)) -> dict[str, Any]:
    """Manually link a source record to a resident."""
    record, resident = body.record.removeprefix("Patient/"), body.resident.removeprefix("Patient/")
    return _correct(
        request, lambda actor: corrections.link_record(store, record, resident, actor=actor), record, resident
    )


@router.post("/unlink")
def unlink(request: Request, body: RecordRef, store: Store = Depends(_store)) -> dict[str, Any]:
    """Take a source record out of its resident into a resident of its own."""
    record = body.record.removeprefix("Patient/")
    return _correct(request, lambda actor: corrections.unlink_record(store, record, actor=actor), record)


class MergeBody(BaseModel):
    """Merge resident ``source`` into resident ``target``."""

    source: str
    target: str


@router.post("/merge")
def merge(request: Request, body: MergeBody, store: Store = Depends(_store)) -> dict[str, Any]:
    """Merge two residents (the source's records move; the source is kept, marked merged)."""
    source, target = body.source.removeprefix("Patient/"), body.target.removeprefix("Patient/")
    return _correct(
        request, lambda actor: corrections.merge_residents(store, source, target, actor=actor), source, target
    )


@router.post("/change/{change_id}/$unmerge")
def unmerge(request: Request, change_id: int = _row_id(), store: Store = Depends(_store)) -> dict[str, Any]:
    """Undo a merge."""
    return _correct(request, lambda actor: corrections.unmerge(store, change_id, actor=actor))


@router.post("/change/{change_id}/$revert")
def revert(request: Request, change_id: int = _row_id(), store: Store = Depends(_store)) -> dict[str, Any]:
    """Undo any correction (link, unlink, accept, reject, merge)."""
    return _correct(request, lambda actor: corrections.revert_change(store, change_id, actor=actor))
