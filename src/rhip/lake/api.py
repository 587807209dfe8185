"""FHIR Bulk Data Access ``$export`` (system, Patient, Group) and ViewDefinition management.

Kick-off answers ``202 Accepted`` with ``Content-Location`` pointing at the status endpoint; the
client polls it (``202`` with ``X-Progress`` while running, then ``200`` with the manifest), fetches
the NDJSON files, and may ``DELETE`` the job. Every kick-off passes the platform's single policy
point (:mod:`rhip.api.access`) and every exported resource goes through ``filter_results`` for the
kick-off's caller, so access control from the security module applies here unchanged. A job belongs
to the principal who started it: polling, downloading and deleting it as anybody else answers 403
(audited like every other refusal). Kick-off, status, file and delete are audited; so is every
written batch (interaction ``export``, with the residents it holds).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import FileResponse, Response

from rhip.api import access
from rhip.api.deps import begin, get_settings, get_store, raw_body
from rhip.api.http import FhirResponse, base_url, outcome, query_pairs
from rhip.api.routing import FhirRoute
from rhip.config import Settings
from rhip.errors import Forbidden, InvalidRequest, Issue, NotSupported
from rhip.lake.bulk import BulkJob, BulkRequest, JobManager, parse_type_filters
from rhip.lake.compiler import compile_view, validate_view
from rhip.store import Store, parse_instant

__all__ = ["router", "setup"]

router = APIRouter(route_class=FhirRoute)
NDJSON = "application/fhir+ndjson"
_FORMATS = {NDJSON, "application/ndjson", "ndjson"}


def _manager(request: Request) -> JobManager:
    manager: JobManager | None = getattr(request.app.state, "bulk_jobs", None)
    if manager is None:
        settings: Settings = request.app.state.settings
        store: Store = request.app.state.store
        manager = JobManager(Path(settings.data_dir) / "bulk", lambda: store)
        request.app.state.bulk_jobs = manager
    return manager


def _parse(request: Request, level: str, group_id: str | None) -> BulkRequest:
    pairs = query_pairs(request)
    known = {
        "_type",
        "_since",
        "_typeFilter",
        "_outputFormat",
        "_elements",
        "includeAssociatedData",
        "patient",
    }
    for name, _ in pairs:
        if name not in known:
            raise InvalidRequest(f"unknown $export parameter {name[:40]}", expression=(name[:40],))
        if name in ("_elements", "includeAssociatedData", "patient"):
            raise NotSupported(f"$export parameter {name} is not supported")
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    fmt = values.get("_outputFormat", [NDJSON])[-1]
    if fmt not in _FORMATS:
        raise InvalidRequest("_outputFormat must be application/fhir+ndjson", expression=("_outputFormat",))
    types = [t for v in values.get("_type", []) for t in v.split(",") if t] or None
    for t in types or []:
        if not t.isalpha() or not t[:1].isupper():
            raise InvalidRequest("_type must list resource types", expression=("_type",))
    since = None
    if "_since" in values:
        try:
            since = parse_instant(values["_since"][-1])
        except Exception as exc:
            raise InvalidRequest("_since must be a FHIR instant", expression=("_since",)) from exc
    filters = parse_type_filters(values.get("_typeFilter", []))
    return BulkRequest(level, str(request.url), types, since, filters, group_id)


def _batch_filter(ctx: access.RequestContext) -> Any:
    """The export's access filter: each batch is filtered and audited for the kick-off's caller.

    Each batch gets a fresh copy of the context, so that what the hooks keep per request (the
    residents seen, the resources already cleared) does not grow with the size of the export.
    """
    keep: dict[str, Any] = {k: ctx.extra[k] for k in ("security", "principal", "purpose") if k in ctx.extra}

    def filter_batch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batch_ctx = replace(ctx, extra=dict(keep))
        shown = access.filter_results(batch_ctx, rows)
        if shown:
            access.audit(batch_ctx, "export", "0")
        return shown

    return filter_batch


def _check_type_filters(ctx: access.RequestContext, bulk: BulkRequest) -> None:
    """Refuse ``_has`` and chained ``_typeFilter`` parameters to a caller who sees part of the store.

    Their conditions would be tested on records the caller may not see (the same side channel the
    search refuses).
    """
    security = ctx.extra.get("security")
    restricted = getattr(security, "restricted", None)
    if restricted is None or not restricted(ctx):
        return
    for queries in bulk.type_filters.values():
        for name, _ in (pair for query in queries for pair in query):
            if name.startswith("_has:") or "." in name:
                raise Forbidden(
                    f"_typeFilter {name.split(':')[0]}: _has and chained parameters need full access"
                )


def _owned_job(request: Request, job_id: str) -> tuple[access.RequestContext, BulkJob]:
    """Authorise a status/file/delete call: the job must exist and belong to the caller (403 otherwise)."""
    ctx = begin(request, "operation", None)
    job = _manager(request).get(job_id)
    if job.owner != ctx.principal:  # with authentication on, a job without an owner is nobody's
        raise Forbidden("this export job was started by another user")
    return ctx, job


def _kickoff(request: Request, store: Store, level: str, group_id: str | None = None) -> Response:
    ctx = begin(
        request,
        "operation",
        "Group" if level == "group" else ("Patient" if level == "patient" else None),
        group_id,
    )
    prefer = request.headers.get("prefer", "")
    if prefer and "respond-async" not in prefer:
        raise InvalidRequest("$export needs 'Prefer: respond-async'")
    bulk = _parse(request, level, group_id)
    _check_type_filters(ctx, bulk)
    if level == "group":
        store.read("Group", group_id or "")  # 404/410 now rather than a failed job later
    job = _manager(request).start(bulk, filter_fn=_batch_filter(ctx), owner=ctx.principal)
    access.audit(ctx, "operation", "0", ctx.extra.get("entities", []))
    location = f"{base_url(request)}/$export-status/{job.id}"
    return Response(status_code=202, headers={"Content-Location": location})


@router.get("/fhir/$export")
@router.post("/fhir/$export")
def export_system(request: Request, store: Store = Depends(get_store)) -> Response:
    """System-level export: every resource (of ``_type``) changed since ``_since``."""
    return _kickoff(request, store, "system")


@router.get("/fhir/Patient/$export")
@router.post("/fhir/Patient/$export")
def export_patients(request: Request, store: Store = Depends(get_store)) -> Response:
    """Patient-level export: all patients and the resources that reference them."""
    return _kickoff(request, store, "patient")


@router.get("/fhir/Group/{group_id}/$export")
@router.post("/fhir/Group/{group_id}/$export")
def export_group(group_id: str, request: Request, store: Store = Depends(get_store)) -> Response:
    """Group-level export: the group's member patients and the resources that reference them."""
    return _kickoff(request, store, "group", group_id)


@router.get("/fhir/$export-status/{job_id}")
def export_status(job_id: str, request: Request) -> Response:
    """202 with X-Progress while running; 200 with the manifest when done; 500 if the job failed."""
    ctx, job = _owned_job(request, job_id)
    access.audit(ctx, "operation", "0")
    if job.status == "in-progress":
        return Response(status_code=202, headers={"X-Progress": job.progress, "Retry-After": "1"})
    if job.status == "failed":
        body = outcome([Issue("error", "exception", job.error or "export failed")])
        return FhirResponse(body, status_code=500)
    files = f"{base_url(request)}/$export-file/{job.id}"
    manifest: dict[str, Any] = {
        "transactionTime": job.transaction_time,
        "request": job.request.request_url,
        "requiresAccessToken": bool(request.app.state.settings.auth_enabled),
        "output": [
            {"type": o["type"], "url": f"{files}/{o['file']}", "count": o["count"]} for o in job.output
        ],
        "error": [],
    }
    from starlette.responses import JSONResponse

    return JSONResponse(manifest, headers={"Expires": "0"})


@router.delete("/fhir/$export-status/{job_id}")
def export_delete(job_id: str, request: Request) -> Response:
    """Cancel a job and delete its files."""
    ctx, _ = _owned_job(request, job_id)
    _manager(request).delete(job_id)
    access.audit(ctx, "operation", "0")
    return Response(status_code=202)


@router.get("/fhir/$export-file/{job_id}/{name}")
def export_file(
    job_id: str, name: str, request: Request, settings: Settings = Depends(get_settings)
) -> Response:
    """One NDJSON output file."""
    ctx, _ = _owned_job(request, job_id)
    path = _manager(request).file(job_id, name)
    access.audit(ctx, "operation", "0")
    return FileResponse(path, media_type=NDJSON, filename=name)


# --- ViewDefinitions as platform resources ---------------------------------------------------
# ViewDefinition is a logical model (SQL-on-FHIR), not an R4 resource type, so the generic FHIR
# routes do not serve it; these routes store it in the same versioned store after validating it.


def _view_body(request_body: bytes) -> dict[str, Any]:
    import orjson

    try:
        view = orjson.loads(request_body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("body is not JSON") from exc
    if not isinstance(view, dict):
        raise InvalidRequest("body must be a ViewDefinition object")
    view.setdefault("resourceType", "ViewDefinition")
    validate_view(view)
    compile_view(view, "duckdb")
    return view


@router.get("/fhir/ViewDefinition")
def view_list(request: Request, store: Store = Depends(get_store)) -> Response:
    """All stored ViewDefinitions as a searchset Bundle."""
    begin(request, "search-type", "ViewDefinition")
    views = [body for body, _, _, _ in store.iter_current("ViewDefinition") if body is not None]
    entries = [{"fullUrl": f"{base_url(request)}/ViewDefinition/{v['id']}", "resource": v} for v in views]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(views), "entry": entries}
    return FhirResponse(bundle)


@router.post("/fhir/ViewDefinition")
def view_create(
    request: Request, body: bytes = Depends(raw_body), store: Store = Depends(get_store)
) -> Response:
    """Store a new ViewDefinition (validated and compiled first)."""
    begin(request, "create", "ViewDefinition")
    result = store.create(_view_body(body))
    location = f"{base_url(request)}/ViewDefinition/{result.resource['id']}/_history/{result.version_id}"
    return FhirResponse(result.resource, status_code=201, headers={"Location": location})


@router.get("/fhir/ViewDefinition/{view_id}")
def view_read(view_id: str, request: Request, store: Store = Depends(get_store)) -> Response:
    """Read a stored ViewDefinition."""
    begin(request, "read", "ViewDefinition", view_id)
    return FhirResponse(store.read("ViewDefinition", view_id))


@router.put("/fhir/ViewDefinition/{view_id}")
def view_update(
    view_id: str, request: Request, body: bytes = Depends(raw_body), store: Store = Depends(get_store)
) -> Response:
    """Create or replace a ViewDefinition with a client-chosen id."""
    begin(request, "update", "ViewDefinition", view_id)
    view = _view_body(body)
    view["id"] = view_id
    result = store.update("ViewDefinition", view_id, view)
    return FhirResponse(result.resource, status_code=201 if result.created else 200)


@router.delete("/fhir/ViewDefinition/{view_id}")
def view_delete(view_id: str, request: Request, store: Store = Depends(get_store)) -> Response:
    """Delete a stored ViewDefinition."""
    begin(request, "delete", "ViewDefinition", view_id)
    store.delete("ViewDefinition", view_id)
    return Response(status_code=204)


@router.get("/fhir/ViewDefinition/{view_id}/$run")
def view_run(
    view_id: str,
    request: Request,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Run a stored ViewDefinition over the Parquet lake; rows as JSON (default), NDJSON or CSV."""
    import csv
    import io

    from rhip.lake.engine import DuckDBEngine

    begin(request, "operation", "ViewDefinition", view_id)
    view = store.read("ViewDefinition", view_id)
    fmt = dict(query_pairs(request)).get("_format", "json")
    limit = int(dict(query_pairs(request)).get("_limit", "10000"))
    engine = DuckDBEngine()
    try:
        engine.attach_lake(Path(settings.lake_dir))
        result = engine.run_view(view)
    finally:
        engine.close()
    rows = result.rows[:limit]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=result.columns)
        writer.writeheader()
        writer.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv")
    if fmt == "ndjson":
        import orjson

        return Response(b"".join(orjson.dumps(r) + b"\n" for r in rows), media_type="application/x-ndjson")
    from starlette.responses import JSONResponse

    return JSONResponse(rows)


def setup(app: FastAPI) -> None:
    """Put the ``$export`` routes before the generic ``/fhir/{type}/{id}`` patterns."""

    def is_ours(route: Any) -> bool:
        return getattr(route, "original_router", None) is router or "$export" in str(
            getattr(route, "path", "")
        )

    ours = [r for r in app.router.routes if is_ours(r)]
    if not ours:
        return
    rest = [r for r in app.router.routes if not is_ours(r)]
    app.router.routes[:] = ours + rest
