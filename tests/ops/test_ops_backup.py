"""`rhip backup create|verify|restore` on real stores, real files and the real PostgreSQL server.

A backup made while the platform writes is one consistent moment; it verifies; a tampered member,
a wrong passphrase and a non-empty target are refused by name; restored elsewhere, the platform
reads the same records (encrypted fields included) and its audit chain verifies.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rhip.fhir.identifiers import make_citizen_id
from rhip.fhir.systems import CITIZEN_ID
from rhip.ops import snapshot as snapshot_module
from rhip.ops.archive import read_manifest
from rhip.ops.snapshot import integrity_problem, sqlite_facts
from rhip.security.audit import AuditRecord, append, iter_entries, record_now
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.engine import write_transaction
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.ops import Ops
from rhip_testkit import new_pg_database

PASSPHRASE = "correct horse battery staple 马"
CITIZEN_IDS = [make_citizen_id("330102", date(1970 + i, 3, 9), 20 + i, "male") for i in range(3)]


def rhip(data_dir: Path, db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the `rhip` command line in a child process on this data directory and store."""
    full = {k: v for k, v in os.environ.items() if k != "RHIP_BACKUP_PASSPHRASE"}
    # wide enough that no table cell wraps, whatever the length of the temporary paths
    full.update(RHIP_DATA_DIR=str(data_dir), RHIP_DATABASE_URL=db_url, COLUMNS="250", **env)
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


def patient(i: int) -> dict[str, Any]:
    """A Patient whose citizen ID and phone the store encrypts."""
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "identifier": [{"system": CITIZEN_ID, "value": CITIZEN_IDS[i]}],
        "name": [{"family": "陈", "given": ["静"]}],
        "telecom": [{"system": "phone", "value": f"1390000000{i}"}],
    }


def open_store(data_dir: Path, db_url: str) -> Store:
    """The store as the platform opens it: field keys under ``data_dir/keys``."""
    return Store(db_url, fields=FieldCrypt(FieldCipher(KeyRing(data_dir))))


@pytest.fixture
def platform(tmp_path: Path, db_url: str) -> Iterator[tuple[Path, str]]:
    """A data directory with encrypted patients, an audit chain, an MPI model file and a lake file."""
    data_dir = tmp_path / "data"
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    store = open_store(data_dir, db_url)
    try:
        for i in range(len(CITIZEN_IDS)):
            store.update("Patient", f"p{i}", patient(i))
        for i in range(5):
            record_now(
                store.engine, AuditRecord("ops-admin", "platform_admin", "read", "0", patients=[f"p{i}"])
            )
    finally:
        store.close()
    (data_dir / "mpi").mkdir()
    (data_dir / "mpi" / "model.json").write_text('{"m": [0.9, 0.1]}', encoding="utf-8")
    (data_dir / "lake" / "views").mkdir(parents=True)
    (data_dir / "lake" / "views" / "patient.parquet").write_bytes(b"PAR1 not really")
    yield data_dir, db_url


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n", encoding="utf-8")
    return path


@pytest.fixture
def archive(platform: tuple[Path, str], passphrase_file: Path, tmp_path: Path) -> Path:
    """A backup of ``platform`` made by `rhip backup create` with the passphrase."""
    out = tmp_path / "backup.tar"
    done = rhip(*platform, "backup", "create", str(out), "--passphrase-file", str(passphrase_file))
    assert done.returncode == 0, done.stderr
    return out


def restore_elsewhere(
    platform: tuple[Path, str], archive: Path, new_dir: Path, passphrase_file: Path
) -> subprocess.CompletedProcess[str]:
    """`rhip backup restore` into ``new_dir`` (and an empty PostgreSQL database for a PostgreSQL platform)."""
    with _restore_target(platform[1]) as new_url:
        args = ["--database-url", new_url] if new_url else []
        return rhip(*platform, "backup", "restore", str(archive), "--data-dir", str(new_dir),
                    "--passphrase-file", str(passphrase_file), *args)  # fmt: skip


def test_round_trip_restores_a_platform_that_reads_the_same(
    platform: tuple[Path, str], archive: Path, passphrase_file: Path, tmp_path: Path
) -> None:
    data_dir, db_url = platform
    out = archive
    manifest = read_manifest(out)
    assert manifest.audit_seq == 5 and manifest.counts["resource"] == 3
    traced = open_store(data_dir, db_url)
    try:  # the backup itself is on the live chain, after the head the archive holds
        last_seq, last = list(iter_entries(traced.engine))[-1]
    finally:
        traced.close()
    assert last_seq == 6 and last["action"] == "backup-create" and out.name in last["detail"]
    assert "files/mpi/model.json" in manifest.members and not any("lake" in m for m in manifest.members)
    with _restore_target(db_url) as scratch_url:  # a PostgreSQL dump is opened in a scratch database
        args = ["--scratch-database-url", scratch_url] if scratch_url else []
        checked = rhip(
            *platform, "backup", "verify", str(out), "--passphrase-file", str(passphrase_file), *args
        )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "3 encrypted person records decrypt" in checked.stdout and "skipped" not in checked.stdout

    new_dir = tmp_path / "elsewhere"
    with _restore_target(db_url) as new_url:
        args = ["--database-url", new_url] if new_url else []
        restored = rhip(
            tmp_path, db_url, "backup", "restore", str(out), "--data-dir", str(new_dir), *args,
            RHIP_BACKUP_PASSPHRASE=PASSPHRASE,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        new_url = new_url or f"sqlite:///{new_dir / 'rhip.sqlite'}"
        original, copy = open_store(data_dir, db_url), open_store(new_dir, new_url)
        try:
            for i in range(len(CITIZEN_IDS)):
                assert copy.read("Patient", f"p{i}") == original.read("Patient", f"p{i}")
            assert copy.read("Patient", "p0")["identifier"][0]["value"] == CITIZEN_IDS[0]
        finally:
            original.close()
            copy.close()
        audit = rhip(new_dir, new_url, "audit", "verify")
        assert audit.returncode == 0 and f"head hash {manifest.audit_hash}" in audit.stdout, audit.stdout
    assert (new_dir / "mpi" / "model.json").read_text(encoding="utf-8") == '{"m": [0.9, 0.1]}'
    assert not (new_dir / "lake").exists()
    assert (new_dir / "keys" / "sm4" / "v1.key").stat().st_mode & 0o777 == 0o600


class _restore_target:
    """An empty PostgreSQL database for a PostgreSQL platform's restore (None for SQLite)."""

    def __init__(self, db_url: str) -> None:
        self._pg = None if db_url.startswith("sqlite") else new_pg_database("rhip_restore")

    def __enter__(self) -> str | None:
        return self._pg.__enter__() if self._pg else None

    def __exit__(self, *exc: object) -> None:
        if self._pg:
            self._pg.__exit__(*exc)


def test_keys_are_only_in_the_archive_sealed(platform: tuple[Path, str], archive: Path) -> None:
    data = archive.read_bytes()
    key_files = list((platform[0] / "keys").rglob("v*.key"))
    assert key_files
    for key_file in key_files:
        key_hex = key_file.read_text(encoding="ascii").strip()
        assert key_hex.encode() not in data and bytes.fromhex(key_hex) not in data, key_file


def _rewrite_member(archive: Path, name: str) -> None:
    """Flip one byte of a member, keeping its size: what a corrupted or altered copy looks like."""
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(archive, "w") as tar:
        for member, data in members:
            if member.name == name:
                data = data[:-1] + bytes([data[-1] ^ 1])
            tar.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("member", ["files/mpi/model.json", "store/rhip.sqlite", "keys.sealed"])
def test_verify_names_a_tampered_member(
    member: str, platform: tuple[Path, str], archive: Path, passphrase_file: Path, tmp_path: Path
) -> None:
    if not platform[1].startswith("sqlite") and member.startswith("store/"):
        member = "store/rhip.pgdump"
    out = archive
    _rewrite_member(out, member)
    checked = rhip(*platform, "backup", "verify", str(out), "--passphrase-file", str(passphrase_file))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    failed = [line for line in checked.stdout.splitlines() if "FAILED 失败" in line]
    assert failed and all(member in line for line in failed), checked.stdout
    restored = restore_elsewhere(platform, out, tmp_path / "new", passphrase_file)
    assert restored.returncode == 2 and member in restored.stderr, restored.stderr


def test_a_wrong_passphrase_is_named_and_restores_nothing(
    platform: tuple[Path, str], archive: Path, tmp_path: Path
) -> None:
    out = archive
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n", encoding="utf-8")
    checked = rhip(*platform, "backup", "verify", str(out), "--passphrase-file", str(wrong))
    assert checked.returncode == 1 and "passphrase does not open the keys" in checked.stdout, checked.stdout
    new_dir = tmp_path / "new"
    restored = restore_elsewhere(platform, out, new_dir, wrong)
    assert restored.returncode == 2, restored.stderr
    assert "keys.sealed: the passphrase does not open the keys" in restored.stderr
    assert not new_dir.exists() or not any(new_dir.iterdir())


def test_restore_refuses_a_directory_that_is_not_empty(
    platform: tuple[Path, str], archive: Path, passphrase_file: Path, tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "rhip.sqlite").write_bytes(b"a platform already lives here")
    restored = restore_elsewhere(platform, archive, busy, passphrase_file)
    assert restored.returncode == 2 and f"{busy}: not an empty directory" in restored.stderr, restored.stderr
    assert (busy / "rhip.sqlite").read_bytes() == b"a platform already lives here"
    assert sorted(p.name for p in busy.iterdir()) == ["rhip.sqlite"]


def test_create_wants_a_passphrase_unless_told_to_leave_the_keys_out(
    platform: tuple[Path, str], tmp_path: Path
) -> None:
    out = tmp_path / "backup.tar"
    refused = rhip(*platform, "backup", "create", str(out))
    assert refused.returncode == 2 and "RHIP_BACKUP_PASSPHRASE" in refused.stderr and not out.exists()
    made = rhip(*platform, "backup", "create", str(out), "--without-keys", "--with-lake")
    assert made.returncode == 0 and "cannot be read on its own" in made.stderr, made.stderr
    manifest = read_manifest(out)
    assert manifest.keys_seal is None and "keys" in manifest.left_out
    assert not any(name.startswith(("keys", "files/keys")) for name in manifest.members)
    assert "files/lake/views/patient.parquet" in manifest.members and "lake" not in manifest.left_out


@pytest.mark.postgres
def test_postgres_backup_without_pg_dump_says_what_to_install(tmp_path: Path, fresh_pg_url: str) -> None:
    Store(fresh_pg_url).close()
    done = rhip(tmp_path, fresh_pg_url, "backup", "create", str(tmp_path / "b.tar"), "--without-keys",
                PATH=str(Path(sys.executable).parent))  # fmt: skip
    assert (
        done.returncode == 2
        and "pg_dump is not on PATH" in done.stderr
        and "postgresql-client" in done.stderr
    )
    assert not list(tmp_path.glob("b.tar*"))


def test_sqlite_snapshot_is_one_moment_while_a_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write adds one resource, one version and one audit entry: a snapshot taken across
    writes would hold counts that disagree, or a chain whose head is not its last entry."""
    from rhip.ops.backup import BackupPlan, create_backup

    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    store = open_store(data_dir, url)
    padding = "x" * 2000
    store.bulk_write({"resourceType": "Basic", "id": f"b{i}", "code": {"text": padding}} for i in range(3000))
    monkeypatch.setattr(snapshot_module, "SQLITE_STEP_PAGES", 16)  # many steps: writes land between them
    stop, written = threading.Event(), [0]

    def writer() -> None:  # a resource and its audit entry in one transaction, as the API's are not
        while not stop.is_set():
            n = written[0]
            with write_transaction(store.engine) as conn:
                Ops(conn, None).create({"resourceType": "Basic", "id": f"w{n}", "code": {"text": padding}})
                append(conn, [AuditRecord("writer", "system", "create", "0", entities=[f"Basic/w{n}"])])
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:
            threading.Event().wait(0.01)
        before = written[0]
        out = tmp_path / "b.tar"
        create_backup(BackupPlan(data_dir, url, PASSPHRASE.encode()), out)
    finally:
        stop.set()
        thread.join()
        store.close()
    assert written[0] > before, "the writer was not writing while the backup ran"
    with tarfile.open(out) as tar:
        tar.extract("store/rhip.sqlite", tmp_path / "x", filter="data")
    snap = tmp_path / "x" / "store" / "rhip.sqlite"
    assert integrity_problem(snap) is None
    facts = sqlite_facts(snap)
    copied = facts.counts["resource"] - 3000
    assert before <= copied <= written[0]
    assert facts.counts["resource_version"] == facts.counts["resource"]
    assert facts.audit_seq == facts.counts["audit_log"] == copied
    assert read_manifest(out).counts == facts.counts


@pytest.mark.postgres
def test_restore_refuses_a_postgres_database_that_is_not_empty(
    tmp_path: Path, fresh_pg_url: str, passphrase_file: Path
) -> None:
    """A mistyped --database-url naming a live platform's database must not be restored over."""
    data_dir = tmp_path / "data"
    writer = open_store(data_dir, fresh_pg_url)
    writer.update("Patient", "p0", patient(0))
    writer.close()
    out = tmp_path / "b.tar"
    made = rhip(
        data_dir, fresh_pg_url, "backup", "create", str(out), "--passphrase-file", str(passphrase_file)
    )
    assert made.returncode == 0, made.stderr
    new_dir = tmp_path / "new"
    restored = rhip(data_dir, fresh_pg_url, "backup", "restore", str(out), "--data-dir", str(new_dir),
                    "--passphrase-file", str(passphrase_file), "--database-url", fresh_pg_url)  # fmt: skip
    assert restored.returncode == 2 and "the database is not empty" in restored.stderr, restored.stderr
    assert not any(new_dir.iterdir())
    reader = open_store(data_dir, fresh_pg_url)
    try:
        assert reader.read("Patient", "p0")["identifier"][0]["value"] == CITIZEN_IDS[0]
    finally:
        reader.close()


def test_a_backup_kept_in_the_data_directory_is_not_copied_into_the_next(tmp_path: Path) -> None:
    """Backups written under the data directory would otherwise nest, each holding all the earlier ones."""
    from rhip.ops.backup import BackupPlan, create_backup

    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    open_store(data_dir, url).close()
    (data_dir / "notes.txt").write_text("kept", encoding="utf-8")
    (data_dir / "rhip.sqlite.reindex-lock").touch()  # a reindex's lock file is no data either
    plan = BackupPlan(data_dir, url, PASSPHRASE.encode())
    create_backup(plan, data_dir / "backups" / "first.tar")
    second = create_backup(plan, data_dir / "backups" / "second.tar")
    assert sorted(second.members) == ["files/notes.txt", "keys.sealed", "store/rhip.sqlite"]


def test_a_truncated_archive_is_named_as_no_backup(tmp_path: Path) -> None:
    """A copy cut short (a full disk, an interrupted transfer) is refused by name, without a traceback."""
    from rhip.ops.backup import BackupPlan, create_backup

    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    open_store(data_dir, url).close()
    out = tmp_path / "b.tar"
    create_backup(BackupPlan(data_dir, url, None), out)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    checked = rhip(data_dir, url, "backup", "verify", str(out))
    assert checked.returncode == 2 and f"{out}: not a backup archive" in checked.stderr, checked.stderr


def test_scrypt_cost_from_a_manifest_is_bounded() -> None:
    """A manifest is input: an archive asking scrypt for terabytes of memory is refused, not run."""
    from rhip.ops.archive import BackupError
    from rhip.ops.keyseal import open_keys

    params = {"n": 2**40, "r": 8, "p": 1, "salt": "00" * 16}
    with pytest.raises(BackupError, match="scrypt parameters out of range"):
        open_keys(b"\0" * 64, params, b"passphrase")


def test_the_archive_is_readable_by_its_owner_only(archive: Path) -> None:
    """Regression: the archive (the whole store, most of it in clear) was created with the umask's
    mode, 0644 here: any local user could copy a region's health records."""
    assert archive.stat().st_mode & 0o777 == 0o600
