"""``rhip audit ...``, ``rhip users ...`` and ``rhip keys ...``: the operator's side of security."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import typer

audit_app = typer.Typer(help="The SM3-chained audit trail.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts of people and systems.", no_args_is_help=True)
keys_app = typer.Typer(help="SM4 field keys, JWT signing keys and HMAC keys.", no_args_is_help=True)


def _policy_change(action: str, detail: str) -> None:
    """Write an account or key change to the audit chain (actor: the operating-system user)."""
    from rhip.security.audit import operator_record, record_now

    record_now(_engine(), operator_record(action, detail))


def _engine() -> Any:
    from rhip.config import get_settings
    from rhip.store import Store

    return Store.from_settings(get_settings()).engine


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the audit chain; exit 1 and name the first tampered entry when it does not hold.

    An intact chain's head is recorded in the data directory (audit-verified.json), so
    rhip status can tell when events have been appended since.
    """
    from rhip.config import get_settings
    from rhip.security.audit import verify_chain
    from rhip.security.audit_checks import record_verified

    report = verify_chain(_engine())
    if report.ok:
        record_verified(get_settings().data_dir, report.checked, report.head_hash or "")
        typer.echo(
            f"audit chain intact: {report.checked} entries verified (SM3), head hash {report.head_hash}"
        )
        return
    typer.echo(
        f"audit chain BROKEN at entry {report.first_bad}: {report.reason} "
        f"({report.checked} entries verified before it)"
    )
    raise typer.Exit(1)


@audit_app.command("review")
def audit_review() -> None:
    """List break-the-glass accesses for review."""
    from rhip.security.audit import iter_entries

    for seq, entry in iter_entries(_engine(), break_glass_only=True):
        patients = ",".join(entry.get("patients", []))
        typer.echo(
            f"{seq}\t{entry.get('actor')}\t{entry.get('action')}\t{patients}\t{entry.get('detail', '')}"
        )


@users_app.command("add")
def users_add(
    username: str = typer.Argument(..., help="Login name (a system account: its client_id)."),
    role: str = typer.Option(
        ...,
        help="resident, practitioner, facility_admin, public_health, insurance_auditor, researcher, "
        "platform_admin or system",
    ),
    patient: str | None = typer.Option(None, help="Patient id (required for residents)."),
    practitioner: str | None = typer.Option(None, help="Practitioner id."),
    organization: str | None = typer.Option(None, help="Organization id."),
    area: str | None = typer.Option(None, help="Area code (public health)."),
) -> None:
    """Create an account; the secret is read from RHIP_NEW_SECRET or generated and printed once."""
    from rhip.security.users import Account, create_account

    if role == "resident" and not (patient or "").strip():
        raise typer.BadParameter(
            "a resident account must be bound to its Patient: give --patient <Patient id>",
            param_hint="'--patient'",
        )
    secret = os.environ.get("RHIP_NEW_SECRET") or secrets.token_urlsafe(12)
    kind = "system" if role == "system" else "person"
    create_account(
        _engine(), Account(username, kind, role, patient, practitioner, organization, area), secret
    )
    _policy_change("account-create", f"{username} as {role}")
    # It printed "name<TAB>role<TAB>secret": nothing said which field was the secret, nor that it
    # is shown only this once (the table keeps a scrypt hash).
    grant = "client_credentials (client_id = the username)" if kind == "system" else "password"
    shown = (
        "the one in RHIP_NEW_SECRET"
        if os.environ.get("RHIP_NEW_SECRET")
        else f"{secret} (shown only now; keep it, it is stored hashed)"
    )
    typer.echo(f"account {username} created, role {role}, POST /auth/token with {grant}; secret: {shown}")


_ACCOUNT_COLUMNS = ("username", "kind", "role", "patient", "practitioner", "organization", "area")


@users_app.command("list")
def users_list() -> None:
    """List accounts and what each is bound to (patient, practitioner, organisation, area), tab-separated
    under a header row; never secrets."""
    from rhip.security.users import list_accounts

    typer.echo("\t".join(_ACCOUNT_COLUMNS))
    for acc in list_accounts(_engine()):
        typer.echo("\t".join(str(getattr(acc, _field(col)) or "-") for col in _ACCOUNT_COLUMNS))


def _field(column: str) -> str:
    """The Account attribute of a ``users list`` column (bindings are stored as ``<name>_id``)."""
    return f"{column}_id" if column in ("patient", "practitioner", "organization") else column


@users_app.command("create-demo")
def users_create_demo() -> None:
    """Create one demo account per role bound to records found in the store; print the credentials.

    Passwords are random unless RHIP_DEMO_PASSWORD is set. Existing demo accounts are replaced.
    """
    from rich.console import Console

    from rhip.security.demo import create_demo_accounts
    from rhip.tables import compact_table

    rows = create_demo_accounts(_engine(), os.environ.get("RHIP_DEMO_PASSWORD"))
    _policy_change("account-create", f"{len(rows)} demo accounts")
    table = compact_table("RHIP demo accounts 演示账号 (token endpoint: POST /auth/token)")
    for col in ("username\n用户名", "role\n角色", "grant\n授权方式", "secret\n密码", "bound to\n绑定"):
        # what is typed at the token endpoint wraps on a narrow terminal, it is never cut short
        table.add_column(col, overflow="fold", no_wrap=col.startswith(("username", "secret")))
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@keys_app.command("rotate")
def keys_rotate(kind: str = typer.Argument(..., help="sm4, jwt or hmac")) -> None:
    """Add a new key version; new data/tokens use it, old versions stay readable."""
    from rhip.config import get_settings
    from rhip.security.keys import KEY_KINDS, KeyRing

    if kind not in KEY_KINDS:
        raise typer.BadParameter(f"kind must be one of {', '.join(KEY_KINDS)}")
    version = KeyRing(get_settings().data_dir).rotate(kind)
    _policy_change("key-rotate", f"{kind} v{version}")
    typer.echo(f"{kind} key rotated to version {version}")


@keys_app.command("reencrypt")
def keys_reencrypt(
    force: bool = typer.Option(
        False,
        "--force",
        help="Rewrite every FHIR body, also those already under the newest keys.",
    ),
    batch_size: int = typer.Option(500, "--batch-size", help="FHIR bodies per transaction."),
    mpi_batch_size: int = typer.Option(
        2000, "--mpi-batch-size", min=1, help="MPI rows per page (one bulk write transaction each)."
    ),
) -> None:
    """Re-encrypt stored citizen IDs and phone numbers under the newest keys, protect plaintext rows.

    Covers the FHIR bodies (current and history) and the master patient index. Run after
    `rhip keys rotate sm4` or `hmac` and after switching field encryption on for a store written
    before; a run stopped half-way is finished by running it again. Then `rhip keys status` shows
    which old key versions may be archived.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rhip.config import get_settings
    from rhip.mpi import rekey
    from rhip.store import Store
    from rhip.store.reencrypt import reencrypt, rows_to_examine

    store = Store.from_settings(get_settings())
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as bar:
            fhir = bar.add_task("re-encrypting person resources", total=rows_to_examine(store))
            mpi = bar.add_task("re-encrypting MPI rows", total=rekey.rows_to_examine(store.engine))
            result = reencrypt(
                store, force=force, batch_size=batch_size, on_rows=lambda n: bar.advance(fhir, n)
            )
            linked = rekey.reencrypt_mpi(
                store, batch_size=mpi_batch_size, on_rows=lambda n: bar.advance(mpi, n)
            )
    finally:
        store.close()
    mpi_detail = (
        f"MPI rows: {linked.resealed} re-sealed, {linked.reencrypted} re-encrypted, {linked.missing} missing"
    )
    _policy_change(
        "key-reencrypt", f"{result.current} current rows, {result.versions} versions; {mpi_detail}"
    )
    typer.echo(
        f"re-encrypted {result.current} current resources and {result.versions} history versions "
        f"({result.skipped} already under the newest key)"
    )
    typer.echo(f"{mpi_detail} ({linked.skipped} already under the newest keys)")
    if linked.missing:
        typer.echo(
            "missing: MPI rows whose source Patient is not in the store (`rhip link --all` drops them)"
        )


#: Column labels of `rhip keys status` (Chinese and English) and whether they hold numbers.
_STATUS_COLUMNS = (
    ("kind\n密钥", False),
    ("version\n版本", True),
    ("file\n文件", False),
    ("bodies\n资源", True),
    ("history\n历史", True),
    ("MPI rows\nMPI 行", True),
    ("left\n剩余", True),
    ("verdict\n结论", False),
)


@keys_app.command("status")
def keys_status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
) -> None:
    """Key versions per kind, the current one, and the stored rows still using each.

    Counts FHIR bodies (current and history) and MPI rows per sm4 and hmac version, so an old
    version with 0 left may be archived. jwt versions sign tokens that expire within an hour.
    """
    import json

    from rich.console import Console

    from rhip.config import get_settings
    from rhip.security.rotation import PLACES, VERDICT_ZH, key_status
    from rhip.store import Store
    from rhip.tables import compact_table

    with Store.from_settings(get_settings()) as store:
        statuses = key_status(store)
    if as_json:
        typer.echo(json.dumps([s.as_json() for s in statuses], ensure_ascii=False, indent=2))
        return
    table = compact_table("Key versions and the stored values still using them (密钥版本与使用情况)")
    for label, numeric in _STATUS_COLUMNS:
        table.add_column(label, justify="right" if numeric else "left", no_wrap=label.startswith("verdict"))
    for s in statuses:
        counts = ["-"] * len(PLACES) if s.counts is None else [f"{s.counts[p]:,}" for p in PLACES]
        version = "clear" if s.version is None else f"v{s.version}"
        table.add_row(
            s.kind,
            version,
            "yes" if s.on_disk else "no",
            *counts,
            "-" if s.left is None else f"{s.left:,}",
            f"{VERDICT_ZH[s.verdict]} {s.verdict}",
        )
    Console().print(table)


@keys_app.command("sm2-generate")
def keys_sm2_generate(
    out: Path = typer.Option(..., help="Folder for sm2.key (private, 0600) and sm2.pub."),
) -> None:
    """Generate an SM2 key pair for a practitioner's document signatures."""
    from rhip.security.crypto import sm2_generate

    pair = sm2_generate()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / "sm2.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(pair.private)
    (out / "sm2.pub").write_text(pair.public, encoding="ascii")
    typer.echo(f"public key: {pair.public}")


@keys_app.command("sign-document")
def keys_sign_document(
    document: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="DocumentReference or Composition JSON file."
    ),
    key: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="sm2.key file made by `rhip keys sm2-generate`."
    ),
    signer: str = typer.Option(..., help="Reference of the signer, e.g. Practitioner/123."),
) -> None:
    """Print a Provenance carrying the SM2 signature of a document."""
    import orjson

    from rhip.security.crypto import SM2KeyPair, sm2_public_from_private
    from rhip.security.signing import sign_document

    private = key.read_text("ascii", errors="replace").strip()
    resource = _json_file(document)
    try:
        pair = SM2KeyPair(private, sm2_public_from_private(private))
    except ValueError:
        raise typer.BadParameter(f"{key} holds no SM2 private key", param_hint="--key") from None
    provenance = sign_document(resource, pair, signer)
    typer.echo(orjson.dumps(provenance, option=orjson.OPT_INDENT_2).decode("utf-8"))


@keys_app.command("verify-document")
def keys_verify_document(
    document: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="DocumentReference or Composition JSON file."
    ),
    provenance: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Provenance JSON file with the signature."
    ),
    public_key: str = typer.Option(..., help="The signer's SM2 public key (hex) or a sm2.pub file."),
) -> None:
    """Exit 0 when the signature holds, 1 when it does not."""

    from rhip.security.signing import verify_document

    key_text = Path(public_key).read_text("ascii").strip() if Path(public_key).is_file() else public_key
    try:
        bytes.fromhex(key_text)
    except ValueError:
        raise typer.BadParameter(
            "neither an SM2 public key in hex nor a sm2.pub file", param_hint="--public-key"
        ) from None
    ok = verify_document(_json_file(document), _json_file(provenance), key_text)
    typer.echo("signature valid" if ok else "signature INVALID")
    if not ok:
        raise typer.Exit(1)


def _json_file(path: Path) -> Any:
    """The JSON document of a file; one that does not parse is named with the parser's reason."""
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}") from None


def register(app: typer.Typer) -> None:
    """Add the audit, users and keys command groups."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
