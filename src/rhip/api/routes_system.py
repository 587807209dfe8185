"""System-level interactions: capabilities, batch/transaction, system search and history, $validate.

Batch and transaction Bundles are executed by ``Store.process_bundle`` (which makes a transaction
atomic and rewrites ``urn:uuid:`` and conditional references); the API checks the envelope and
passes every entry through the policy hook first, so a transaction is refused as a whole when one
of its entries is not allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.capability import capability_statement
from rhip.api.deps import (
    begin,
    check_type,
    get_settings,
    get_store,
    raw_body,
    store_work,
    validate,
    write_lock,
)
from rhip.api.http import FhirResponse, check_format, form_pairs, outcome, parse_resource_body, query_pairs
from rhip.api.routes_search import run_history, run_search
from rhip.api.routing import FhirRoute
from rhip.config import Settings
from rhip.errors import InvalidRequest, Issue

if TYPE_CHECKING:
    from rhip.store import Store

router = APIRouter(route_class=FhirRoute)

_METHOD_INTERACTION = {
    "GET": "read",
    "HEAD": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@router.get("/fhir/metadata")
@store_work("thread")
def metadata(request: Request) -> Response:
    """The CapabilityStatement, generated from what this server actually supports."""
    check_format(request)
    ctx = begin(request, "capabilities", None)
    access.audit(ctx, "capabilities", "0", [])
    mode = dict(query_pairs(request)).get("mode", "full")
    if mode not in ("full", "normative", "terminology"):
        raise InvalidRequest("mode: expected full, normative or terminology", expression=("mode",))
    if mode == "terminology":
        raise InvalidRequest(
            "mode=terminology: this server publishes no TerminologyCapabilities", expression=("mode",)
        )
    return FhirResponse(capability_statement(request))


@router.get("/fhir/_history")
@store_work("thread")
def system_history(
    request: Request, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> Response:
    """history-system."""
    return run_history(request, store, settings, None, None)


@router.get("/fhir")
@store_work("thread")
def system_search(
    request: Request, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> Response:
    """search-system (across all types; ``_type`` narrows it)."""
    return run_search(request, store, settings, None, query_pairs(request))


@router.post("/fhir/_search")
@store_work("thread")
def system_search_post(
    request: Request,
    body: bytes = Depends(raw_body),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """search-system by POST form."""
    return run_search(request, store, settings, None, query_pairs(request) + form_pairs(request, body))


def _entry_interaction(entry: dict[str, Any], index: int) -> tuple[str, str | None, str | None]:
    req = entry.get("request")
    if (
        not isinstance(req, dict)
        or not isinstance(req.get("url"), str)
        or not isinstance(req.get("method"), str)
    ):
        raise InvalidRequest(
            f"Bundle.entry[{index}].request: method and url are required",
            code="required",
            expression=(f"Bundle.entry[{index}].request",),
        )
    method = req["method"].upper()
    if method not in _METHOD_INTERACTION:
        raise InvalidRequest(
            f"Bundle.entry[{index}].request.method: unsupported method",
            expression=(f"Bundle.entry[{index}].request.method",),
        )
    path = urlsplit(req["url"]).path.strip("/")
    parts = [p for p in path.split("/") if p]
    res_type = parts[0] if parts else None
    res_id = parts[1] if len(parts) > 1 and not parts[1].startswith(("_", "$")) else None
    interaction = _METHOD_INTERACTION[method]
    if method == "GET" and res_id is None:
        interaction = "search-type" if res_type else "search-system"
    return interaction, res_type, res_id


@router.post("/fhir")
@store_work("write")
def bundle(request: Request, body: bytes = Depends(raw_body), store: Store = Depends(get_store)) -> Response:
    """batch or transaction: every entry passes the policy hook, then the store runs the Bundle."""
    check_format(request)
    data = parse_resource_body(request, body)
    if data["resourceType"] != "Bundle":
        raise InvalidRequest(
            "POST to the base takes a batch or transaction Bundle", expression=("resourceType",)
        )
    kind = data.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest("Bundle.type: must be batch or transaction", expression=("Bundle.type",))
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array", code="structure", expression=("Bundle.entry",))
    ctx = begin(request, str(kind), None)
    touched = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidRequest(
                f"Bundle.entry[{index}] must be an object",
                code="structure",
                expression=(f"Bundle.entry[{index}]",),
            )
        interaction, res_type, res_id = _entry_interaction(entry, index)
        if res_type:
            check_type(res_type)
        access.authorize(ctx, interaction, res_type, res_id, entry.get("resource"))
        if res_type:
            touched.append((res_type, res_id or ""))
    ctx.extra["entities"] = touched
    guard = access.write_guard(ctx)
    with write_lock(request):
        response = store.process_bundle(data, guard=guard)
    for refused in ctx.extra.pop("write_refusals", []):  # batch entries refused on their own
        access.audit(ctx, refused.interaction, "4", [(refused.res_type, refused.res_id or "")])
    access.audit(ctx, str(kind), "0", touched)
    return FhirResponse(response)


def _resource_to_validate(request: Request, body: bytes) -> dict[str, Any]:
    data = parse_resource_body(request, body)
    if data["resourceType"] != "Parameters":
        return data
    for param in data.get("parameter") or []:
        if (
            isinstance(param, dict)
            and param.get("name") == "resource"
            and isinstance(param.get("resource"), dict)
        ):
            resource: dict[str, Any] = param["resource"]
            return resource
    raise InvalidRequest(
        "Parameters: no 'resource' parameter to validate",
        code="required",
        expression=("Parameters.parameter",),
    )


def validate_operation(
    request: Request, res_type: str, body: bytes, *, res_id: str | None = None
) -> Response:
    """``$validate``: an OperationOutcome listing every issue (200 whether or not it is valid)."""
    check_format(request)
    resource = _resource_to_validate(request, body)
    if resource.get("resourceType") != res_type:
        raise InvalidRequest(f"resourceType does not match {res_type}", expression=("resourceType",))
    ctx = begin(request, "operation", res_type, res_id)
    issues = validate(resource)
    access.audit(ctx, "operation", "0", [])
    if not issues:
        issues = [Issue("information", "informational", "validation passed: no issues found")]
    return FhirResponse(outcome(issues))
