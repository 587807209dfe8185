"""Identical records within one chunk: the first occurrence counts, later ones are duplicates.

A file may repeat a line (an NDJSON export written twice over, a CSV row pasted again). The
record's key is its content hash (or its own key), so identical records share it. A repeated bad
record shares the first one's quarantine entry; a repeated good record is written once (the chunk
keeps one version per resource). Both count as duplicates, and the quality rules score the first
occurrence only, so a batch's counts and the quality tallies describe what was written.

A good record repeats only the *latest* record of its resources in the chunk: in ``v1, v2, v1``
the third line is an update again (the file's last line wins, as across chunks), not a duplicate.
The writer (``rhip.ingest.pipeline``) and a producer process (``rhip.ingest.producer``) apply the
same rule to the same chunk, so both agree on which records are repeats.

Across chunks of a bulk file (untracked: no record keys are kept), the store's current version
tells: :func:`repeated_line` counts a resource as unchanged when the stored version came from
another line of a file of the same name from the same facility and connector and differs from
the new one only in that ``meta.source``. So an identical line in a later chunk, with no other
version of its resource in between, is a duplicate as within a chunk, and the resource keeps
naming the first line.
"""

from __future__ import annotations

from typing import Any


class ChunkRepeats:
    """Tells, record by record in file order, whether a record repeats an earlier one of its chunk."""

    def __init__(self) -> None:
        self._bad: set[str] = set()
        self._latest: dict[tuple[str, str], str] = {}  # resource -> key of the record that wrote it last

    def repeats(self, key: str, mapped: Any) -> bool:
        """Whether the record of ``key`` (``mapped``: None when quarantined) repeats an earlier one.

        Records the record as seen: call it once per record, in order.
        """
        if mapped is None:
            if key in self._bad:
                return True
            self._bad.add(key)
            return False
        if mapped.bundle is not None or mapped.merge is not None or not mapped.resources:
            return False  # the store's own processing, or no resource: never folded
        targets = [(str(r.get("resourceType")), str(r.get("id"))) for r in mapped.resources]
        if all(self._latest.get(t) == key for t in targets):
            return True
        for t in targets:
            self._latest[t] = key
        return False


def repeated_line(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` is ``stored`` read again from another line of the same file.

    Both are a resource's content (no version stamps); ``meta.source`` ends with the record's
    position, ``<file name>:<line>`` (:func:`rhip.ingest.provenance.source_uri`): only that line
    may differ. Called by the store's pre-read for resources whose content differs (updates), so
    a fresh load never gets here.
    """
    old_meta, new_meta = stored.get("meta"), new.get("meta")
    if type(old_meta) is not dict or type(new_meta) is not dict:
        return False
    old_source, new_source = old_meta.get("source"), new_meta.get("source")
    if type(old_source) is not str or type(new_source) is not str:
        return False
    if old_source.rpartition(":")[0] != new_source.rpartition(":")[0]:
        return False
    return {**new, "meta": {**new_meta, "source": old_source}} == stored
