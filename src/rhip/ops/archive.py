"""The backup archive: a plain tar whose ``manifest.json`` records an SM3 digest of every member.

A tar needs nothing but the standard library to list or unpack on any machine, which is what an
operator has at hand on the day a platform must be rebuilt. Each member is digested while it is
written (:class:`_DigestReader`), so a file that changes under the writer cannot get a digest of
other bytes than the ones archived. The manifest is written last, once every digest is known, and
is read by name.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from cryptography.hazmat.primitives import hashes

from rhip.errors import RhipError

#: Name of the manifest member.
MANIFEST = "manifest.json"
#: Layout version of the archive; :func:`read_manifest` refuses any other.
FORMAT = 1
#: Store back ends a backup can hold.
BACKENDS = ("sqlite", "postgresql")
#: Bytes read at a time while a member is written or digested.
CHUNK = 1024 * 1024

#: Called with (stage, bytes done, bytes in all) while members are written.
OnProgress = Callable[[str, int, int], None]


class BackupError(RhipError):
    """A backup cannot be made, read or restored; the message names the member or the file."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="processing", status=500)


@dataclass
class Manifest:
    """What a backup holds and the facts to check it against (``manifest.json``)."""

    rhip_version: str
    created: str  # UTC, ISO 8601
    backend: str  # sqlite | postgresql
    schema_revision: str | None
    audit_seq: int
    audit_hash: str
    counts: dict[str, int]
    settings: dict[str, Any]
    keys_seal: dict[str, Any] | None  # KDF and cipher parameters; None: a backup without keys
    left_out: dict[str, str]  # what the data directory held that is not in the backup, and why
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sm3, size}
    format: int = FORMAT

    def to_bytes(self) -> bytes:
        """The manifest as indented JSON, keys sorted (readable by an operator with ``tar -xO``)."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest; BackupError when it is not one this version reads."""
        try:
            value = orjson.loads(data)
            if value.get("format") != FORMAT:
                raise BackupError(
                    f"{MANIFEST}: archive format {value.get('format')!r}, this RHIP reads {FORMAT}"
                )
            if value.get("backend") not in BACKENDS:
                raise BackupError(f"{MANIFEST}: unknown store back end {value.get('backend')!r}")
            return cls(**value)
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise BackupError(f"{MANIFEST}: not a backup manifest ({type(exc).__name__})") from None


def utc_now() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_sm3() -> hashes.Hash:
    """An incremental SM3 digest (OpenSSL's, through ``cryptography``)."""
    return hashes.Hash(hashes.SM3())


def sm3_of_file(path: Path) -> str:
    """SM3 of a file's bytes as hex, read in chunks."""
    digest = new_sm3()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.finalize().hex()


class _DigestReader(io.RawIOBase):
    """A read-only file object that digests and counts the bytes tar takes from it."""

    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._source = source
        self._on_bytes = on_bytes
        self.digest = new_sm3()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        self._on_bytes(len(data))
        return data


class ArchiveWriter:
    """Writes members to a tar and their digests to the manifest; the archive appears whole or not at all.

    The tar is written to ``<out>.partial`` and renamed on :meth:`finish`, so an interrupted run
    never leaves a file that looks like a backup.
    """

    def __init__(self, out: Path, on_progress: OnProgress, total_bytes: int) -> None:
        self.out = out
        self.partial = out.with_name(out.name + ".partial")
        # The archive holds the whole health record store: readable by its owner only, from the
        # first byte (a chmod after writing would leave a window, and the umask usually allows 0644).
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w")  # noqa: SIM115 - closed by finish/abandon
        self._members: dict[str, dict[str, Any]] = {}
        self._on_progress = on_progress
        self._done = 0
        self._total = max(total_bytes, 1)

    def add_file(self, name: str, path: Path) -> None:
        """Add a file under ``name``; its size is fixed when it is opened (a file that grows is cut there)."""
        with path.open("rb") as handle:
            info = self._tar.gettarinfo(fileobj=handle, arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
            self._add(info, handle)

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add a member made in memory (the sealed keys)."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self._add(info, io.BytesIO(data))

    def _add(self, info: tarfile.TarInfo, source: IO[bytes]) -> None:
        reader = _DigestReader(source, self._advance)
        try:
            self._tar.addfile(info, reader)
        except OSError as exc:  # tar's "unexpected end of data": the file shrank while read
            raise BackupError(
                f"{info.name}: changed while it was archived ({exc}); run the backup again"
            ) from None
        self._members[info.name] = {"sm3": reader.digest.finalize().hex(), "size": info.size}

    def _advance(self, count: int) -> None:
        self._done += count
        self._on_progress("archiving", min(self._done, self._total), self._total)

    def finish(self, manifest: Manifest) -> None:
        """Write the manifest with every member's digest, close the tar and put it in place."""
        manifest.members = dict(self._members)
        data = manifest.to_bytes()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self._tar.addfile(info, io.BytesIO(data))
        self._close()
        self.partial.replace(self.out)

    def abandon(self) -> None:
        """Close and delete the partial archive after a failure."""
        self._close()
        self.partial.unlink(missing_ok=True)

    def _close(self) -> None:
        self._tar.close()
        self._file.close()


def read_manifest(archive: Path) -> Manifest:
    """The manifest of an archive; BackupError naming the file when it is not a backup."""
    try:
        with tarfile.open(archive, "r") as tar:
            handle = tar.extractfile(MANIFEST)
            if handle is None:
                raise KeyError(MANIFEST)
            return Manifest.from_bytes(handle.read())
    except FileNotFoundError:
        raise BackupError(f"{archive}: no such file") from None
    except (tarfile.TarError, KeyError):
        raise BackupError(f"{archive}: not a backup archive (no readable {MANIFEST})") from None


def unpack(archive: Path, manifest: Manifest, into: Path) -> list[str]:
    """Unpack the members the manifest lists into ``into``; return the names whose digest does not match.

    A member the manifest lists but the tar lacks, or a member the tar holds that the manifest does
    not list, counts as not matching. Unpacking uses tar's ``data`` filter: no member lands outside
    ``into`` and none keeps special permissions.
    """
    try:
        with tarfile.open(archive, "r") as tar:
            names = {m.name for m in tar.getmembers() if m.isfile()} - {MANIFEST}
            wanted = [m for m in tar.getmembers() if m.name in manifest.members]
            tar.extractall(into, members=wanted, filter="data")
    except tarfile.TarError as exc:  # a truncated archive, or a member aimed outside the folder
        raise BackupError(f"{archive}: cannot be unpacked ({exc})") from None
    bad = sorted(names - set(manifest.members))
    for name, facts in sorted(manifest.members.items()):
        path = into / name
        if not path.is_file() or sm3_of_file(path) != facts.get("sm3"):
            bad.append(name)
    return bad
