"""FHIR connectors: NDJSON files (bulk, streamed line by line) and batch/transaction bundles.

NDJSON is the fast path: every line is one record, nothing but the current line is held in memory,
and resources keep their own ids so a re-delivered file is recognised by the store as unchanged.
Bundles are flattened when they can be: ``urn:uuid`` full URLs become the resource ids and every
reference to them is rewritten, so the whole bundle goes through the bulk path with stable ids. A
bundle that needs server logic (conditional references, ifNoneExist, DELETE) is handed to the
store's transaction processing instead.

A resource that carries ``meta.lastUpdated`` (as a FHIR bulk data export does) is ordered by it:
that instant is the source's own change time, so an update older than the one already applied
for the resource is refused as stale (see :meth:`rhip.ingest.pipeline.Pipeline.process_chunk`).
The store still stamps its own ``meta.lastUpdated``; the source's is kept in ``ingest_source_time``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from rhip.ingest.lines import KEPT, MAX_LINE, OVERLONG, read_lines
from rhip.ingest.model import Mapped, MappingError, Record, issue
from rhip.ingest.pipeline import MapContext, register_mapper

NDJSON = "fhir-ndjson"
BUNDLE = "fhir-bundle"
_UUID_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: A FHIR instant: seconds required, fraction optional, offset (Z or ±hh:mm) required; ASCII
#: digits only (``\d`` would take any script's digits, which ``int`` then reads).
_INSTANT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def iter_ndjson(path: Path) -> Iterator[Record]:
    """One record per non-blank line of an NDJSON file, streamed (bounded memory, even per line)."""
    name = path.name
    with path.open("rb") as fh:
        for lineno, line, size in read_lines(fh):
            stripped = line.strip()
            if not stripped:
                continue
            rec = Record(stripped, f"{name}:{lineno}")
            if size > len(line):
                rec.context[OVERLONG] = size
            yield rec


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson messages carry positions only, never the text
        raise MappingError(f"{what} is not valid JSON", [issue("json-syntax", "", str(exc)[:160])]) from None


def source_time(resource: dict[str, Any], path: str) -> float | None:
    """Epoch seconds of the resource's ``meta.lastUpdated``, or None when it has none.

    ``path`` names the resource in the reason of a bad value (``Patient``,
    ``Bundle.entry[2].resource``). Raises MappingError, with the rule and message the platform
    validator gives the same value, when it is present but not a FHIR instant: such a record
    cannot be ordered, so it is quarantined rather than stored unordered.
    """
    meta = resource.get("meta")
    if type(meta) is not dict or "lastUpdated" not in meta:
        return None  # no source time; a meta that is not an object is the validator's to reject
    value = meta["lastUpdated"]
    where = f"{path}.meta.lastUpdated"
    if not isinstance(value, str):
        raise MappingError(
            "meta.lastUpdated is not an instant",
            [issue("structure", where, "instant value has the wrong JSON type")],
        )
    match = _INSTANT.fullmatch(value)
    if match is None:
        raise MappingError(
            "meta.lastUpdated is not an instant",
            [issue("value", where, "value does not match the FHIR instant format")],
        )
    try:
        return datetime.fromisoformat(value).timestamp()  # C parser: ≈ 1 µs; the shape is checked
    except ValueError:
        pass
    try:
        return _epoch_of(match)  # second 60, or not a calendar date (raises)
    except (ValueError, OverflowError):
        raise MappingError(
            "meta.lastUpdated is not an instant",
            [issue("value", where, "instant value is not a real calendar date")],
        ) from None


def _epoch_of(match: re.Match[str]) -> float:
    """Epoch seconds of an :data:`_INSTANT` match (second 60, a leap second, rolls over as FHIR allows)."""
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    zone = UTC
    if offset != "Z":
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        zone = timezone(-delta if offset[0] == "-" else delta)
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), tzinfo=zone)
    return moment.timestamp() + int(second) + (float(fraction) if fraction else 0.0)


def map_ndjson(record: Record, ctx: MapContext) -> Mapped:
    """One NDJSON line -> the resource it holds (validated and canonicalised by the pipeline)."""
    raw = record.raw[3:] if record.raw.startswith(b"\xef\xbb\xbf") else record.raw
    resource = _parse_json(raw, f"line {record.position}")
    if not isinstance(resource, dict):
        raise MappingError("line is not a JSON object", [issue("structure", "", "expected a JSON object")])
    expected = record.context.get("resourceType")
    if expected and resource.get("resourceType") != expected:
        raise MappingError(
            "resource type differs from the file's type",
            [issue("resource-type", "resourceType", f"file holds {expected} resources")],
        )
    when = source_time(resource, str(resource.get("resourceType") or "Resource"))
    if when is None:
        return Mapped([resource])
    return Mapped([resource], event_time=when, ordered=True)


def _references(node: Any, urls: dict[str, str], bad: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            if ref in urls:
                node["reference"] = urls[ref]
            elif "?" in ref:
                bad.append(ref)
        for value in node.values():
            if isinstance(value, (dict, list)):
                _references(value, urls, bad)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _references(value, urls, bad)


def flatten_bundle(bundle: dict[str, Any], bundle_key: str) -> list[dict[str, Any]] | None:
    """The bundle's resources with stable ids and rewritten references, or None when it needs the store."""
    from rhip.ingest.provenance import stable_id

    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise MappingError(
            "Bundle.entry is not a list", [issue("structure", "Bundle.entry", "expected an array")]
        )
    urls: dict[str, str] = {}
    resources: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        req = entry.get("request") or {} if isinstance(entry, dict) else {}
        if not isinstance(req, dict):
            raise MappingError(
                "bundle entry request is not an object",
                [issue("structure", f"Bundle.entry[{i}].request", "expected a JSON object")],
            )
        method = str(req.get("method", "POST")).upper()
        url = str(req.get("url", ""))
        if method not in ("POST", "PUT") or "?" in url or req.get("ifNoneExist") or req.get("ifMatch"):
            return None  # DELETE, GET, conditional: the store's processing (and validation) decides
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            raise MappingError(
                "bundle entry has no resource",
                [issue("required", f"Bundle.entry[{i}].resource", "entry without resource")],
            )
        rtype = str(res.get("resourceType", ""))
        full = str(entry.get("fullUrl", ""))
        if method == "PUT" and "/" in url:
            rid = url.rsplit("/", 1)[1]
        elif full.startswith("urn:uuid:") and _UUID_ID.match(full[9:]):
            rid = full[9:]
        elif isinstance(res.get("id"), str) and method == "PUT":
            rid = res["id"]
        else:
            rid = stable_id(bundle_key, str(i))
        res = dict(res)
        res["id"] = rid
        if full:
            urls[full] = f"{rtype}/{rid}"
        resources.append(res)
    bad: list[str] = []
    for res in resources:
        _references(res, urls, bad)
    if bad:
        return None
    return resources


def map_bundle(record: Record, ctx: MapContext) -> Mapped:
    """A batch/transaction Bundle -> its resources (flattened) or the bundle for store processing."""
    raw = record.raw[3:] if record.raw.startswith(b"\xef\xbb\xbf") else record.raw
    bundle = _parse_json(raw, record.position)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise MappingError("not a Bundle", [issue("resource-type", "resourceType", "expected a Bundle")])
    if bundle.get("type") not in ("batch", "transaction", "collection"):
        raise MappingError(
            "unsupported bundle type",
            [issue("value-set", "Bundle.type", "expected batch, transaction or collection")],
        )
    key = record.key or hashlib.sha256(record.raw).hexdigest()
    resources = flatten_bundle(bundle, key)
    if resources is None:
        return Mapped([], bundle=bundle)
    times = [source_time(res, f"Bundle.entry[{i}].resource") for i, res in enumerate(resources)]
    if all(t is None for t in times):
        return Mapped(resources)
    return Mapped(resources, ordered=True, times=times)


def iter_bundle_files(paths: list[Path]) -> Iterator[Record]:
    """One record per bundle file (its content hash is the idempotency key).

    A bundle is one JSON document, parsed whole: a file larger than the line limit of
    :mod:`rhip.ingest.lines` is not read into memory but quarantined (its first bytes kept).
    """
    for path in paths:
        size = path.stat().st_size
        if size > MAX_LINE:
            with path.open("rb") as fh:
                head = fh.read(KEPT)
            yield Record(head, path.name, context={OVERLONG: size})
            continue
        raw = path.read_bytes()
        yield Record(raw, path.name, key=hashlib.sha256(raw).hexdigest())


register_mapper(NDJSON, map_ndjson)
register_mapper(BUNDLE, map_bundle)
