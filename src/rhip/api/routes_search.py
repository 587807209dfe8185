"""Search (GET and POST ``_search``), history at every level, and the instance-level dispatcher.

The API owns only what FHIR puts on the HTTP side of search: ``_count``/``_offset`` paging,
``_summary``/``_elements`` shaping and the searchset Bundle with its links. Every other parameter
is handed unchanged to :func:`rhip.store.search.execute_search` (through ``Store.search``), which
answers 400 for what it does not know, naming the parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.bundles import history_bundle, history_entry, paging_links, searchset
from rhip.api.deps import begin, check_id, check_type, get_settings, get_store, raw_body, store_work
from rhip.api.everything import everything, parse_mdm
from rhip.api.http import FhirResponse, base_url, check_format, form_pairs, query_pairs
from rhip.api.routes_rest import read
from rhip.api.routing import FhirRoute
from rhip.api.shaping import check_summary, parse_elements, shape
from rhip.config import Settings
from rhip.errors import InvalidRequest, NotSupported
from rhip.fhir.primitives import is_ascii_digits

if TYPE_CHECKING:
    from rhip.store import Store

router = APIRouter(route_class=FhirRoute)


def _int_param(name: str, value: str, *, maximum: int | None = None) -> int:
    digits = value.strip()
    if not is_ascii_digits(digits):
        raise InvalidRequest(
            f"{name}: expected a non-negative integer, got '{value[:20]}'", expression=(name,)
        )
    number = int(digits)
    return min(number, maximum) if maximum is not None else number


#: The largest OFFSET both databases take (a 64-bit integer); any page beyond the results is empty.
_MAX_OFFSET = 2**63 - 1


class Paging:
    """The HTTP-side search controls taken out of a parameter list."""

    def __init__(self, pairs: list[tuple[str, str]], settings: Settings) -> None:
        self.count = settings.page_size
        self.offset = 0
        self.summary: str | None = None
        self.elements: list[str] | None = None
        self.rest: list[tuple[str, str]] = []
        for name, value in pairs:
            if name == "_count":
                self.count = _int_param(name, value, maximum=settings.max_page_size)
            elif name == "_offset":
                self.offset = _int_param(name, value, maximum=_MAX_OFFSET)
            elif name in ("_format", "_pretty"):
                continue
            elif name == "_elements":
                self.elements = parse_elements(value)
            elif name == "_summary":
                self.summary = check_summary(value)
                if self.summary == "count":
                    self.rest.append((name, value))
            else:
                self.rest.append((name, value))


def run_search(
    request: Request, store: Store, settings: Settings, res_type: str | None, pairs: list[tuple[str, str]]
) -> Response:
    """Run a search and answer with a searchset Bundle (shared by GET, POST and system search)."""
    check_format(request, pairs)
    paging = Paging(pairs, settings)
    ctx = begin(request, "search-type" if res_type else "search-system", res_type)
    count = 0 if paging.summary == "count" else paging.count
    result = access.search(ctx, store, res_type, paging.rest, count=count, offset=paging.offset)
    matches = access.filter_results(ctx, result.matches) if count else []
    includes = access.filter_results(ctx, result.includes) if count else []
    if paging.summary or paging.elements:
        matches = [shape(r, paging.summary, paging.elements) for r in matches]
        includes = [shape(r, paging.summary, paging.elements) for r in includes]
    base = base_url(request)
    links = paging_links(
        base,
        res_type or "",
        pairs,
        count=paging.count,
        offset=paging.offset,
        has_next=bool(result.has_next) and count > 0,
        total=result.total,
    )
    ctx.extra["entities"] = [(r.get("resourceType"), r.get("id")) for r in matches + includes]
    access.audit(ctx, ctx.extra["interaction"], "0", ctx.extra["entities"])
    return FhirResponse(searchset(base, matches, includes, total=result.total, links=links))


def _since(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            "_since: expected a FHIR instant like 2024-01-31T08:00:00+08:00", expression=("_since",)
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _version_key(body: dict[str, Any]) -> tuple[Any, Any, Any]:
    return body.get("resourceType"), body.get("id"), (body.get("meta") or {}).get("versionId")


def _visible_history(ctx: access.RequestContext, base: str, rows: list[Any]) -> list[dict[str, Any]]:
    """History entries the policy lets this caller see (deletes carry no body and always show)."""
    allowed = access.filter_results(ctx, [r[0] for r in rows if r[0] is not None])
    shown = {_version_key(body): body for body in allowed}
    entries = []
    for row in rows:
        if row[0] is None:
            entries.append(history_entry(base, row))
        elif _version_key(row[0]) in shown:
            entries.append(history_entry(base, (shown[_version_key(row[0])], *row[1:])))
    return entries


def run_history(
    request: Request, store: Store, settings: Settings, res_type: str | None, res_id: str | None
) -> Response:
    """History of one resource, one type or the whole system, newest first, as a history Bundle."""
    pairs = query_pairs(request)
    check_format(request, pairs)
    count, offset, since = settings.page_size, 0, None
    for name, value in pairs:
        if name == "_count":
            count = _int_param(name, value, maximum=settings.max_page_size)
        elif name == "_offset":
            offset = _int_param(name, value)
        elif name == "_since":
            since = _since(value)
        elif name in ("_at", "_list"):
            raise NotSupported(f"{name}: not supported on history; use _since")
        elif name not in ("_format", "_pretty"):
            raise InvalidRequest(f"{name}: unknown history parameter", expression=(name,))
    level = "history-instance" if res_id else "history-type" if res_type else "history-system"
    ctx = begin(request, level, res_type, res_id)
    page = store.history(res_type, res_id, since=since, count=count, offset=offset)
    base = base_url(request)
    rows = list(page.entries)
    entries = _visible_history(ctx, base, rows)
    path = "/".join(p for p in (res_type, res_id, "_history") if p)
    total = getattr(page, "total", None)
    has_next = bool(getattr(page, "has_next", len(rows) >= count > 0))
    links = paging_links(base, path, pairs, count=count, offset=offset, has_next=has_next, total=total)
    access.audit(ctx, level, "0", [(r[4], r[5]) for r in rows])
    return FhirResponse(history_bundle(base, entries, total=total, links=links))


@router.get("/fhir/{res_type}/_history")
@store_work("thread")
def type_history(
    request: Request,
    res_type: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """history-type."""
    check_type(res_type)
    return run_history(request, store, settings, res_type, None)


@router.get("/fhir/{res_type}/{res_id}/_history")
@store_work("thread")
def instance_history(
    request: Request,
    res_type: str,
    res_id: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """history-instance."""
    check_type(res_type)
    check_id(res_id)
    return run_history(request, store, settings, res_type, res_id)


@router.get("/fhir/{res_type}")
@store_work("thread")
def search_type(
    request: Request,
    res_type: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """search-type by GET."""
    check_type(res_type)
    return run_search(request, store, settings, res_type, query_pairs(request))


def everything_response(
    request: Request, store: Store, settings: Settings, patient_id: str, pairs: list[tuple[str, str]]
) -> Response:
    """``Patient/[id]/$everything`` as a searchset Bundle (``_count``/``_offset`` page the result).

    On a golden Patient (or with ``_mdm=true``) the whole MPI resident; see :mod:`rhip.api.everything`.
    """
    check_format(request, pairs)
    check_id(patient_id)
    since = None
    types: set[str] | None = None
    resident: bool | None = None
    count, offset = settings.max_page_size, 0
    for name, value in pairs:
        if name == "_since":
            _since(value)
            since = value
        elif name == "_type":
            types = {t.strip() for t in value.split(",") if t.strip()}
            for t in types:
                check_type(t)
        elif name == "_count":
            count = _int_param(name, value, maximum=settings.max_page_size)
        elif name == "_offset":
            offset = _int_param(name, value)
        elif name == "_mdm":
            resident = parse_mdm(value)
        elif name not in ("_format", "_pretty", "start", "end"):
            raise InvalidRequest(f"{name}: unknown $everything parameter", expression=(name,))
    ctx = begin(request, "operation", "Patient", patient_id)
    found = everything(
        store,
        patient_id,
        since=since,
        types=types,
        resident=resident,
        visible=lambda resources: access.filter_results(ctx, resources),
    )
    page = found[offset : offset + count]
    base = base_url(request)
    links = paging_links(
        base,
        f"Patient/{patient_id}/$everything",
        pairs,
        count=count,
        offset=offset,
        has_next=offset + count < len(found),
        total=len(found),
    )
    ctx.extra["entities"] = [(r.get("resourceType"), r.get("id")) for r in page]
    access.audit(ctx, "operation", "0", ctx.extra["entities"])
    return FhirResponse(searchset(base, page, [], total=len(found), links=links))


def params_from_body(request: Request, body: bytes) -> list[tuple[str, str]]:
    """Operation parameters from a Parameters body (primitive values and references)."""
    from rhip.api.http import parse_json_body

    if not body.strip():
        return []
    data = parse_json_body(request, body)
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise InvalidRequest("operation body must be a Parameters resource", code="structure")
    out = []
    for param in data.get("parameter") or []:
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            value = value["reference"]  # valueReference: the reference, as a search value takes it
        if value is not None and isinstance(param.get("name"), str):
            out.append((param["name"], str(value)))
    return out


@router.get("/fhir/{res_type}/{res_id}")
@store_work("inline")
def instance_get(request: Request, res_type: str, res_id: str) -> Response:
    """read, or a type-level operation invoked by GET (``Patient/$everything`` is not offered).

    The busiest route takes its store from the app rather than through FastAPI dependencies.
    """
    check_type(res_type)
    if res_id.startswith("$"):
        raise NotSupported(f"operation {res_id[:40]} is not supported at type level on {res_type}")
    store: Store = request.app.state.store
    return read(request, res_type, res_id, store)


@router.get("/fhir/{res_type}/{res_id}/{operation}")
@store_work("thread")
def instance_operation_get(
    request: Request,
    res_type: str,
    res_id: str,
    operation: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Instance operations by GET: ``Patient/[id]/$everything``."""
    check_type(res_type)
    if res_type == "Patient" and operation == "$everything":
        return everything_response(request, store, settings, res_id, query_pairs(request))
    raise NotSupported(f"operation {operation[:40]} is not supported on {res_type} instances")


@router.post("/fhir/{res_type}/{res_id}/{operation}")
@store_work("thread")
def instance_operation_post(
    request: Request,
    res_type: str,
    res_id: str,
    operation: str,
    body: bytes = Depends(raw_body),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Instance operations by POST: ``$everything`` (Parameters body) and ``$validate``."""
    check_type(res_type)
    if operation == "$validate":
        from rhip.api.routes_system import validate_operation

        return validate_operation(request, res_type, body, res_id=res_id)
    if res_type == "Patient" and operation == "$everything":
        pairs = query_pairs(request) + params_from_body(request, body)
        return everything_response(request, store, settings, res_id, pairs)
    raise NotSupported(f"operation {operation[:40]} is not supported on {res_type} instances")


@router.post("/fhir/{res_type}/{name}")
@store_work("thread")
def type_post(
    request: Request,
    res_type: str,
    name: str,
    body: bytes = Depends(raw_body),
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """``Type/_search`` (form body) and type-level operations (``$validate``)."""
    check_type(res_type)
    if name == "_search":
        return run_search(
            request, store, settings, res_type, query_pairs(request) + form_pairs(request, body)
        )
    if name == "$validate":
        from rhip.api.routes_system import validate_operation

        return validate_operation(request, res_type, body)
    if name.startswith("$"):
        raise NotSupported(f"operation {name[:40]} is not supported on {res_type}")
    raise NotSupported(f"POST is not allowed on {res_type}/[id]; use PUT to update", status=405)
