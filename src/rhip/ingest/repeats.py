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
