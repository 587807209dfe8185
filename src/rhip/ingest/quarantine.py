"""Quarantine: records that could not be parsed, mapped or validated, kept verbatim with reasons.

Operators list them (by facility, connector, rule), look at one (reasons name the element path
and rule; the raw bytes are shown only on request), and replay them after fixing the mapping or
the ConceptMaps: a replayed record goes through the same pipeline and, when it is stored, its
quarantine entry is marked ``replayed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select, update

from rhip.errors import ResourceNotFound
from rhip.ingest.mappers import MAPPERS, MapContext
from rhip.ingest.model import BatchReport, Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import ensure_schema, ingest_quarantine
from rhip.store.meta import format_instant

#: The values a listing's status filter takes: an entry is ``open`` or ``replayed``; ``all`` is both.
STATUS_FILTERS = ("open", "replayed", "all")


@dataclass
class QuarantineEntry:
    """One quarantined record (``raw`` is the verbatim input)."""

    q_id: int
    facility: str
    connector: str
    location: str
    position: str
    reasons: list[dict[str, str]]
    created: float
    status: str
    raw: bytes
    context: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view without the raw bytes; ``created`` is an instant in UTC."""
        return {
            "id": self.q_id,
            "facility": self.facility,
            "connector": self.connector,
            "location": self.location,
            "position": self.position,
            "reasons": self.reasons,
            "created": format_instant(self.created),  # a FHIR-style instant, as the rest of the API
            "status": self.status,
        }


def raw_text(entry: QuarantineEntry) -> tuple[str, str]:
    """The verbatim record as text, and which encoding read it and why.

    The encoding the source declared comes first: a CSV mapping's (kept in the context), an HL7
    message's MSH-18. Without one, or when the bytes are not in it, UTF-8 then GB18030 are tried;
    bytes in neither are shown as UTF-8 with replacement characters, and the answer says so.
    """
    raw = entry.raw
    declared, by = _declared_encoding(entry)
    if declared:
        try:
            return raw.decode(declared), f"{declared}, {by}"
        except (UnicodeDecodeError, LookupError):
            by = f"not {declared} as {by}"
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec), f"{codec}, detected" + (f"; {by}" if declared else "")
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace"), "utf-8 with undecodable bytes replaced (\ufffd)"


def _declared_encoding(entry: QuarantineEntry) -> tuple[str | None, str]:
    """The record's declared encoding (lower case) and who declared it; None when none did."""
    declared = entry.context.get("encoding")
    if isinstance(declared, str) and declared.lower() not in ("", "auto"):
        return declared.lower(), "declared by the mapping"
    if entry.connector == "hl7v2":
        from rhip.ingest.hl7v2 import declared_charset

        codec = declared_charset(entry.raw)
        if codec:
            return codec, "declared in MSH-18"
    return None, ""


def _entry(row: Any) -> QuarantineEntry:
    return QuarantineEntry(
        row.q_id,
        row.facility,
        row.connector,
        row.location,
        row.position,
        orjson.loads(row.reasons),
        row.created,
        row.status,
        row.raw,
        orjson.loads(row.context),
    )


def list_entries(
    engine: Any,
    *,
    status: str | None = "open",
    facility: str | None = None,
    connector: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[QuarantineEntry]:
    """Quarantined records, oldest first, filtered by status, facility and connector."""
    ensure_schema(engine)
    q = ingest_quarantine
    stmt = select(q).order_by(q.c.q_id).limit(limit).offset(offset)
    if status:
        stmt = stmt.where(q.c.status == status)
    if facility:
        stmt = stmt.where(q.c.facility == facility)
    if connector:
        stmt = stmt.where(q.c.connector == connector)
    with engine.connect() as conn:
        return [_entry(r) for r in conn.execute(stmt)]


def count_open(engine: Any) -> dict[str, int]:
    """Open quarantine entries per facility."""
    ensure_schema(engine)
    q = ingest_quarantine
    stmt = select(q.c.facility, func.count()).where(q.c.status == "open").group_by(q.c.facility)
    with engine.connect() as conn:
        return {r[0]: int(r[1]) for r in conn.execute(stmt)}


def get_entry(engine: Any, q_id: int) -> QuarantineEntry:
    """One entry by id; ResourceNotFound when absent."""
    ensure_schema(engine)
    with engine.connect() as conn:
        row = conn.execute(select(ingest_quarantine).where(ingest_quarantine.c.q_id == q_id)).first()
    if row is None:
        raise ResourceNotFound(f"no quarantine entry {q_id}")
    return _entry(row)


def replay(
    pipeline: Pipeline, entries: list[QuarantineEntry], options: dict[str, Any] | None = None
) -> BatchReport:
    """Run entries through the pipeline again; stored ones are marked ``replayed``.

    Entries still failing stay ``open`` with their reasons refreshed.
    """
    total = BatchReport("replay", SourceInfo("*", "replay", "quarantine"))
    for entry in entries:
        source = SourceInfo(entry.facility, entry.connector, entry.location)
        mapper = MAPPERS.get(entry.connector)
        if mapper is None:
            continue
        report = pipeline.open_batch(source)
        context = {k: v for k, v in entry.context.items() if k != "_key"}
        record = Record(entry.raw, entry.position, key=entry.context.get("_key"), context=context)
        opts = dict(options or {})
        opts.setdefault("store", pipeline.store)
        ctx = MapContext(source, pipeline.tz, pipeline.translator, opts)
        ((outcome, reasons),) = pipeline.process_chunk(
            report, ctx, [record], mapper, track=True, keep_quarantine=False
        )
        pipeline.close_batch(report)
        total.add(report)
        with pipeline.engine.begin() as conn:
            q = ingest_quarantine
            if outcome in ("stored", "duplicate", "stale") and not reasons:
                conn.execute(
                    update(q).where(q.c.q_id == entry.q_id).values(status="replayed", resolved_at=time.time())
                )
            elif reasons:
                conn.execute(
                    update(q).where(q.c.q_id == entry.q_id).values(reasons=orjson.dumps(reasons).decode())
                )
    return total
