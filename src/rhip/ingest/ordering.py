"""Source-time ordering: an update older than the one already applied for a resource is stale.

Sources that date their updates (HL7 v2 MSH-7, FHIR ``meta.lastUpdated``, a CSV table's
``modified_column``) give each mapped resource a source time; ``ingest_source_time`` holds the
last one applied per resource (docs/ingest.md, *Provenance, idempotency, ordering*).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from rhip.ingest.chunkwrite import source_times
from rhip.ingest.model import Mapped


def superseded(engine: Engine, mapped: Sequence[Mapped]) -> set[int]:
    """Drop resources older (source event time) than what is already applied; returns the
    positions in ``mapped`` of the records left with nothing to write (all their resources were
    superseded). The others keep only their resources that are not older.

    One batched look-up of the stored source times per chunk; within the chunk a later record
    that is older than an earlier one of the same resource loses too. Equal times pass (the
    store then finds identical content unchanged: a duplicate).
    """
    timed = [
        (n, m)
        for n, m in enumerate(mapped)
        if m.ordered and m.resources and (m.event_time is not None or m.times is not None)
    ]
    if not timed:
        return set()
    ids: dict[str, set[str]] = {}
    for _n, m in timed:
        for r in m.resources:
            ids.setdefault(r["resourceType"], set()).add(r["id"])
    known = source_times(engine, ids)
    stale: set[int] = set()
    for n, m in timed:
        keep: list[dict[str, Any]] = []
        kept_times: list[float | None] = []
        for r, t in zip(m.resources, m.source_times(), strict=True):
            key = (r["resourceType"], r["id"])
            if t is not None:
                if known.get(key, float("-inf")) > t:
                    continue
                known[key] = t
            keep.append(r)
            kept_times.append(t)
        if not keep:
            stale.add(n)
            continue
        m.resources = keep
        if m.times is not None:
            m.times = kept_times
    return stale
