"""The writer registry: each output format is a plug-in that turns resident lives into bytes.

Writers run inside worker processes over chunks of residents and return what to append to which
file; the main process appends chunk results in chunk order, so output is byte-identical for a seed
whatever the number of processes. Files a writer owns alone (DICOM, bundles) it writes itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhip.synth.model import Life
from rhip.synth.region import Region

#: relative path -> (bytes to append, number of records in them)
Appends = dict[str, tuple[bytes, int]]

WRITERS: dict[str, type[Writer]] = {}


def register_writer(name: str) -> Callable[[type[Writer]], type[Writer]]:
    """Class decorator adding a writer under ``name`` (the value used in ``--formats``)."""

    def deco(cls: type[Writer]) -> type[Writer]:
        cls.name = name
        WRITERS[name] = cls
        return cls

    return deco


class Writer(ABC):
    """One output format."""

    name = ""

    def __init__(self, out: Path, region: Region, ctx: dict[str, Any]) -> None:
        self.out = out
        self.region = region
        self.ctx = ctx
        self.seed: int = ctx["seed"]

    def headers(self) -> dict[str, bytes]:
        """Bytes each append file starts with (CSV header rows), written once before any chunk."""
        return {}

    @abstractmethod
    def render(self, lives: list[Life], chunk: int) -> Appends:
        """Serialise one chunk of lives; may write standalone files under ``self.out`` directly."""


def add(appends: Appends, path: str, data: bytes, n: int = 1) -> None:
    """Accumulate ``data`` (``n`` records) for ``path``."""
    old = appends.get(path)
    appends[path] = (old[0] + data, old[1] + n) if old else (data, n)


class Buffer:
    """Per-path lists of byte pieces joined once at the end (cheaper than repeated concatenation)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}

    def put(self, path: str, data: bytes, n: int = 1) -> None:
        self.parts.setdefault(path, []).append(data)
        self.counts[path] = self.counts.get(path, 0) + n

    def result(self) -> Appends:
        return {p: (b"".join(parts), self.counts[p]) for p, parts in self.parts.items()}
