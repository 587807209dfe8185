"""The repository itself: no key material is ever tracked (keys live under ``<data_dir>/keys``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True
    ).stdout.decode("utf-8")
    return [name for name in listing.split("\0") if name]


def test_no_key_files_are_tracked() -> None:
    keys = [
        name
        for name in _tracked_files()
        if name.endswith((".key", ".pem")) or name.startswith("keys/") or "/keys/" in name
    ]
    assert not keys, f"key material tracked in git (keys belong under <data_dir>/keys): {keys}"


def test_no_private_key_blocks_are_tracked() -> None:
    marker = b"PRIVATE " + b"KEY-----"  # split so that this file does not match itself
    holders = []
    for name in _tracked_files():
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 5_000_000 and marker in path.read_bytes():
            holders.append(name)
    assert not holders, f"private keys tracked in git: {holders}"
