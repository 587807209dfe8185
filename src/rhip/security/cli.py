"""``rhip audit ...``, ``rhip users ...`` and ``rhip keys ...``: the operator's side of security."""

from __future__ import annotations

import os
import secrets
from typing import Any

import typer

audit_app = typer.Typer(help="The SM3-chained audit trail.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts of people and systems.", no_args_is_help=True)
keys_app = typer.Typer(help="SM4 field keys, JWT signing keys and HMAC keys.", no_args_is_help=True)


def _engine() -> Any:
    from rhip.config import get_settings
    from rhip.store import Store

    return Store.from_settings(get_settings()).engine


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the audit chain; exit 1 and name the first tampered entry when it does not hold."""
    from rhip.security.audit import verify_chain

    report = verify_chain(_engine())
    if report.ok:
        typer.echo(f"audit chain intact: {report.checked} entries verified (SM3)")
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
    username: str = typer.Argument(...),
    role: str = typer.Option(
        ...,
        help="resident, practitioner, facility_admin, public_health, insurance_auditor, researcher, "
        "platform_admin or system",
    ),
    patient: str | None = typer.Option(None, help="Patient id (residents)."),
    practitioner: str | None = typer.Option(None, help="Practitioner id."),
    organization: str | None = typer.Option(None, help="Organization id."),
    area: str | None = typer.Option(None, help="Area code (public health)."),
) -> None:
    """Create an account; the secret is read from RHIP_NEW_SECRET or generated and printed once."""
    from rhip.security.users import Account, create_account

    secret = os.environ.get("RHIP_NEW_SECRET") or secrets.token_urlsafe(12)
    kind = "system" if role == "system" else "person"
    create_account(
        _engine(), Account(username, kind, role, patient, practitioner, organization, area), secret
    )
    typer.echo(
        f"{username}\t{role}\t{secret if not os.environ.get('RHIP_NEW_SECRET') else '(from RHIP_NEW_SECRET)'}"
    )


@users_app.command("list")
def users_list() -> None:
    """List accounts (never secrets)."""
    from rhip.security.users import list_accounts

    for acc in list_accounts(_engine()):
        binding = f"patient={acc.patient_id or '-'}\torg={acc.organization_id or '-'}"
        typer.echo(f"{acc.username}\t{acc.kind}\t{acc.role}\t{binding}")


@users_app.command("create-demo")
def users_create_demo() -> None:
    """Create one demo account per role bound to records found in the store; print the credentials.

    Passwords are random unless RHIP_DEMO_PASSWORD is set. Existing demo accounts are replaced.
    """
    from rich.console import Console
    from rich.table import Table

    from rhip.security.demo import create_demo_accounts

    rows = create_demo_accounts(_engine(), os.environ.get("RHIP_DEMO_PASSWORD"))
    table = Table(title="RHIP demo accounts (token endpoint: POST /auth/token)")
    for col in ("username", "role", "grant", "secret", "bound to"):
        table.add_column(col)
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
    typer.echo(f"{kind} key rotated to version {version}")


def register(app: typer.Typer) -> None:
    """Add the audit, users and keys command groups."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
