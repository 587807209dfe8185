"""``rhip backup create|verify|restore``: the operator's backup of a whole platform, keys included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rhip.ops.archive import Manifest, OnProgress
    from rhip.ops.verify import VerifyResult

backup_app = typer.Typer(
    help="Back up a platform (store, sealed keys, files), verify a backup, restore it elsewhere.",
    no_args_is_help=True,
)

_PASSPHRASE_HELP = (
    "File whose first line is the passphrase that seals the keys (default: RHIP_BACKUP_PASSPHRASE)."
)


def _passphrase(passphrase_file: Path | None) -> bytes | None:
    """The passphrase from the file given, else from the settings; None when there is none."""
    from rhip.config import get_settings
    from rhip.ops.archive import BackupError

    if passphrase_file is not None:
        try:
            lines = passphrase_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BackupError(
                f"{passphrase_file}: cannot read the passphrase file ({exc.strerror})"
            ) from None
        if not lines or not lines[0]:
            raise BackupError(f"{passphrase_file}: the first line (the passphrase) is empty")
        return lines[0].encode("utf-8")
    secret = get_settings().backup_passphrase
    return secret.get_secret_value().encode("utf-8") if secret and secret.get_secret_value() else None


@contextmanager
def _progress_bar() -> Iterator[OnProgress]:
    """A rich progress bar with one line per stage (snapshot, archiving), as a progress callback."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = int(bar.add_task(stage, total=total or None))
            bar.update(tasks[stage], completed=done, total=total or None)  # type: ignore[arg-type]

        yield report


@backup_app.command("create")
def create(
    out: Path = typer.Argument(..., help="Archive to write (a tar; must not exist yet)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=_PASSPHRASE_HELP),
    without_keys: bool = typer.Option(
        False, "--without-keys", help="Leave the keys out (the backup then cannot be read on its own)."
    ),
    with_lake: bool = typer.Option(
        False,
        "--with-lake",
        help="Include the Parquet lake (left out by default: `rhip export` rebuilds it).",
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Write a consistent backup of the store, the sealed keys and the data directory's files.

    Safe while the platform runs. Needs a passphrase for the keys unless --without-keys.
    """
    from rhip.config import get_settings
    from rhip.ops.archive import BackupError
    from rhip.ops.backup import BackupPlan, create_backup

    settings = get_settings()
    passphrase = None if without_keys else _passphrase(passphrase_file)
    if passphrase is None and not without_keys:
        raise BackupError(
            "the keys go into a backup sealed with a passphrase: give --passphrase-file or set "
            "RHIP_BACKUP_PASSPHRASE (or --without-keys for a backup that cannot be read on its own)"
        )
    if without_keys:
        typer.echo(
            "warning: --without-keys: this backup cannot be read on its own; keep a copy of "
            f"{settings.data_dir / 'keys'} to restore it with",
            err=True,
        )
    plan = BackupPlan(
        settings.data_dir, database_url or settings.resolved_database_url, passphrase, with_lake
    )
    with _progress_bar() as report:
        manifest = create_backup(plan, out, report)
    _audit_backup(plan.database_url, out, manifest)
    _print_manifest(out, manifest)


def _audit_backup(database_url: str, out: Path, manifest: Manifest) -> None:
    """Put the backup on the audit chain: an archive of every record is an access worth a trace.

    Appended after the snapshot, so the head the manifest recorded is this entry's predecessor.
    """
    from rhip.security.audit import operator_record, record_now
    from rhip.store.engine import make_engine

    keys = "keys sealed" if manifest.keys_seal else "without keys"
    detail = f"backup {out.name}: {len(manifest.members)} members, {keys}, audit head {manifest.audit_seq}"
    engine = make_engine(database_url)
    try:
        record_now(engine, operator_record("backup-create", detail))
    finally:
        engine.dispose()


def _print_manifest(out: Path, manifest: Manifest) -> None:
    from rich.console import Console

    from rhip.tables import compact_table

    table = compact_table(f"备份 backup {out}")
    table.add_column("成员 member")
    table.add_column("大小 bytes", justify="right")
    table.add_column("SM3", overflow="fold")
    for name, facts in sorted(manifest.members.items()):
        table.add_row(name, f"{facts['size']:,}", str(facts["sm3"])[:16] + "…")
    console = Console()
    console.print(table)
    console.print(
        f"schema revision {manifest.schema_revision}; audit chain head {manifest.audit_seq} entries, "
        f"hash {manifest.audit_hash}"
    )
    for name, why in sorted(manifest.left_out.items()):
        console.print(f"not in the backup: {name} — {why}", markup=False)


@backup_app.command("verify")
def verify(
    archive: Path = typer.Argument(..., help="Backup archive made by `rhip backup create`."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=_PASSPHRASE_HELP),
    scratch_database_url: str | None = typer.Option(
        None,
        "--scratch-database-url",
        help="Empty PostgreSQL database to restore a PostgreSQL backup into for the checks.",
    ),
) -> None:
    """Check digests, snapshot, schema revision, audit chain and (with the passphrase) the keys.

    Exit 1 when any check fails; each failing line names its member.
    """
    from rhip.ops.verify import verify_backup

    result = verify_backup(archive, _passphrase(passphrase_file), scratch_database_url)
    _print_checks(archive, result)
    if not result.ok:
        raise typer.Exit(1)


def _print_checks(archive: Path, result: VerifyResult) -> None:
    from rich.console import Console

    from rhip.tables import compact_table

    table = compact_table(f"备份校验 backup verify {archive} ({result.manifest.created})")
    for label in ("成员 member", "检查 check", "结果 result", "说明 detail"):
        table.add_column(label, overflow="fold")
    marks = {True: "ok 通过", False: "FAILED 失败", None: "skipped 跳过"}
    for check in result.checks:
        table.add_row(check.member, check.what, marks[check.ok], check.detail)
    console = Console()
    console.print(table)
    console.print("backup verified" if result.ok else "backup verification FAILED")


@backup_app.command("restore")
def restore(
    archive: Path = typer.Argument(..., help="Backup archive made by `rhip backup create`."),
    data_dir: Path = typer.Option(..., "--data-dir", help="New or empty directory to restore into."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=_PASSPHRASE_HELP),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Empty PostgreSQL database to restore a PostgreSQL backup into."
    ),
) -> None:
    """Restore a backup into an empty directory (and an empty PostgreSQL database); never overwrites."""
    from sqlalchemy.engine import make_url

    from rhip.ops.restore import restore_backup

    manifest = restore_backup(archive, data_dir, _passphrase(passphrase_file), database_url)
    typer.echo(f"restored {len(manifest.members)} members into {data_dir.resolve()}")
    if manifest.keys_seal is None:
        typer.echo(
            f"warning: the backup holds no keys: put the original key folder at {data_dir / 'keys'}", err=True
        )
    where = f"RHIP_DATA_DIR={data_dir.resolve()}"
    if database_url:
        where += " RHIP_DATABASE_URL=" + make_url(database_url).render_as_string(hide_password=True)
    typer.echo(f"serve it with {where}; then run `rhip db upgrade` and `rhip audit verify`")


def register(app: typer.Typer) -> None:
    """Add the ``backup`` command group to the ``rhip`` app."""
    app.add_typer(backup_app, name="backup")
