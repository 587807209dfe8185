"""Reading the entries of a batch or transaction Bundle into plain requests.

Each ``Bundle.entry`` becomes an :class:`EntryRequest`: the HTTP method, the target type, id,
version or search criteria parsed from ``request.url`` (relative or absolute), ``ifNoneExist`` and
``ifMatch``, the resource, and for PATCH the JSON Patch operations carried in a Binary. Problems
raise InvalidRequest naming ``Bundle.entry[i]`` so the caller can report or roll back.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from rhip.errors import InvalidRequest, NotSupported
from rhip.store.meta import ID_RE, TYPE_RE, parse_etag

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Processing order inside a transaction (FHIR R4 http.html#trules).
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_TARGET = rf"(?P<type>{TYPE_RE.pattern})(?:/(?P<id>{ID_RE.pattern})(?:/_history/(?P<vid>[0-9]+))?)?/?"
_RELATIVE_RE = re.compile(_TARGET)
_ABSOLUTE_RE = re.compile(rf"(?:.*?/)?{_TARGET}")
_JSON_PATCH_TYPES = ("application/json-patch+json", "application/json")

Params = list[tuple[str, str]]


@dataclass
class EntryRequest:
    """One parsed bundle entry."""

    index: int
    method: str
    res_type: str
    res_id: str | None = None
    version_id: int | None = None
    params: Params | None = None  # search criteria of a conditional or search URL
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: Params | None = None
    if_match: int | None = None
    patch_ops: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The entry's element path, for messages."""
        return f"Bundle.entry[{self.index}]"


def parse_entry(index: int, entry: object) -> EntryRequest:
    """Parse ``Bundle.entry[index]``; raise InvalidRequest/NotSupported naming the entry."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where} is not an object", expression=(where,))
    request = entry.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest(f"{where}.request is missing", code="required", expression=(f"{where}.request",))
    method = str(request.get("method") or "").upper()
    if method not in METHODS:
        raise InvalidRequest(f"{where}.request.method must be one of {', '.join(METHODS)}")
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"{where}.request.url is missing", code="required")
    res_type, res_id, version_id, params = parse_url(url.strip(), f"{where}.request.url")
    parsed = EntryRequest(index, method, res_type, res_id, version_id, params)
    resource = entry.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise InvalidRequest(f"{where}.resource is not a resource")
    parsed.resource = resource
    full_url = entry.get("fullUrl")
    parsed.full_url = full_url if isinstance(full_url, str) and full_url else None
    if request.get("ifNoneExist"):
        parsed.if_none_exist = parse_query(str(request["ifNoneExist"]).lstrip("?"))
    if request.get("ifMatch"):
        parsed.if_match = parse_etag(str(request["ifMatch"]))
    _check_shape(parsed)
    return parsed


def parse_url(url: str, where: str) -> tuple[str, str | None, int | None, Params | None]:
    """``Type``, ``Type/id``, ``Type/id/_history/v`` or ``Type?query`` (relative or absolute)."""
    parts = urlsplit(url)
    path = parts.path if parts.scheme else url.split("?", 1)[0]
    query = parts.query if parts.scheme else (url.split("?", 1)[1] if "?" in url else None)
    if "$" in path:
        raise NotSupported(f"{where}: operations are not supported inside bundles")
    match = (_ABSOLUTE_RE if parts.scheme else _RELATIVE_RE).fullmatch(path)
    if match is None:
        raise InvalidRequest(f"{where}: expected Type, Type/id, Type/id/_history/n or Type?criteria")
    version = int(match["vid"]) if match["vid"] else None
    params = parse_query(query) if query else None
    return match["type"], match["id"], version, params


def parse_query(query: str) -> Params:
    """URL query text to (name, value) pairs, blanks kept."""
    return parse_qsl(query, keep_blank_values=True)


def _check_shape(entry: EntryRequest) -> None:
    where = entry.where
    if entry.method in ("POST", "PUT"):
        if entry.resource is None:
            raise InvalidRequest(f"{where}.resource is required for {entry.method}", code="required")
        if entry.resource.get("resourceType") != entry.res_type:
            raise InvalidRequest(f"{where}.resource.resourceType does not match request.url")
    if entry.method == "POST" and (entry.res_id is not None or entry.params):
        raise InvalidRequest(f"{where}.request.url of a POST must be the resource type only")
    if entry.method in ("PUT", "PATCH", "DELETE"):
        if entry.version_id is not None:
            raise InvalidRequest(f"{where}.request.url may not name a version for {entry.method}")
        if entry.res_id is None and not entry.params:
            raise InvalidRequest(f"{where}.request.url of a {entry.method} needs an id or search criteria")
    if entry.method == "PATCH":
        entry.patch_ops = patch_operations(entry)


def patch_operations(entry: EntryRequest) -> list[Any]:
    """The JSON Patch carried by a PATCH entry (a Binary with base64 ``data``)."""
    where = entry.where
    resource = entry.resource
    if resource is None:
        raise InvalidRequest(f"{where}.resource is required for PATCH (a Binary JSON Patch)", code="required")
    if resource.get("resourceType") == "Parameters":
        raise NotSupported(f"{where}: FHIRPath Patch is not supported; send a JSON Patch Binary")
    if resource.get("resourceType") != "Binary":
        raise InvalidRequest(f"{where}.resource of a PATCH must be a Binary holding a JSON Patch")
    if resource.get("contentType") not in _JSON_PATCH_TYPES:
        raise InvalidRequest(f"{where}.resource.contentType must be application/json-patch+json")
    try:
        ops = orjson.loads(base64.b64decode(str(resource.get("data") or ""), validate=True))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidRequest(f"{where}.resource.data is not base64 JSON") from exc
    if not isinstance(ops, list):
        raise InvalidRequest(f"{where}.resource.data must hold a JSON Patch array")
    return ops
