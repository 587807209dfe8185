"""Versioned secret keys on local disk: SM4 field keys and JWT signing keys.

Keys never live in git or in the database: they sit under ``<data_dir>/keys/<kind>/v<N>.key``
(mode 0600), are generated on first use and rotated by adding a new version. Old versions stay so
that data encrypted (or tokens signed) under them remain readable until re-encrypted or expired.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: Key kinds and their length in bytes.
KEY_KINDS: dict[str, int] = {"sm4": 16, "jwt": 32, "hmac": 32}
_NAME = re.compile(r"^v(\d+)\.key$")
#: How long (seconds) :meth:`KeyRing.current` trusts the newest version it saw before listing the
#: folder again: a rotation made by another process is picked up within this time, and field
#: encryption does not list a directory for every value.
CURRENT_TTL = 1.0


class KeyRing:
    """The keys of one data directory, by kind and version."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "keys"
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], bytes] = {}
        self._newest: dict[str, tuple[int, float]] = {}

    def _dir(self, kind: str) -> Path:
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {kind}")
        return self.root / kind

    def versions(self, kind: str) -> list[int]:
        """The versions present for a kind, ascending."""
        folder = self._dir(kind)
        if not folder.is_dir():
            return []
        found = [_NAME.match(p.name) for p in folder.iterdir()]
        return sorted(int(m.group(1)) for m in found if m)

    def current(self, kind: str) -> tuple[int, bytes]:
        """The newest (version, key) of a kind, generating version 1 when none exists."""
        seen = self._newest.get(kind)
        if seen is not None and time.monotonic() - seen[1] < CURRENT_TTL:
            return seen[0], self.get(kind, seen[0])
        with self._lock:
            versions = self.versions(kind)
            version = versions[-1] if versions else 1
            if not versions:
                self._write(kind, 1)
            self._newest[kind] = (version, time.monotonic())
        return version, self.get(kind, version)

    def get(self, kind: str, version: int) -> bytes:
        """One key version; KeyError when it does not exist."""
        cached = self._cache.get((kind, version))
        if cached is not None:
            return cached
        path = self._dir(kind) / f"v{version}.key"
        if not path.exists():
            raise KeyError(f"{kind} key version {version} not found under {self.root}")
        key = bytes.fromhex(path.read_text("ascii").strip())
        self._cache[(kind, version)] = key
        return key

    def rotate(self, kind: str) -> int:
        """Add a new version of a kind and return its number."""
        with self._lock:
            versions = self.versions(kind)
            version = (versions[-1] if versions else 0) + 1
            self._write(kind, version)
            self._newest.pop(kind, None)
        logger.info("rotated %s key to version %d", kind, version)
        return version

    def _write(self, kind: str, version: int) -> bytes:
        """Create ``v<version>.key``; when another process created it first, use that one.

        The key is written to a private temporary file and linked into place, so a reader never
        sees a half-written key and two processes generating version 1 agree on one key.
        """
        folder = self._dir(kind)
        folder.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_KINDS[kind])
        path = folder / f"v{version}.key"
        scratch = folder / f".v{version}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(key.hex())
            os.link(scratch, path)
        except FileExistsError:
            return self.get(kind, version)
        finally:
            scratch.unlink(missing_ok=True)
        self._cache[(kind, version)] = key
        return key
