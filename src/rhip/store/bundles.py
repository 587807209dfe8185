"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A **transaction** runs in one database transaction: entries are parsed, their targets resolved
(new ids for creates, ``ifNoneExist`` and conditional URLs searched), ``fullUrl`` placeholders
(``urn:uuid:``/``urn:oid:``) and conditional references (``Patient?identifier=sys|val``) in the
resources rewritten to ``Type/id``, then processed in the FHIR order DELETE, POST, PUT/PATCH, GET.
Any failing entry raises (its message names ``Bundle.entry[i]``) and nothing is written; a
reference to a placeholder that no entry defines is such a failure. A **batch** processes each
entry on its own (own transaction); a failing entry gets its HTTP status and an OperationOutcome in
its response, and the others go ahead. Responses keep the request order and carry status,
location, etag and lastModified.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from rhip.errors import InvalidRequest, MultipleMatches, ResourceNotFound, RhipError
from rhip.fhir.primitives import is_ascii_digits
from rhip.fhir.references import iter_references
from rhip.store.bundle_entries import ORDER, EntryRequest, parse_entry, parse_query
from rhip.store.engine import read_connection, write_transaction
from rhip.store.guard import WriteGuard
from rhip.store.meta import format_instant, new_id
from rhip.store.ops import Ops, WriteResult

if TYPE_CHECKING:
    from rhip.store.store import Store

log = logging.getLogger(__name__)

_CONDITIONAL_REF = re.compile(r"([A-Z][A-Za-z]+)\?(.+)")
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
#: Search parameters a store search does not take (paging is passed separately; format is the API's).
_NOT_SEARCH = frozenset({"_count", "_offset", "_format", "_pretty", "_elements"})


@dataclass
class _Target:
    """Where an entry writes: one id, several (conditional delete), or an existing match."""

    res_id: str | None = None
    delete_ids: list[str] = field(default_factory=list)
    existing: bool = False


def process_bundle(
    store: Store, bundle: dict[str, Any], *, base_url: str | None = None, guard: WriteGuard | None = None
) -> dict[str, Any]:
    """Process a batch or transaction Bundle and return the ``*-response`` Bundle.

    Args:
        store: the store to run on.
        bundle: the request Bundle (not modified).
        base_url: when given, response entries get an absolute ``fullUrl``.
        guard: asked about every version an entry writes (see :mod:`rhip.store.guard`); its
            refusal fails a transaction as a whole and a batch entry on its own.

    Raises:
        InvalidRequest: not a batch/transaction Bundle; for a transaction also any entry error
            (with the entry's own error class: VersionConflict, MultipleMatches, ...).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("the request body is not a Bundle")
    kind = bundle.get("type")
    entries = bundle.get("entry")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array", expression=("Bundle.entry",))
    if kind == "transaction":
        responses = _transaction(store, entries, base_url, guard)
    elif kind == "batch":
        responses = [_batch_entry(store, index, raw, base_url, guard) for index, raw in enumerate(entries)]
    else:
        raise InvalidRequest("Bundle.type must be batch or transaction", expression=("Bundle.type",))
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}


def _transaction(
    store: Store, raw: list[Any], base_url: str | None, guard: WriteGuard | None
) -> list[dict[str, Any]]:
    entries = [parse_entry(index, item) for index, item in enumerate(raw)]
    for entry in entries:
        if entry.resource is not None:
            entry.resource = orjson.loads(orjson.dumps(entry.resource))  # never touch the caller's bundle
    responses: list[dict[str, Any]] = [{} for _ in entries]
    with write_transaction(store.engine) as conn:
        ops = Ops(conn, guard)
        targets = {}
        for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
            with _at(entry):
                targets[entry.index] = _resolve(ops, entry)
        _check_distinct(entries, targets)
        mapping = _placeholders(entries, targets)
        for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
            with _at(entry):
                # rewritten just before the entry runs, so a conditional reference can find a
                # resource created by an earlier entry of this transaction
                _rewrite(ops, entry, mapping)
                responses[entry.index] = _execute(ops, entry, targets[entry.index], base_url)
    return responses


def _batch_entry(
    store: Store, index: int, raw: Any, base_url: str | None, guard: WriteGuard | None
) -> dict[str, Any]:
    try:
        entry = parse_entry(index, raw)
        if entry.resource is not None:
            entry.resource = orjson.loads(orjson.dumps(entry.resource))
        if entry.method in ("GET", "HEAD"):
            with read_connection(store.engine) as conn:
                return _execute(Ops(conn), entry, _Target(), base_url)
        with write_transaction(store.engine) as conn:
            ops = Ops(conn, guard)
            target = _resolve(ops, entry)
            _rewrite(ops, entry, _placeholders([entry], {index: target}))
            return _execute(ops, entry, target, base_url)
    except RhipError as exc:
        return {"response": {"status": _status(exc.status), "outcome": _outcome(exc)}}
    except Exception:
        log.exception("batch entry %d failed unexpectedly", index)
        error = RhipError("internal error while processing this entry", code="exception", status=500)
        return {"response": {"status": _status(500), "outcome": _outcome(error)}}


@contextmanager
def _at(entry: EntryRequest) -> Iterator[None]:
    """Prefix errors raised while handling ``entry`` with its position."""
    try:
        yield
    except RhipError as exc:
        if not exc.diagnostics.startswith("Bundle.entry["):
            exc.diagnostics = f"{entry.where}: {exc.diagnostics}"
            exc.args = (exc.diagnostics,)
        if not exc.expression:
            exc.expression = (entry.where,)
        raise


def _resolve(ops: Ops, entry: EntryRequest) -> _Target:
    """Decide which resource an entry writes (searching for conditional entries)."""
    method, res_type = entry.method, entry.res_type
    if method == "POST":
        if entry.if_none_exist is not None:
            found = ops.find_one(res_type, entry.if_none_exist, "ifNoneExist")
            if found is not None:
                return _Target(found, existing=True)
        return _Target(new_id())
    if method in ("GET", "HEAD"):
        return _Target()
    if entry.res_id is not None:
        return _Target(entry.res_id, delete_ids=[entry.res_id] if method == "DELETE" else [])
    params = entry.params or []
    if method == "DELETE":
        ops.lock_condition(res_type, params)
        ids = ops.matching_ids(res_type, params)
        if len(ids) > 1:
            raise MultipleMatches(f"conditional delete matched {len(ids)} {res_type} resources")
        return _Target(delete_ids=ids)
    found = ops.find_one(res_type, params, f"conditional {method}")
    if found is not None:
        return _Target(found)
    if method == "PATCH":
        raise ResourceNotFound(f"conditional PATCH matched no {res_type}")
    body_id = (entry.resource or {}).get("id")
    return _Target(str(body_id) if body_id is not None else new_id())


def _check_distinct(entries: list[EntryRequest], targets: dict[int, _Target]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.method in ("GET", "HEAD"):
            continue
        target = targets[entry.index]
        for res_id in target.delete_ids or ([target.res_id] if target.res_id else []):
            key = (entry.res_type, res_id)
            if key in seen:
                raise InvalidRequest(
                    f"{entry.where}: {entry.res_type}/{res_id} is also the target of "
                    f"Bundle.entry[{seen[key]}]",
                    expression=(entry.where,),
                )
            seen[key] = entry.index


def _placeholders(entries: list[EntryRequest], targets: dict[int, _Target]) -> dict[str, str]:
    """``fullUrl`` -> ``Type/id`` for every entry that creates or updates one resource."""
    mapping: dict[str, str] = {}
    for entry in entries:
        target = targets.get(entry.index)
        if entry.full_url and target is not None and target.res_id and entry.method in ("POST", "PUT"):
            mapping[entry.full_url] = f"{entry.res_type}/{target.res_id}"
    return mapping


def _rewrite(ops: Ops, entry: EntryRequest, mapping: dict[str, str]) -> None:
    """Rewrite placeholder and conditional references of the entry's resource in place."""
    if entry.resource is None or entry.method not in ("POST", "PUT"):
        return
    for path, ref in iter_references(entry.resource, path=f"{entry.where}.resource"):
        value = ref.get("reference")
        if not isinstance(value, str):
            continue
        if value in mapping:
            ref["reference"] = mapping[value]
        elif value.startswith(("urn:uuid:", "urn:oid:")):
            raise InvalidRequest(
                f"{path}: refers to a fullUrl that no entry of this bundle has", expression=(path,)
            )
        elif (match := _CONDITIONAL_REF.fullmatch(value)) is not None:
            ref["reference"] = _conditional_reference(ops, match[1], match[2], path)


def _conditional_reference(ops: Ops, res_type: str, query: str, path: str) -> str:
    ids = ops.matching_ids(res_type, parse_query(query))
    if not ids:
        raise InvalidRequest(f"{path}: the conditional reference matched no {res_type}", code="not-found")
    if len(ids) > 1:
        raise MultipleMatches(f"{path}: the conditional reference matched {len(ids)} {res_type} resources")
    return f"{res_type}/{ids[0]}"


def _execute(ops: Ops, entry: EntryRequest, target: _Target, base_url: str | None) -> dict[str, Any]:
    method, res_type = entry.method, entry.res_type
    if method in ("GET", "HEAD"):
        return _get(ops, entry, base_url)
    if method == "DELETE":
        version: int | None = None
        for res_id in target.delete_ids:
            version = ops.delete(res_type, res_id, if_match=entry.if_match).version_id
        response: dict[str, Any] = {"status": _status(204)}
        if version is not None and entry.res_id is not None:
            response["etag"] = f'W/"{version}"'
        return {"response": response}
    if target.res_id is None:  # _resolve gives every POST/PUT/PATCH a target
        raise RhipError(f"{entry.where}: no target was resolved", code="exception", status=500)
    if method == "POST":
        if target.existing:
            return _written(ops.current_result(res_type, target.res_id), 200, base_url)
        resource = {**(entry.resource or {}), "id": target.res_id}
        return _written(ops.create(resource, method="POST"), 201, base_url)
    if method == "PATCH":
        result = ops.patch(res_type, target.res_id, entry.patch_ops, if_match=entry.if_match)
        return _written(result, 200, base_url)
    resource = dict(entry.resource or {})
    if entry.res_id is None and resource.get("id") not in (None, target.res_id):
        raise InvalidRequest(f"{res_type}.id does not match the resource found by the conditional update")
    resource["id"] = target.res_id
    result = ops.update(res_type, target.res_id, resource, if_match=entry.if_match)
    return _written(result, 201 if result.created else 200, base_url)


def _written(result: WriteResult, status: int, base_url: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if base_url:
        entry["fullUrl"] = f"{base_url.rstrip('/')}/{result.res_type}/{result.res_id}"
    entry["resource"] = result.resource
    entry["response"] = {
        "status": _status(status),
        "location": result.location,
        "etag": result.etag,
        "lastModified": format_instant(result.last_updated),
    }
    return entry


def _get(ops: Ops, entry: EntryRequest, base_url: str | None) -> dict[str, Any]:
    res_type = entry.res_type
    if entry.res_id is not None:
        if entry.version_id is not None:
            body = ops.vread(res_type, entry.res_id, entry.version_id)
        else:
            body = ops.read(res_type, entry.res_id)
        meta = body.get("meta") or {}
        response = {"status": _status(200), "etag": f'W/"{meta.get("versionId")}"'}
        if meta.get("lastUpdated"):
            response["lastModified"] = meta["lastUpdated"]
        out: dict[str, Any] = {"response": response}
        if entry.method == "GET":
            out["resource"] = body
        return out
    return {"resource": _searchset(ops, entry, base_url), "response": {"status": _status(200)}}


def _searchset(ops: Ops, entry: EntryRequest, base_url: str | None) -> dict[str, Any]:
    from rhip.store.search import execute_search

    params = entry.params or []
    count = _int_param(params, "_count", 50)
    offset = _int_param(params, "_offset", 0)
    criteria = [(k, v) for k, v in params if k not in _NOT_SEARCH]
    result = execute_search(ops.conn, entry.res_type, criteria, count=count, offset=offset)
    base = base_url.rstrip("/") + "/" if base_url else ""
    items = [(body, "match") for body in result.matches] + [(body, "include") for body in result.includes]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["entry"] = [
        {"fullUrl": f"{base}{body['resourceType']}/{body['id']}", "resource": body, "search": {"mode": mode}}
        for body, mode in items
    ]
    return bundle


def _int_param(params: list[tuple[str, str]], name: str, default: int) -> int:
    for key, value in params:
        if key == name:
            if not is_ascii_digits(value):
                raise InvalidRequest(f"{name} must be a non-negative integer")
            return int(value)
    return default


def _status(code: int) -> str:
    return f"{code} {_REASONS.get(code, '')}".strip()


def _outcome(exc: RhipError) -> dict[str, Any]:
    issues = []
    for issue in exc.all_issues():
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        issues.append(item)
    return {"resourceType": "OperationOutcome", "issue": issues}
