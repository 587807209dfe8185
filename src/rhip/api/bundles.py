"""Searchset and history Bundles: entries, ``fullUrl``, totals and stable paging links.

Paging is by offset, carried in the links as ``_offset`` beside ``_count``; every other parameter
is repeated verbatim, so following ``next`` replays the same query one page on, and a link stays
valid for as long as the data it pages over does not change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

PAGING_PARAMS = ("_count", "_offset")


def instant(epoch: float) -> str:
    """A FHIR instant (UTC with offset, millisecond precision) for epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def page_url(base: str, path: str, params: Sequence[tuple[str, str]], *, count: int, offset: int) -> str:
    """The URL of one page: the query parameters as given plus ``_count`` and ``_offset``."""
    kept = [(k, v) for k, v in params if k not in PAGING_PARAMS]
    kept += [("_count", str(count)), ("_offset", str(offset))]
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(kept)}"


def paging_links(
    base: str,
    path: str,
    params: Sequence[tuple[str, str]],
    *,
    count: int,
    offset: int,
    has_next: bool,
    total: int | None,
) -> list[dict[str, str]]:
    """``self``, ``first``, ``previous``, ``next`` and (when the total is known) ``last`` links."""
    links = [
        {"relation": "self", "url": page_url(base, path, params, count=count, offset=offset)},
        {"relation": "first", "url": page_url(base, path, params, count=count, offset=0)},
    ]
    if offset > 0 and count > 0:
        prev = max(0, offset - count)
        links.append({"relation": "previous", "url": page_url(base, path, params, count=count, offset=prev)})
    if has_next and count > 0:
        links.append(
            {"relation": "next", "url": page_url(base, path, params, count=count, offset=offset + count)}
        )
    if total is not None and count > 0:
        last = max(0, ((total - 1) // count) * count) if total else 0
        links.append({"relation": "last", "url": page_url(base, path, params, count=count, offset=last)})
    return links


def full_url(base: str, resource: dict[str, Any]) -> str:
    """The absolute URL of a stored resource."""
    return f"{base}/{resource.get('resourceType')}/{resource.get('id')}"


def searchset(
    base: str,
    matches: Iterable[dict[str, Any]],
    includes: Iterable[dict[str, Any]],
    *,
    total: int | None,
    links: list[dict[str, str]],
) -> dict[str, Any]:
    """A searchset Bundle with ``search.mode`` match/include on each entry."""
    entries = [{"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}} for r in matches]
    entries += [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "include"}} for r in includes
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "meta": {"lastUpdated": instant(datetime.now(UTC).timestamp())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_entry(base: str, row: Sequence[Any]) -> dict[str, Any]:
    """One history entry from a store row (body or None, method, version, lastUpdated, type, id)."""
    body, method, version_id, last_updated, res_type, res_id = row[:6]
    method = str(method).upper()
    req_method = "PUT" if method == "PATCH" else method
    status = "201 Created" if req_method == "PUT" and int(version_id) == 1 else _STATUS.get(method, "200 OK")
    entry: dict[str, Any] = {"fullUrl": f"{base}/{res_type}/{res_id}"}
    if body is not None:
        entry["resource"] = body
    entry["request"] = {
        "method": req_method,
        "url": res_type if req_method == "POST" else f"{res_type}/{res_id}",
    }
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version_id}"',
        "lastModified": instant(float(last_updated)),
    }
    return entry


def history_bundle(
    base: str, entries: list[dict[str, Any]], *, total: int | None, links: list[dict[str, str]]
) -> dict[str, Any]:
    """A history Bundle."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "meta": {"lastUpdated": instant(datetime.now(UTC).timestamp())},
        "type": "history",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle
