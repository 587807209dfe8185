"""``rhip backup create``: one archive from which a platform can be rebuilt on another machine.

What goes in: a consistent snapshot of the operational database (which holds the resources, their
history, the audit chain, the quarantine, MPI links, accounts), the key files sealed with a
passphrase (:mod:`rhip.ops.keyseal`), and every other file of the data directory that cannot be
regenerated (the trained MPI model, for one). What stays out, by default, is what can be made again
from the store (:data:`LEFT_OUT`); the manifest records it with the reason.

The database is snapshotted before the keys are read: a key version is written to disk before any
value is sealed with it and is never deleted by the platform, so every key the snapshot needs is
on disk when the keys are read after it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from rhip import __version__
from rhip.ops.archive import ArchiveWriter, BackupError, Manifest, OnProgress, read_manifest, utc_now
from rhip.ops.keyseal import KEYS_MEMBER, seal_keys
from rhip.ops.snapshot import SnapshotFacts, snapshot_postgres, snapshot_sqlite

logger = logging.getLogger(__name__)

#: Folders of the data directory a backup leaves out, with the reason the manifest records.
LEFT_OUT: dict[str, str] = {
    "lake": "Parquet lake: rebuilt from the store by `rhip export` (include with --with-lake)",
    "bulk": "Bulk Data $export files: answers to past requests, which expire",
    "region": "synthetic region of `rhip demo`: generated again by `rhip generate`",
}
#: Member names of the database snapshot, by back end.
STORE_MEMBERS = {"sqlite": "store/rhip.sqlite", "postgresql": "store/rhip.pgdump"}
#: Name prefix of the scratch folder a backup stages its snapshot in (beside the archive).
STAGING_PREFIX = ".rhip-backup-"
#: Prefix of the members copied from the data directory.
FILES_PREFIX = "files/"


@dataclass
class BackupPlan:
    """What to back up: the data directory, the store's URL, the passphrase (None: no keys), the lake."""

    data_dir: Path
    database_url: str
    passphrase: bytes | None
    with_lake: bool = False


def _quiet(_stage: str, _done: int, _total: int) -> None:
    """Progress callback that reports nothing."""


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a store URL."""
    backend = make_url(url).get_backend_name()
    if backend not in STORE_MEMBERS:
        raise BackupError(f"cannot back up a {backend} store: sqlite and postgresql are supported")
    return backend


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "").resolve()


def _skipped_paths(plan: BackupPlan, out: Path) -> set[Path]:
    """Files and folders of the data directory that are not copied as files (the store, keys, output)."""
    skip = {plan.data_dir / "keys", out, out.with_name(out.name + ".partial")}
    if backend_of(plan.database_url) == "sqlite":
        db = _sqlite_path(plan.database_url)
        suffixes = ("", "-wal", "-shm", "-journal", ".reindex-lock")  # the lock: see rhip.store.reindex_lock
        skip |= {db.with_name(db.name + suffix) for suffix in suffixes}
    skip |= {plan.data_dir / name for name in LEFT_OUT if not (plan.with_lake and name == "lake")}
    return {p.resolve() for p in skip}


def data_files(plan: BackupPlan, out: Path) -> list[Path]:
    """The files of the data directory that go into the backup as they are, sorted."""
    if not plan.data_dir.is_dir():
        return []
    skip = _skipped_paths(plan, out)
    found: list[Path] = []
    for folder, subfolders, names in os.walk(plan.data_dir):
        here = Path(folder)
        subfolders[:] = [  # a lake is never walked, nor the staging folder of this very backup
            d for d in subfolders if (here / d).resolve() not in skip and not d.startswith(STAGING_PREFIX)
        ]
        found.extend(here / n for n in names if (here / n).resolve() not in skip and (here / n).is_file())
    return sorted(p for p in found if not _is_backup(p))


def _is_backup(path: Path) -> bool:
    """Whether a file is a backup archive (kept in the data directory, it is not copied into the next)."""
    if not path.name.endswith((".tar", ".tar.partial")):
        return False
    try:
        read_manifest(path)
    except BackupError:
        return path.name.endswith(".partial")
    return True


def _snapshot(plan: BackupPlan, staging: Path, on_progress: OnProgress) -> tuple[Path, SnapshotFacts]:
    if backend_of(plan.database_url) == "sqlite":
        target = staging / "rhip.sqlite"
        return target, snapshot_sqlite(_sqlite_path(plan.database_url), target, on_progress)
    target = staging / "rhip.pgdump"
    on_progress("pg_dump", 0, 0)
    return target, snapshot_postgres(plan.database_url, target)


def _manifest(plan: BackupPlan, facts: SnapshotFacts, seal: dict[str, object] | None) -> Manifest:
    from rhip.config import get_settings

    settings = get_settings()
    left_out = {name: why for name, why in LEFT_OUT.items() if not (plan.with_lake and name == "lake")}
    if seal is None:
        left_out["keys"] = "left out by --without-keys: restore needs the key folder from elsewhere"
    return Manifest(
        rhip_version=__version__,
        created=utc_now(),
        backend=backend_of(plan.database_url),
        schema_revision=facts.schema_revision,
        audit_seq=facts.audit_seq,
        audit_hash=facts.audit_hash,
        counts=facts.counts,
        settings={
            "database": make_url(plan.database_url).render_as_string(hide_password=True),
            "data_dir": str(plan.data_dir.resolve()),
            "field_encryption": settings.field_encryption,
            "timezone": settings.timezone,
            "identifier_base": settings.identifier_base,
            "base_url": settings.base_url,
        },
        keys_seal=dict(seal) if seal is not None else None,
        left_out=left_out,
    )


def create_backup(plan: BackupPlan, out: Path, on_progress: OnProgress = _quiet) -> Manifest:
    """Write the backup archive ``out`` (a tar) and return its manifest.

    Raises BackupError when ``out`` exists, the store cannot be read, or ``pg_dump`` is missing.
    Without a passphrase the keys are left out and the manifest says so.
    """
    if out.exists():
        raise BackupError(f"{out}: exists already; a backup never overwrites a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out.parent))
    try:
        snapshot, facts = _snapshot(plan, staging, on_progress)
        sealed, seal = seal_keys(plan.data_dir, plan.passphrase) if plan.passphrase else (b"", None)
        files = data_files(plan, out)
        total = snapshot.stat().st_size + len(sealed) + sum(p.stat().st_size for p in files)
        writer = ArchiveWriter(out, on_progress, total)
        try:
            writer.add_file(STORE_MEMBERS[backend_of(plan.database_url)], snapshot)
            if seal is not None:
                writer.add_bytes(KEYS_MEMBER, sealed)
            for path in files:
                writer.add_file(FILES_PREFIX + path.relative_to(plan.data_dir).as_posix(), path)
            manifest = _manifest(plan, facts, seal)
            writer.finish(manifest)
        except BaseException:
            writer.abandon()
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("backup %s: %d members", out, len(manifest.members))
    return manifest
