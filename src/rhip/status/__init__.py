"""The operator's view of the platform in one look: ``rhip status``.

:func:`collect_status` asks each capability for its own figures (store, ingest batches and
quarantine, MPI, lake, surveillance, audit, keys) through that capability's functions, and
:mod:`rhip.status.cli` prints them as tables or JSON. Nothing here writes: a data directory with
no store yet, or a store whose schema is behind this version, is reported as such, never created
or migrated.
"""

from __future__ import annotations

from rhip.status.collect import NONE_YET, collect_status

__all__ = ["NONE_YET", "collect_status"]
