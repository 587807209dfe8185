"""HTTP plumbing shared by every FHIR route: media types, bodies, headers and OperationOutcomes.

FHIR fixes the wire details that FastAPI would otherwise decide for us: the JSON media type
``application/fhir+json``, weak ETags carrying the version id, ``Prefer: return=...``, and errors
that are always an OperationOutcome. Keeping them in one module means every route answers the
same way and a client library sees one server, not a collection of endpoints.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request
from starlette.responses import JSONResponse

from rhip.errors import InvalidRequest, Issue, NotSupported, RhipError
from rhip.fhir.primitives import is_ascii_digits

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
_JSON_TYPES = {FHIR_JSON, "application/json", "json", "text/json"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "text/xml", "xml"}
_ANY = {"*/*", "application/*"}


class FhirResponse(JSONResponse):
    """A response whose body is a FHIR resource rendered with orjson.

    It is a ``JSONResponse`` so that the OpenAPI description documents each route's JSON body
    (an object) rather than an opaque string.
    """

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def render(self, content: Any) -> bytes:
        """Encode the resource (or pass bytes through, for an empty body)."""
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for these issues."""
    rows = []
    for issue in issues:
        row: dict[str, Any] = {"severity": issue.severity, "code": issue.code}
        if issue.diagnostics:
            row["diagnostics"] = issue.diagnostics
        if issue.expression:
            row["expression"] = list(issue.expression)
        rows.append(row)
    if not rows:
        rows.append({"severity": "information", "code": "informational", "diagnostics": "ok"})
    return {"resourceType": "OperationOutcome", "issue": rows}


def info_outcome(diagnostics: str) -> dict[str, Any]:
    """A one-issue informational OperationOutcome (for ``Prefer: return=OperationOutcome``)."""
    return outcome([Issue("information", "informational", diagnostics)])


def error_response(exc: RhipError) -> FhirResponse:
    """The OperationOutcome response for a platform error, with its HTTP status."""
    return FhirResponse(outcome(exc.all_issues()), status_code=exc.status)


def plain_error(status: int, code: str, diagnostics: str) -> FhirResponse:
    """An OperationOutcome response for a protocol-level error (unknown route, wrong method, ...)."""
    return FhirResponse(outcome([Issue("error", code, diagnostics)]), status_code=status)


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The raw (name, value) pairs of the query string, in order, blanks kept."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(raw, keep_blank_values=True)


def check_format(request: Request, pairs: Iterable[tuple[str, str]] | None = None) -> None:
    """Refuse (406) a ``_format`` or ``Accept`` that asks for anything but JSON.

    ``_format`` wins over ``Accept`` as FHIR says; ``*/*`` and absent headers mean JSON.
    """
    for name, value in pairs if pairs is not None else query_pairs(request):
        if name == "_format":
            if _media(value) in _JSON_TYPES:
                return
            if _media(value) in _XML_TYPES:
                raise NotSupported("_format: XML is not supported; use _format=json", status=406)
            raise NotSupported(f"_format: unsupported format '{value[:40]}'; use json", status=406)
    accept = request.headers.get("accept")
    if not accept:
        return
    kinds = {_media(part) for part in accept.split(",") if part.strip()}
    if kinds & (_JSON_TYPES | _ANY) or not kinds:
        return
    raise NotSupported("Accept: only application/fhir+json and application/json are served", status=406)


def parse_json_body(request: Request, body: bytes, *, patch: bool = False) -> Any:
    """Decode a JSON request body, refusing (415) non-JSON media types and (400) broken JSON."""
    ctype = _media(request.headers.get("content-type", ""))
    allowed = _JSON_TYPES | ({JSON_PATCH} if patch else set())
    if ctype and ctype not in allowed:
        if ctype in _XML_TYPES:
            raise NotSupported("Content-Type: XML is not supported; send application/fhir+json", status=415)
        raise NotSupported(f"Content-Type: unsupported media type '{ctype[:60]}'", status=415)
    if not body.strip():
        raise InvalidRequest("request body is empty", code="structure")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} at position {exc.pos}", code="structure"
        ) from None


def parse_resource_body(request: Request, body: bytes) -> dict[str, Any]:
    """Decode a resource body: a JSON object with a ``resourceType``."""
    data = parse_json_body(request, body)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object (a FHIR resource)", code="structure")
    if not isinstance(data.get("resourceType"), str):
        raise InvalidRequest("resource has no resourceType", code="required", expression=("resourceType",))
    return data


def form_pairs(request: Request, body: bytes) -> list[tuple[str, str]]:
    """Search parameters of a ``POST _search`` form body (415 for other media types)."""
    ctype = _media(request.headers.get("content-type", ""))
    if body.strip() and ctype != FORM:
        raise NotSupported("POST _search needs Content-Type application/x-www-form-urlencoded", status=415)
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def parse_etag(value: str | None, header: str = "If-Match") -> int | None:
    """The version id in a ``W/"3"``-style ETag header, or None when the header is absent."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not is_ascii_digits(text):
        raise InvalidRequest(f'{header}: expected a version ETag like W/"1"', expression=(header,))
    return int(text)


def prefer_return(request: Request) -> str:
    """The ``Prefer: return=`` choice: minimal, representation (default) or OperationOutcome."""
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            value = value.strip().strip('"')
            if value in ("minimal", "representation", "OperationOutcome"):
                return value
    return "representation"


def http_date(epoch: float) -> str:
    """An RFC 7231 HTTP date for an epoch-seconds instant.

    An HTTP date has whole seconds, so the text is built once per second (and cached).
    """
    return _http_date(datetime.fromtimestamp(epoch, UTC).replace(microsecond=0))


@functools.lru_cache(maxsize=4096)
def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def parse_http_date(value: str, header: str) -> float:
    """Epoch seconds of an HTTP date header (400 when unreadable)."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        raise InvalidRequest(f"{header}: not an HTTP date", expression=(header,)) from None


def version_headers(resource: Mapping[str, Any], last_updated: float | None = None) -> dict[str, str]:
    """ETag and Last-Modified headers for a stored resource (from its meta)."""
    headers: dict[str, str] = {}
    meta = resource.get("meta") or {}
    vid = meta.get("versionId")
    if vid is not None:
        headers["ETag"] = f'W/"{vid}"'
    if last_updated is None and meta.get("lastUpdated"):
        try:
            last_updated = datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            last_updated = None
    if last_updated is not None:
        headers["Last-Modified"] = http_date(last_updated)
    return headers


#: FHIR bases already built, by what they depend on (scheme, server, Host header, root path).
_BASES: dict[tuple[Any, ...], str] = {}
_MAX_BASES = 256


def base_url(request: Request) -> str:
    """The FHIR base of this server as the client reached it (``http://host:port/fhir``).

    Starlette builds and parses two URLs for ``request.base_url``; the answer depends only on the
    key below, so it is built once per key (a bounded number of keys: the Host header is the
    client's to choose).
    """
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    root = scope.get("app_root_path", scope.get("root_path", ""))
    key = (scope.get("scheme", "http"), None if server is None else tuple(server), host, root)
    base = _BASES.get(key)
    if base is None:
        base = str(request.base_url).rstrip("/") + "/fhir"
        if len(_BASES) < _MAX_BASES:
            _BASES[key] = base
    return base
