"""The operational FHIR R4 resource store: versioned resources, history, search, bundles, bulk.

Use :class:`Store` (``Store.from_settings()`` for the configured database). Tables live in
:mod:`rhip.store.schema` (resources and versions) and :mod:`rhip.store.index_schema` (search index).
"""

from __future__ import annotations

from rhip.store.bulk import BulkWriteResult
from rhip.store.engine import StoreBusy, make_engine, read_connection, write_transaction
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.guard import WriteCheck, WriteGuard
from rhip.store.meta import etag, format_instant, new_id, parse_etag, parse_instant
from rhip.store.ops import WriteResult
from rhip.store.schema import METADATA
from rhip.store.store import HistoryEntry, HistoryPage, Store

__all__ = [
    "METADATA",
    "BulkWriteResult",
    "FieldCrypt",
    "HistoryEntry",
    "HistoryPage",
    "Store",
    "StoreBusy",
    "WriteCheck",
    "WriteGuard",
    "WriteResult",
    "etag",
    "format_instant",
    "make_engine",
    "new_id",
    "parse_etag",
    "parse_instant",
    "read_connection",
    "write_transaction",
]
