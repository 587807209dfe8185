"""Connector mappers: the registry ``rhip ingest`` and quarantine replay find a record's mapper in,
and the helpers every connector shares (the record's idempotency key, reading records in chunks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from rhip.ingest.canonical import ConceptTranslator
from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.ingest.provenance import scoped_key

__all__ = ["MAPPERS", "MapContext", "MapFn", "chunks", "record_key", "register_mapper"]


@dataclass
class MapContext:
    """What a mapper may use besides the record: the source, the local time zone, the translator."""

    source: SourceInfo
    tz: str
    translator: ConceptTranslator
    options: dict[str, Any] = field(default_factory=dict)


MapFn = Callable[[Record, MapContext], Mapped]

#: Connector name -> mapper; quarantine replay finds the mapper of a record here.
MAPPERS: dict[str, MapFn] = {}


def register_mapper(connector: str, mapper: MapFn) -> None:
    """Register (or replace) the mapper of a connector, the way an extension adds one."""
    MAPPERS[connector] = mapper


def record_key(rec: Record, source: SourceInfo) -> str:
    """The idempotency key of a record: its own key (or content hash) scoped to its source."""
    return scoped_key(source, rec.key or hashlib.sha256(rec.raw).hexdigest())


def chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive lists of up to ``size`` records (the last one shorter)."""
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk
