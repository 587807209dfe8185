"""Instance and type interactions: read, vread, create, update, patch, delete, conditional forms.

Each route is a plain sync function run in the worker pool: it checks the request, passes the
policy hook, calls one ``Store`` method and shapes the answer (status, ``Location``, ``ETag``,
``Last-Modified``, ``Prefer``). The store decides versions, ids and atomicity.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.deps import (
    INLINE_CREATE_BYTES,
    begin,
    check_id,
    check_type,
    create_grouped,
    create_resource,
    ensure_valid,
    get_store,
    raw_body,
    run_work,
    store_is_sqlite,
    store_work,
    write_lock,
)
from rhip.api.http import (
    FhirResponse,
    base_url,
    check_format,
    info_outcome,
    parse_etag,
    parse_http_date,
    parse_json_body,
    parse_resource_body,
    prefer_return,
    query_pairs,
    version_headers,
)
from rhip.api.routing import FhirRoute
from rhip.api.shaping import check_summary, parse_elements, shape
from rhip.errors import InvalidRequest, MultipleMatches, NotSupported, ResourceNotFound, VersionConflict
from rhip.fhir.primitives import is_ascii_digits
from rhip.store.guard import WriteCheck

if TYPE_CHECKING:
    from rhip.store import Store

router = APIRouter(route_class=FhirRoute)
_READ_PARAMS = {"_format", "_pretty", "_summary", "_elements"}


def _output(request: Request, resource: dict[str, Any], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Apply the access filter and ``_summary``/``_elements`` to a resource about to be returned."""
    ctx = request.state.rhip_ctx
    allowed = access.filter_results(ctx, [resource])
    if not allowed:
        raise ResourceNotFound(f"{resource.get('resourceType')}/{resource.get('id')} is not available")
    summary = elements = None
    for name, value in pairs:
        if name == "_summary":
            summary = check_summary(value)
        elif name == "_elements":
            elements = parse_elements(value)
    return shape(allowed[0], summary, elements)


def write_response(request: Request, result: Any, *, interaction: str) -> Response:
    """The answer to a write: 201 + Location when created, else 200; honours ``Prefer: return``."""
    resource = result.resource
    base = base_url(request)
    headers = version_headers(resource, result.last_updated)
    location = f"{base}/{resource['resourceType']}/{resource['id']}/_history/{result.version_id}"
    status = 201 if result.created else 200
    headers["Location" if result.created else "Content-Location"] = location
    ctx = request.state.rhip_ctx
    ctx.extra["entities"] = [(resource["resourceType"], resource["id"])]
    access.audit(ctx, interaction, "0", ctx.extra["entities"])
    prefer = prefer_return(request)
    if prefer == "minimal":
        return FhirResponse(None, status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        verb = "created" if result.created else "updated"
        text = f"{resource['resourceType']}/{resource['id']} {verb} (version {result.version_id})"
        return FhirResponse(info_outcome(text), status_code=status, headers=headers)
    return FhirResponse(resource, status_code=status, headers=headers)


def _not_modified(request: Request, resource: dict[str, Any], headers: dict[str, str]) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        return headers.get("ETag", "").strip() in {t.strip() for t in inm.split(",")} or inm.strip() == "*"
    ims = request.headers.get("if-modified-since")
    if ims is not None and "Last-Modified" in headers:
        since = parse_http_date(ims, "If-Modified-Since")
        return parse_http_date(headers["Last-Modified"], "Last-Modified") <= since
    return False


def _read_answer(request: Request, resource: dict[str, Any], pairs: list[tuple[str, str]]) -> Response:
    headers = version_headers(resource)
    if _not_modified(request, resource, headers):
        return Response(status_code=304, headers=headers)
    body = _output(request, resource, pairs)
    access.audit(
        request.state.rhip_ctx,
        request.state.rhip_ctx.extra["interaction"],
        "0",
        request.state.rhip_ctx.extra["entities"],
    )
    return FhirResponse(body, headers=headers)


def _check_read_params(pairs: list[tuple[str, str]]) -> None:
    for name, _ in pairs:
        if name not in _READ_PARAMS:
            raise InvalidRequest(f"{name}: parameter not supported on read", expression=(name,))


@router.get("/fhir/{res_type}/{res_id}/_history/{version_id}")
@store_work("inline")
def vread(
    request: Request, res_type: str, res_id: str, version_id: str, store: Store = Depends(get_store)
) -> Response:
    """vread: one version of a resource."""
    pairs = query_pairs(request)
    check_format(request, pairs)
    check_type(res_type)
    check_id(res_id)
    _check_read_params(pairs)
    if not is_ascii_digits(version_id):
        raise ResourceNotFound(f"{res_type}/{res_id}: no version '{version_id[:20]}'")
    begin(request, "vread", res_type, res_id)
    return _read_answer(request, store.vread(res_type, res_id, int(version_id)), pairs)


def read(request: Request, res_type: str, res_id: str, store: Store) -> Response:
    """read: the current version of a resource (304 on a matching If-None-Match/If-Modified-Since)."""
    pairs = query_pairs(request)
    check_format(request, pairs)
    check_type(res_type)
    check_id(res_id)
    _check_read_params(pairs)
    begin(request, "read", res_type, res_id)
    return _read_answer(request, store.read(res_type, res_id), pairs)


def _body_for(request: Request, body: bytes, res_type: str) -> dict[str, Any]:
    resource = parse_resource_body(request, body)
    if resource["resourceType"] != res_type:
        raise InvalidRequest(
            f"resourceType '{str(resource['resourceType'])[:64]}' does not match the URL type {res_type}",
            expression=("resourceType",),
        )
    return resource


@router.post("/fhir/{res_type}")
async def create(request: Request, res_type: str) -> Response:
    """create (conditional with If-None-Exist): 201 with Location, or 200 with the existing match.

    On SQLite a body of up to ``INLINE_CREATE_BYTES`` is checked on the event loop and the write
    joins a group commit (a worker thread per group, not per request); anything else runs in a
    worker thread from start to end. The body is read here rather than through a dependency: the
    busiest write route skips FastAPI's dependency resolution.
    """
    body = await request.body()
    if not store_is_sqlite(request) or len(body) > INLINE_CREATE_BYTES:
        return await run_work(request, "write", functools.partial(_create, request, res_type, body))
    resource, if_none_exist = _create_input(request, res_type, body)
    if if_none_exist is not None:
        conditional = functools.partial(create_resource, request, resource, if_none_exist)
        result = await anyio.to_thread.run_sync(conditional)
    else:
        result = await create_grouped(request, resource)
    return write_response(request, result, interaction="create")


def _create(request: Request, res_type: str, body: bytes) -> Response:
    resource, if_none_exist = _create_input(request, res_type, body)
    result = create_resource(request, resource, if_none_exist)
    return write_response(request, result, interaction="create")


def _create_input(
    request: Request, res_type: str, body: bytes
) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
    """The checked, validated and authorised resource of a create, and its If-None-Exist criteria."""
    check_format(request)
    check_type(res_type)
    resource = _body_for(request, body, res_type)
    resource.pop("id", None)  # the server assigns ids on create
    ensure_valid(resource)
    ctx = begin(request, "create", res_type, resource=resource)
    guard = access.write_guard(ctx)
    if guard is not None:  # on the body alone: a create has no stored version to read
        guard(WriteCheck("POST", res_type, None, None, resource))
    condition = request.headers.get("if-none-exist")
    if_none_exist = parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True) if condition else None
    if condition is not None and not if_none_exist:
        raise InvalidRequest("If-None-Exist: no search parameters given", expression=("If-None-Exist",))
    return resource, if_none_exist


@router.put("/fhir/{res_type}/{res_id}")
@store_work("write")
def update(
    request: Request,
    res_type: str,
    res_id: str,
    body: bytes = Depends(raw_body),
    store: Store = Depends(get_store),
) -> Response:
    """update, or update-as-create for a client-chosen id; If-Match for version-aware updates."""
    check_format(request)
    check_type(res_type)
    check_id(res_id, for_write=True)
    resource = _body_for(request, body, res_type)
    if "id" not in resource:
        raise InvalidRequest(
            "id: the resource body must carry the id of the URL",
            code="required",
            expression=(f"{res_type}.id",),
        )
    if resource.get("id") != res_id:
        raise InvalidRequest("id: the resource id does not match the URL id", expression=(f"{res_type}.id",))
    ensure_valid(resource)
    ctx = begin(request, "update", res_type, res_id, resource)
    if_match = parse_etag(request.headers.get("if-match"))
    guard = access.write_guard(ctx)
    with write_lock(request):
        result = store.update(res_type, res_id, resource, if_match=if_match, guard=guard)
    return write_response(request, result, interaction="update")


def _search_pairs(request: Request, res_type: str) -> list[tuple[str, str]]:
    pairs = [(k, v) for k, v in query_pairs(request) if k not in ("_format", "_pretty")]
    if not pairs:
        raise InvalidRequest(
            f"conditional {request.method} on {res_type} needs search parameters; "
            f"use {res_type}/[id] for a single resource"
        )
    return pairs


@router.put("/fhir/{res_type}")
@store_work("write")
def conditional_update(
    request: Request, res_type: str, body: bytes = Depends(raw_body), store: Store = Depends(get_store)
) -> Response:
    """Conditional update ``PUT Type?params``: 0 matches create, 1 updates, more is 412."""
    check_format(request)
    check_type(res_type)
    pairs = _search_pairs(request, res_type)
    resource = _body_for(request, body, res_type)
    ensure_valid(resource)
    ctx = begin(request, "update", res_type, resource.get("id"), resource)
    guard = access.write_guard(ctx)
    with write_lock(request):
        result = store.conditional_update(res_type, pairs, resource, guard=guard)
    return write_response(request, result, interaction="update")


def _patch_ops(request: Request, body: bytes) -> list[dict[str, Any]]:
    ops = parse_json_body(request, body, patch=True)
    if isinstance(ops, dict) and ops.get("resourceType") == "Parameters":
        raise NotSupported("FHIRPath Patch is not supported; send a JSON Patch (application/json-patch+json)")
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise InvalidRequest("JSON Patch body must be an array of operation objects", code="structure")
    return ops


def validated_patch(
    request: Request,
    store: Store,
    res_type: str,
    res_id: str,
    ops: list[dict[str, Any]],
    if_match: int | None,
) -> Any:
    """Patch only when the result is valid: preview, validate, then patch exactly that version.

    The preview is applied to the current version and the store is asked to patch that version
    (If-Match); if another writer got in between, the preview is redone (3 tries). The caller's
    write guard sees the stored version and the patched result.
    """
    from rhip.store.patch import apply_patch

    guard = access.write_guard(request.state.rhip_ctx)

    for _ in range(3):
        current = store.read(res_type, res_id)
        version = int(current["meta"]["versionId"])
        if if_match is not None and if_match != version:
            raise VersionConflict(f'{res_type}/{res_id}: If-Match W/"{if_match}" is not the current version')
        ensure_valid(apply_patch(current, ops))
        try:
            with write_lock(request):
                return store.patch(res_type, res_id, ops, if_match=version, guard=guard)
        except VersionConflict:
            if if_match is not None:
                raise
    raise VersionConflict(f"{res_type}/{res_id} is being written concurrently; retry", status=409)


@router.patch("/fhir/{res_type}/{res_id}")
@store_work("write")
def patch(
    request: Request,
    res_type: str,
    res_id: str,
    body: bytes = Depends(raw_body),
    store: Store = Depends(get_store),
) -> Response:
    """JSON Patch (RFC 6902) of one resource; If-Match for version-aware patches."""
    check_format(request)
    check_type(res_type)
    check_id(res_id)
    ops = _patch_ops(request, body)
    begin(request, "patch", res_type, res_id)
    if_match = parse_etag(request.headers.get("if-match"))
    result = validated_patch(request, store, res_type, res_id, ops, if_match)
    return write_response(request, result, interaction="patch")


def _single_match(store: Store, res_type: str, pairs: list[tuple[str, str]]) -> str:
    ids = store.matching_ids(res_type, pairs)
    if not ids:
        raise ResourceNotFound(f"no {res_type} matches the conditional request")
    if len(ids) > 1:
        raise MultipleMatches(f"{len(ids)} {res_type} resources match the conditional request")
    return ids[0]


@router.patch("/fhir/{res_type}")
@store_work("write")
def conditional_patch(
    request: Request, res_type: str, body: bytes = Depends(raw_body), store: Store = Depends(get_store)
) -> Response:
    """Conditional patch ``PATCH Type?params``: exactly one match is patched, else 404/412."""
    check_format(request)
    check_type(res_type)
    pairs = _search_pairs(request, res_type)
    ops = _patch_ops(request, body)
    res_id = _single_match(store, res_type, pairs)
    begin(request, "patch", res_type, res_id)
    result = validated_patch(request, store, res_type, res_id, ops, None)
    return write_response(request, result, interaction="patch")


def _delete_answer(request: Request, text: str) -> Response:
    ctx = request.state.rhip_ctx
    access.audit(ctx, "delete", "0", ctx.extra.get("entities", []))
    if prefer_return(request) == "minimal":
        return Response(status_code=204)
    return FhirResponse(info_outcome(text), status_code=200)


@router.delete("/fhir/{res_type}/{res_id}")
@store_work("write")
def delete(request: Request, res_type: str, res_id: str, store: Store = Depends(get_store)) -> Response:
    """delete: leaves a tombstone; reads then answer 410, history keeps every version."""
    check_format(request)
    check_type(res_type)
    check_id(res_id)
    ctx = begin(request, "delete", res_type, res_id)
    guard = access.write_guard(ctx)
    with write_lock(request):
        result = store.delete(res_type, res_id, guard=guard)
    response = _delete_answer(request, f"{res_type}/{res_id} deleted")
    version = getattr(result, "version_id", None)
    if version is not None:
        response.headers["ETag"] = f'W/"{version}"'
    return response


@router.delete("/fhir/{res_type}")
@store_work("write")
def conditional_delete(request: Request, res_type: str, store: Store = Depends(get_store)) -> Response:
    """Conditional delete ``DELETE Type?params``: one match is deleted, several answer 412."""
    check_format(request)
    check_type(res_type)
    pairs = _search_pairs(request, res_type)
    ctx = begin(request, "delete", res_type)
    guard = access.write_guard(ctx)
    with write_lock(request):
        count = store.conditional_delete(res_type, pairs, guard=guard)
    return _delete_answer(request, f"{count} {res_type} resource(s) deleted")
