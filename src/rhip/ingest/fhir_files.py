"""FHIR connectors: NDJSON files (bulk, streamed line by line) and batch/transaction bundles.

NDJSON is the fast path: every line is one record, nothing but the current line is held in memory,
and resources keep their own ids so a re-delivered file is recognised by the store as unchanged.
Bundles are flattened when they can be: ``urn:uuid`` full URLs become the resource ids and every
reference to them is rewritten, so the whole bundle goes through the bulk path with stable ids. A
bundle that needs server logic (conditional references, ifNoneExist, DELETE) is handed to the
store's transaction processing instead. Each entry of a batch bundle is a record of its own
(stored, quarantined and replayed alone); a transaction stays one record, all or nothing.

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
from rhip.ingest.mappers import MapContext, register_mapper
from rhip.ingest.model import Mapped, MappingError, Record, issue

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


def _entry_target(entry: Any, i: int, bundle_key: str) -> tuple[dict[str, Any], str] | None:
    """The entry's resource with its stable id, and its fullUrl; None when it needs the store.

    ``i`` is the entry's index in the delivered bundle (ids and reasons name it). Raises
    MappingError when the entry's request or resource is not of the right shape.
    """
    from rhip.ingest.provenance import stable_id

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
    return res, full


def flatten_bundle(bundle: dict[str, Any], bundle_key: str, first: int = 0) -> list[dict[str, Any]] | None:
    """The bundle's resources with stable ids and rewritten references, or None when it needs the store.

    ``first``: the index of the bundle's first entry in the delivered bundle (a batch bundle's
    entry is mapped on its own, see :func:`iter_bundle_files`).
    """
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise MappingError(
            "Bundle.entry is not a list", [issue("structure", "Bundle.entry", "expected an array")]
        )
    urls: dict[str, str] = {}
    resources: list[dict[str, Any]] = []
    for i, entry in enumerate(entries, first):
        target = _entry_target(entry, i, bundle_key)
        if target is None:
            return None
        res, full = target
        if full:
            urls[full] = f"{res.get('resourceType', '')}/{res['id']}"
        resources.append(res)
    bad: list[str] = []
    for res in resources:
        _references(res, urls, bad)
    if bad:
        return None
    return resources


def map_bundle(record: Record, ctx: MapContext) -> Mapped:
    """A batch/transaction Bundle -> its resources (flattened) or the bundle for store processing.

    A record holding one entry of a batch bundle (:func:`iter_bundle_files`) is mapped as a batch
    bundle of that entry alone.
    """
    if "entry" in record.context:
        return _map_entry(record)
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
    return _mapped(bundle, key, 0)


def _map_entry(record: Record) -> Mapped:
    """One entry of a batch bundle: references to the bundle's other entries are rewritten to the
    ids those entries get (``refs``), ids derive from the bundle (``bundle``) and entry index."""
    index = int(record.context["entry"])
    entry = _parse_json(record.raw, record.position)
    res = entry.get("resource") if isinstance(entry, dict) else None
    refs = record.context.get("refs") or {}
    if refs and isinstance(res, dict):
        _references(res, refs, [])
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    return _mapped(bundle, str(record.context.get("bundle", "")), index)


def _mapped(bundle: dict[str, Any], key: str, first: int) -> Mapped:
    resources = flatten_bundle(bundle, key, first)
    if resources is None:
        return Mapped([], bundle=bundle, entry=first)
    times = [source_time(res, f"Bundle.entry[{i}].resource") for i, res in enumerate(resources, first)]
    if all(t is None for t in times):
        return Mapped(resources)
    return Mapped(resources, ordered=True, times=times)


def _collect_references(node: Any, urls: dict[str, str], found: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in urls:
            found[ref] = urls[ref]
        for value in node.values():
            if isinstance(value, (dict, list)):
                _collect_references(value, urls, found)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _collect_references(value, urls, found)


def _batch_entries(raw: bytes, name: str) -> Iterator[Record] | None:
    """One record per entry of a batch bundle, or None when ``raw`` is no batch bundle with entries.

    A batch's entries succeed or fail on their own (FHIR), so each is a record: stored or
    quarantined (``file:entry[i]``) and replayed on its own. Its key is its content and index, so
    a re-delivered bundle, or one sent again with a failed entry fixed, stores only what is new.
    """
    try:
        bundle = orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(bundle, dict) or bundle.get("type") != "batch":
        return None
    if bundle.get("resourceType") != "Bundle":
        return None
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return None
    bundle_key = hashlib.sha256(raw).hexdigest()
    urls: dict[str, str] = {}  # fullUrl -> Type/id of the entries that are flattened
    for i, entry in enumerate(entries):
        try:
            target = _entry_target(entry, i, bundle_key)
        except MappingError:
            continue
        if target is not None and target[1]:
            urls[target[1]] = f"{target[0].get('resourceType', '')}/{target[0]['id']}"
    return _entry_records(entries, urls, bundle_key, name)


def _entry_records(entries: list[Any], urls: dict[str, str], bundle_key: str, name: str) -> Iterator[Record]:
    for i, entry in enumerate(entries):
        item = orjson.dumps(entry)
        refs: dict[str, str] = {}
        if urls and isinstance(entry, dict):
            _collect_references(entry.get("resource"), urls, refs)
        context = {"bundle": bundle_key, "entry": i, "refs": refs}
        key = hashlib.sha256(item).hexdigest()
        yield Record(item, f"{name}:entry[{i}]", key=f"{key}:{i}", context=context)


def iter_bundle_files(paths: list[Path]) -> Iterator[Record]:
    """One record per bundle file (its content hash is the idempotency key), or per entry of a
    batch bundle (see :func:`_batch_entries`).

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
        entries = _batch_entries(raw, path.name)
        if entries is not None:
            yield from entries
            continue
        yield Record(raw, path.name, key=hashlib.sha256(raw).hexdigest())


register_mapper(NDJSON, map_ndjson)
register_mapper(BUNDLE, map_bundle)
