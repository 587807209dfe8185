"""``rhip backup verify``: is this archive a backup the platform can be rebuilt from?

Every check is made on the archive's own contents, unpacked in a private temporary folder: the
members' SM3 digests against the manifest; the snapshot opens, is sound (SQLite's integrity
check, or ``pg_restore`` reads the dump) and is at a schema revision this RHIP knows; its audit
chain verifies and ends at the head the manifest recorded; with the passphrase, the keys open and
a sample of the encrypted fields in the snapshot decrypts with them (and their HMAC pseudonyms
match). A PostgreSQL dump is checked inside a database only when a scratch database is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa

from rhip import __version__
from rhip.errors import RhipError
from rhip.ops.archive import Manifest, read_manifest, unpack
from rhip.ops.backup import STORE_MEMBERS
from rhip.ops.keyseal import KEYS_MEMBER, open_keys, write_keys
from rhip.ops.snapshot import check_postgres_dump, integrity_problem, read_facts, restore_postgres
from rhip.security.audit import walk_chain
from rhip.store.engine import make_engine

#: Encrypted person bodies decrypted by verify, and how many person rows it looks through for them.
SAMPLE_SIZE, SAMPLE_SCAN = 50, 5000


@dataclass
class Check:
    """One line of the verify report: what was checked on which member, and how it went."""

    member: str
    what: str
    ok: bool | None  # None: not checked (the detail says why)
    detail: str


@dataclass
class VerifyResult:
    """The manifest and every check; ``ok`` when none failed."""

    manifest: Manifest
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


def verify_backup(archive: Path, passphrase: bytes | None, scratch_url: str | None = None) -> VerifyResult:
    """Check ``archive`` as the module says; BackupError only when it is no backup at all."""
    manifest = read_manifest(archive)
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="rhip-verify-") as tmp:
        folder = Path(tmp)
        bad = unpack(archive, manifest, folder / "archive")
        checks.extend(Check(name, "SM3 digest", False, "does not match the manifest") for name in bad)
        good = len(manifest.members) - len(set(bad) & set(manifest.members))
        summary = f"{good} of {len(manifest.members)} members match"
        checks.append(Check(", ".join(bad) or "*", "SM3 digests", not bad, summary))
        keys_dir = _keys_check(manifest, folder, passphrase, checks)
        store = STORE_MEMBERS[manifest.backend]
        if store in bad:
            checks.append(Check(store, "snapshot", False, "not opened: its digest does not match"))
        else:
            with _snapshot_engine(manifest, folder / "archive" / store, scratch_url, checks) as engine:
                if engine is not None:
                    checks.extend(_store_checks(engine, manifest, store))
                    if keys_dir is not None:
                        checks.append(_sample_check(engine, keys_dir, store))
    return VerifyResult(manifest, checks)


def _keys_check(
    manifest: Manifest, folder: Path, passphrase: bytes | None, checks: list[Check]
) -> Path | None:
    """Open the sealed keys into ``folder/opened``; the folder, or None when they were not opened."""
    if manifest.keys_seal is None:
        checks.append(Check(KEYS_MEMBER, "keys", None, "backup made with --without-keys"))
        return None
    if passphrase is None:
        checks.append(Check(KEYS_MEMBER, "keys", None, "not opened: no passphrase given"))
        return None
    sealed = folder / "archive" / KEYS_MEMBER
    if not sealed.is_file():
        checks.append(Check(KEYS_MEMBER, "keys", False, "missing from the archive"))
        return None
    try:
        files = open_keys(sealed.read_bytes(), manifest.keys_seal, passphrase)
        write_keys(files, folder / "opened")
    except RhipError as exc:
        checks.append(Check(KEYS_MEMBER, "keys", False, exc.diagnostics))
        return None
    checks.append(Check(KEYS_MEMBER, "keys", True, f"{len(files)} key files open with the passphrase"))
    return folder / "opened"


@contextmanager
def _snapshot_engine(
    manifest: Manifest, path: Path, scratch_url: str | None, checks: list[Check]
) -> Iterator[sa.Engine | None]:
    """An engine on the snapshot (SQLite file, or the dump restored into the scratch database)."""
    member = STORE_MEMBERS[manifest.backend]
    if manifest.backend == "sqlite":
        problem = integrity_problem(path)
        checks.append(Check(member, "integrity", problem is None, problem or "PRAGMA integrity_check: ok"))
        url = f"sqlite:///{path}"
    else:
        try:
            check_postgres_dump(path)
        except RhipError as exc:
            checks.append(Check(member, "pg_restore --list", False, exc.diagnostics))
            yield None
            return
        checks.append(Check(member, "pg_restore --list", True, "the dump's table of contents reads"))
        if scratch_url is None:
            checks.append(Check(member, "contents", None, "not opened: give --scratch-database-url"))
            yield None
            return
        restore_postgres(path, scratch_url)
        url = scratch_url
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _store_checks(engine: sa.Engine, manifest: Manifest, member: str) -> list[Check]:
    """Schema revision, row counts and audit chain of the snapshot against the manifest."""
    from rhip.store.migrations import revisions

    with engine.connect() as conn:
        facts = read_facts(conn)
        chain = walk_chain(conn)
    known = {revision for revision, _ in revisions()}
    revision_ok = facts.schema_revision in known and facts.schema_revision == manifest.schema_revision
    head_ok = chain.ok and (chain.checked, chain.head_hash) == (manifest.audit_seq, manifest.audit_hash)
    if chain.ok:
        chain_detail = f"{chain.checked} entries verified (SM3), head hash {chain.head_hash}"
        if not head_ok:
            chain_detail += (
                f"; the manifest recorded {manifest.audit_seq} entries, head {manifest.audit_hash}"
            )
    else:
        chain_detail = f"broken at entry {chain.first_bad}: {chain.reason}"
    counts = ", ".join(f"{name} {n}" for name, n in sorted(facts.counts.items()))
    return [
        Check(
            member,
            "schema revision",
            revision_ok,
            _revision_detail(facts.schema_revision, manifest, known),
        ),
        Check(member, "row counts", facts.counts == manifest.counts, counts),
        Check(member, "audit chain", head_ok, chain_detail),
    ]


def _revision_detail(revision: str | None, manifest: Manifest, known: set[str]) -> str:
    if revision not in known:
        return f"{revision}: not a revision RHIP {__version__} knows (made by a newer RHIP?)"
    return f"{revision} (manifest {manifest.schema_revision})"


def _sample_check(engine: sa.Engine, keys_dir: Path, member: str) -> Check:
    """Decrypt up to SAMPLE_SIZE encrypted person bodies with the opened keys; pseudonyms must match."""
    from rhip.security import fields
    from rhip.security.crypto import FieldCipher
    from rhip.security.keys import KeyRing
    from rhip.store.fieldcrypt import FieldCrypt
    from rhip.store.schema import resource

    cipher = FieldCipher(KeyRing(keys_dir))
    crypt, done = FieldCrypt(cipher, protect_writes=False), 0
    query = (
        sa.select(resource.c.res_type, resource.c.res_id, resource.c.body)
        .where(resource.c.res_type.in_(sorted(fields.PROTECTED_TYPES)), resource.c.deleted.is_(False))
        .order_by(resource.c.res_type, resource.c.res_id)
        .limit(SAMPLE_SCAN)
    )
    with engine.connect() as conn:
        for res_type, res_id, body in conn.execute(query):
            body = bytes(body)
            if done >= SAMPLE_SIZE or fields.TOKEN_PREFIX.encode() not in body:
                continue
            try:
                plain = crypt.loads(body)
            except RhipError as exc:
                return Check(member, "encrypted fields", False, f"{res_type}/{res_id}: {exc.diagnostics}")
            # the HMAC key is what MPI blocking and exact search rely on: every pseudonym must be its
            if None in fields.pseudonym_versions(orjson.loads(body), plain, cipher.hmac_keys()):
                return Check(
                    member, "encrypted fields", False, f"{res_type}/{res_id}: HMAC pseudonym differs"
                )
            done += 1
    if not done:
        return Check(member, "encrypted fields", None, "no encrypted person record in the snapshot")
    return Check(member, "encrypted fields", True, f"{done} encrypted person records decrypt with the keys")
