"""KeyRing: several processes share one key folder; rotations reach a running process."""

from __future__ import annotations

import time
from pathlib import Path

from rhip.security import keys as keys_module
from rhip.security.keys import KeyRing


def test_a_key_created_concurrently_by_another_process_is_used(tmp_path: Path) -> None:
    """Two processes generating version 1 at once: the loser failed on O_EXCL or read a partial file."""
    winner, loser = KeyRing(tmp_path), KeyRing(tmp_path)
    first = winner.current("sm4")[1]
    # the loser listed an empty folder just before the winner wrote: it now writes version 1 too
    assert loser._write("sm4", 1) == first
    assert loser.current("sm4")[1] == first
    assert sorted(p.name for p in (tmp_path / "keys" / "sm4").iterdir()) == ["v1.key"]  # no scratch left


def test_a_rotation_by_another_process_is_seen_after_the_ttl(tmp_path: Path) -> None:
    serving = KeyRing(tmp_path)
    assert serving.current("sm4")[0] == 1
    KeyRing(tmp_path).rotate("sm4")  # e.g. `rhip keys rotate sm4` in another process
    assert serving.current("sm4")[0] == 1  # still trusted for CURRENT_TTL
    time.sleep(keys_module.CURRENT_TTL + 0.05)
    assert serving.current("sm4")[0] == 2
    assert serving.rotate("sm4") == 3 and serving.current("sm4")[0] == 3  # its own rotation at once
