"""Ingest over HTTP: device readings in, and the operator's view of batches and quarantine.

``POST /ingest/device/{facility}`` takes one reading, a list, or ``{"readings": [...]}`` (see
:mod:`rhip.ingest.device`) and answers the reconciliation counts. ``GET /ingest/batches`` and
``GET /ingest/quarantine[/{id}]`` list batches and quarantined records (reasons only; the verbatim
record is never sent over HTTP, it may hold personal data: use ``rhip quarantine show --raw``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from rhip.store.meta import format_instant

router = APIRouter(prefix="/ingest", tags=["ingest"])
#: Row ids and offsets are SQL BIGINTs: larger values are client errors, not database overflows.
_INT64_MAX = 2**63 - 1


def _pipeline(request: Request) -> Any:
    state = request.app.state
    pipeline = getattr(state, "ingest_pipeline", None)
    if pipeline is None:
        from rhip.ingest.hooks import install_default_sinks
        from rhip.ingest.pipeline import Pipeline
        from rhip.quality.collector import QualityCollector

        store = state.store
        install_default_sinks()
        pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
        state.ingest_pipeline = pipeline
    return pipeline


@router.post("/device/{facility}")
async def post_device(facility: str, request: Request) -> dict[str, Any]:
    """Ingest device readings for ``facility``; quarantined readings are counted, not rejected."""
    from rhip.ingest import device

    _check_sender(request, facility)
    payload = await request.body()
    pipeline = await run_in_threadpool(_pipeline, request)
    report = await run_in_threadpool(device.ingest_payload, pipeline, payload, facility, "http")
    return {
        "batch": report.batch_id,
        "received": report.received,
        "stored": report.stored,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "stale": report.stale,
        "resources": report.resources_written,
    }


def _check_sender(request: Request, facility: str) -> None:
    """A ``system`` account bound to a facility sends readings for that facility only.

    An unbound one (a regional device hub) sends for any; with authentication off nobody is bound.
    """
    from rhip.errors import Forbidden

    ctx = getattr(request.state, "rhip_ctx", None)
    principal = ctx.extra.get("principal") if ctx is not None else None
    bound = getattr(principal, "organization", None)
    if bound and getattr(principal, "role", None) == "system" and bound != facility:
        raise Forbidden(f"this account sends for facility {bound!r} only, not for {facility!r}")


def _batches(engine: Any, facility: str | None, limit: int) -> list[dict[str, Any]]:
    from rhip.ingest.schema import ensure_schema, ingest_batch

    ensure_schema(engine)
    stmt = select(ingest_batch).order_by(ingest_batch.c.started.desc()).limit(limit)
    if facility:
        stmt = stmt.where(ingest_batch.c.facility == facility)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:  # instants in UTC, as everywhere in the API (the table keeps epoch seconds)
        for name in ("started", "finished"):
            if row[name] is not None:
                row[name] = format_instant(row[name])
    return rows


@router.get("/batches")
async def get_batches(
    request: Request, facility: str | None = Query(None), limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """Recent batches with their reconciliation counts, newest first."""
    return await run_in_threadpool(_batches, request.app.state.store.engine, facility, limit)


@router.get("/quarantine")
async def get_quarantine(
    request: Request,
    facility: str | None = Query(None),
    connector: str | None = Query(None),
    status: str = Query("open"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=_INT64_MAX),
) -> list[dict[str, Any]]:
    """Quarantined records (source, position, reasons, status), oldest first.

    A ``status`` other than open, replayed or all is a 400 naming them: it listed nothing, so a
    typo looked like an empty quarantine (the CLI refuses it the same way).
    """
    from rhip.errors import InvalidRequest
    from rhip.ingest.cli import STATUSES
    from rhip.ingest.quarantine import list_entries

    if status not in STATUSES:
        raise InvalidRequest(f"status: '{status[:32]}' is not one of {', '.join(STATUSES)}")
    entries = await run_in_threadpool(
        list_entries,
        request.app.state.store.engine,
        status=None if status == "all" else status,
        facility=facility,
        connector=connector,
        limit=limit,
        offset=offset,
    )
    return [e.summary() for e in entries]


@router.get("/quarantine/{entry_id}")
async def get_quarantine_entry(
    request: Request, entry_id: int = Path(..., ge=0, le=_INT64_MAX)
) -> dict[str, Any]:
    """One quarantined record's summary; 404 (OperationOutcome) when absent."""
    from rhip.ingest.quarantine import get_entry

    entry = await run_in_threadpool(get_entry, request.app.state.store.engine, entry_id)
    return entry.summary()
