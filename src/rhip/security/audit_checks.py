"""When the audit chain was last verified intact, and whether ``rhip audit verify`` is due again.

:func:`rhip.security.audit.verify_chain` walks the whole chain, too slow to run on every look;
``rhip audit verify`` records the head it found intact under ``<data_dir>/audit-verified.json``,
and ``rhip status`` compares that with the current head in one query: events appended since,
or a head that no longer extends the verified one, call for a new verification.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: File under the data directory holding the last intact verification.
VERIFIED_FILE = "audit-verified.json"


@dataclass(frozen=True)
class Verified:
    """An intact verification: the head it reached (``seq``, ``hash``) and when (epoch seconds)."""

    seq: int
    hash: str
    at: float


def record_verified(data_dir: Path, seq: int, head_hash: str) -> None:
    """Remember that the chain was intact up to ``seq`` with head ``head_hash`` (now)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = data_dir / f".{VERIFIED_FILE}.tmp"
    scratch.write_text(json.dumps(asdict(Verified(seq, head_hash, time.time()))), encoding="utf-8")
    scratch.replace(data_dir / VERIFIED_FILE)


def last_verified(data_dir: Path) -> Verified | None:
    """The last intact verification, or None when the chain was never verified from this data directory."""
    path = data_dir / VERIFIED_FILE
    if not path.exists():
        return None
    found = json.loads(path.read_text(encoding="utf-8"))
    return Verified(int(found["seq"]), str(found["hash"]), float(found["at"]))


def verify_advice(head: tuple[int, str], last: Verified | None) -> tuple[bool, str]:
    """(whether ``rhip audit verify`` is due, why) for the current chain ``head`` (seq, hash)."""
    seq, digest = head
    if seq == 0:
        return False, "no events yet"
    if last is None:
        return True, "never verified: run rhip audit verify"
    if last.seq > seq or (last.seq == seq and last.hash != digest):
        return True, "the head no longer extends the verified one: run rhip audit verify now"
    if last.seq < seq:
        return True, f"{seq - last.seq:,} events since the last verification: run rhip audit verify"
    return False, "verified intact up to the head"


__all__ = ["VERIFIED_FILE", "Verified", "last_verified", "record_verified", "verify_advice"]
