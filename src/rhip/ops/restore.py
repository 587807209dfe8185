"""``rhip backup restore``: a backup back into a new data directory (and, for PostgreSQL, a new database).

Restore never overwrites: the data directory must be new or empty and the PostgreSQL database
empty, so a mistyped path cannot replace a running platform. Every member's digest is checked and
the keys are opened before anything is put in place; a failure part-way leaves the directory
empty again.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rhip.ops.archive import BackupError, Manifest, read_manifest, unpack
from rhip.ops.backup import FILES_PREFIX, STORE_MEMBERS
from rhip.ops.keyseal import KEYS_MEMBER, open_keys, write_keys
from rhip.ops.snapshot import restore_postgres


def _require_empty(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir}: not an empty directory; restore only into a new or empty one")


def _opened_keys(manifest: Manifest, unpacked: Path, passphrase: bytes | None) -> dict[str, bytes]:
    """The backup's key files, opened with the passphrase ({} for a backup made without keys)."""
    if manifest.keys_seal is None:
        return {}
    if passphrase is None:
        raise BackupError(
            f"{KEYS_MEMBER}: the keys are sealed; give the passphrase "
            "(--passphrase-file or RHIP_BACKUP_PASSPHRASE)"
        )
    return open_keys((unpacked / KEYS_MEMBER).read_bytes(), manifest.keys_seal, passphrase)


def restore_backup(
    archive: Path, data_dir: Path, passphrase: bytes | None, database_url: str | None = None
) -> Manifest:
    """Restore ``archive`` into ``data_dir`` (and the empty PostgreSQL database ``database_url``).

    Raises BackupError when the directory is not empty, a member does not match its digest, the
    passphrase does not open the keys, or a PostgreSQL backup is given no database.
    """
    _require_empty(data_dir)
    manifest = read_manifest(archive)
    if manifest.backend == "postgresql" and not database_url:
        raise BackupError("this backup holds a PostgreSQL dump: give --database-url of an empty database")
    if manifest.backend == "sqlite" and database_url:
        raise BackupError(
            "this backup holds a SQLite store, restored as <data dir>/rhip.sqlite: drop --database-url"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".rhip-restore-", dir=data_dir.parent) as tmp:
            _restore_into(archive, manifest, Path(tmp), data_dir, passphrase, database_url)
    except BaseException:
        for child in data_dir.iterdir():  # empty again: the directory was empty before
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return manifest


def _restore_into(
    archive: Path,
    manifest: Manifest,
    unpacked: Path,
    data_dir: Path,
    passphrase: bytes | None,
    database_url: str | None,
) -> None:
    bad = unpack(archive, manifest, unpacked)
    if bad:
        raise BackupError(f"{bad[0]}: does not match its SM3 digest in the manifest; nothing restored")
    keys = _opened_keys(manifest, unpacked, passphrase)
    store = unpacked / STORE_MEMBERS[manifest.backend]
    if database_url:
        restore_postgres(store, database_url)
    else:
        shutil.move(store, data_dir / "rhip.sqlite")
    write_keys(keys, data_dir)
    files = unpacked / FILES_PREFIX.rstrip("/")
    for path in sorted(files.rglob("*")) if files.is_dir() else []:
        if path.is_file():
            target = data_dir / path.relative_to(files)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
