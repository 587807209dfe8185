"""Resource identity and version stamps: FHIR ids, ETags and ``meta.lastUpdated`` instants.

Every write goes through :func:`stamp`, so ``id``, ``meta.versionId`` and ``meta.lastUpdated`` are
rendered the same way by the single-resource path, bundles and the bulk path. Time is kept as epoch
seconds rounded to the millisecond, the precision of the rendered instant, so the stored float and
the rendered text always agree.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from rhip.errors import InvalidRequest

#: FHIR R4 ``id`` datatype.
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: Resource type names: an upper-case letter followed by letters.
TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ETAG_RE = re.compile(r'\s*(?:W/)?"?([0-9]+)"?\s*')


#: The 74 random bits of a server-assigned id (RFC 9562 version 7: 12 + 62 around the version
#: and variant bits).
_RANDOM_HIGH = 0xFFF
_RANDOM_LOW = (1 << 62) - 1
_MS_MASK = (1 << 48) - 1
_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62


def new_id() -> str:
    """A fresh server-assigned id: a UUID of version 7 (RFC 9562; 36 characters, a valid FHIR id).

    Its first 48 bits are the Unix time in milliseconds, the other 74 (around the version and
    variant bits) random. A version 4 UUID, random throughout, put every new resource at a random
    place in every B-tree keyed on the id (both primary keys, each index table's ``(type, id,
    param)`` and every value index among rows of the same value, which order by id): each create
    dirtied a leaf page of its own per B-tree, so a commit wrote more pages, and read more that the
    page cache no longer held, the larger the store grew (the API's creates fell from ≈ 1,200 to
    ≈ 800 per second over the first 40,000; docs/benchmarks.md). Ids made one after another sort
    one after another, so new rows go to the right-hand end of those B-trees, where the same few
    pages stay cached and are written once per commit. The millisecond an id carries is that of
    its resource's creation, which the first version's ``meta.lastUpdated`` shows anyway.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & _MS_MASK) << 80 | _VERSION_7 | (rand >> 62 & _RANDOM_HIGH) << 64 | _VARIANT | rand & _RANDOM_LOW
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def check_id(res_id: object, where: str = "id") -> str:
    """Return ``res_id`` if it is a valid FHIR id, else raise InvalidRequest naming ``where``."""
    if not isinstance(res_id, str) or not ID_RE.fullmatch(res_id):
        raise InvalidRequest(f"{where}: not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", expression=(where,))
    return res_id


def check_type(res_type: object, where: str = "resourceType") -> str:
    """Return ``res_type`` if it looks like a FHIR resource type name, else raise InvalidRequest."""
    if not isinstance(res_type, str) or not TYPE_RE.fullmatch(res_type):
        raise InvalidRequest(f"{where}: not a valid resource type name", expression=(where,))
    return res_type


def now() -> float:
    """The current time as epoch seconds rounded to the millisecond."""
    return round(time.time() * 1000) / 1000


def next_timestamp(previous: float | None, current: float | None = None) -> float:
    """A write time that is later than ``previous`` by at least one millisecond (clock steps back)."""
    ts = now() if current is None else current
    if previous is not None and ts <= previous:
        ts = round(previous * 1000 + 1) / 1000
    return ts


@lru_cache(maxsize=1024)
def format_instant(ts: float) -> str:
    """Render epoch seconds as a FHIR instant in UTC, e.g. ``2026-11-22T08:30:00.123+00:00``."""
    ms = round(ts * 1000)
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}+00:00"


def parse_instant(text: str) -> float:
    """Parse a FHIR instant or dateTime (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or with time) to epoch seconds.

    A value without an offset is taken as UTC. Raises InvalidRequest for anything else.
    """
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            dt = datetime(int(value), 1, 1, tzinfo=UTC)
        elif re.fullmatch(r"\d{4}-\d{2}", value):
            dt = datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(value)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidRequest("not a valid FHIR instant or dateTime") from exc
    return dt.timestamp()


def etag(version_id: int) -> str:
    """The weak ETag of a version: ``W/"3"``."""
    return f'W/"{version_id}"'


def parse_etag(value: str) -> int:
    """The version number in an ETag or If-Match header (``W/"3"``, ``"3"`` or ``3``)."""
    match = _ETAG_RE.fullmatch(value or "")
    if not match:
        raise InvalidRequest('If-Match: expected a version ETag like W/"3"', expression=("If-Match",))
    return int(match.group(1))


def stamp(resource: dict[str, Any], res_id: str, version_id: int, ts: float) -> dict[str, Any]:
    """A copy of ``resource`` with ``id``, ``meta.versionId`` and ``meta.lastUpdated`` set.

    ``resourceType``, ``id`` and ``meta`` come first; other keys keep their order. Other ``meta``
    elements (profile, tag, security, source) are kept. The input is not modified.
    """
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(ts)
    body: dict[str, Any] = {"resourceType": resource["resourceType"], "id": res_id, "meta": meta}
    for key, value in resource.items():
        if key not in body:
            body[key] = value
    return body


def content_of(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without its version stamps, for comparing two versions' content."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    meta = resource.get("meta")
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if rest:
            body["meta"] = rest
    return body
