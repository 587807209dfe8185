"""Users (people) and clients (systems) who may obtain tokens, with scrypt-hashed secrets.

Roles are fixed names (see :data:`rhip.security.policy.ROLES`); a resident is bound to their
Patient id, a practitioner to their Practitioner and Organization, a public-health officer to an
area code. Secrets are never stored, only ``scrypt$n$r$p$salt$hash``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from rhip.errors import InvalidRequest, Unauthorized
from rhip.security.crypto import constant_time_equal
from rhip.security.schema import ensure_schema, rhip_user
from rhip.store.engine import write_transaction

logger = logging.getLogger(__name__)
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class Account:
    """A user or system client as the policy sees it."""

    username: str
    kind: str
    role: str
    patient_id: str | None = None
    practitioner_id: str | None = None
    organization_id: str | None = None
    area: str | None = None
    public_key: str | None = None


def hash_secret(secret: str) -> str:
    """scrypt hash of a password or client secret."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches a hash made by :func:`hash_secret`."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            secret.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return constant_time_equal(base64.b64encode(got).decode(), digest)


def create_account(engine: sa.Engine, account: Account, secret: str, *, replace: bool = False) -> None:
    """Store an account with its hashed secret (``replace`` overwrites an existing one).

    Raises InvalidRequest for an unknown role, a resident account without its Patient, or an
    existing username (unless ``replace``).
    """
    from rhip.security.policy import ROLES

    if account.role not in ROLES:
        raise InvalidRequest(f"role: unknown role '{account.role}' (known: {', '.join(sorted(ROLES))})")
    if account.role == "resident" and not (account.patient_id or "").strip():
        # a resident reads only their own records: unbound, the account could read nothing (or,
        # under a policy change, everything), so it is refused rather than created
        raise InvalidRequest("patient_id: a resident account must be bound to its Patient")
    ensure_schema(engine)
    values = dict(account.__dict__, secret_hash=hash_secret(secret), active=True)
    # a write transaction from its first statement: on SQLite a read that turns into a write fails
    # at once ("database is locked") when another writer committed in between, busy timeout or not
    with write_transaction(engine) as conn:
        exists = conn.execute(
            sa.select(rhip_user.c.username).where(rhip_user.c.username == account.username)
        ).first()
        if exists and not replace:
            raise InvalidRequest(f"username: '{account.username}' already exists")
        if exists:
            conn.execute(sa.delete(rhip_user).where(rhip_user.c.username == account.username))
        conn.execute(sa.insert(rhip_user).values(**values))


def authenticate(engine: sa.Engine, username: str, secret: str, *, kind: str) -> Account:
    """The account when the secret matches; Unauthorized otherwise (same message either way)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(rhip_user).where(rhip_user.c.username == username)).mappings().first()
    if (
        row is None
        or not row["active"]
        or row["kind"] != kind
        or not check_secret(secret, row["secret_hash"])
    ):
        raise Unauthorized("invalid credentials")
    return Account(**{k: row[k] for k in Account.__dataclass_fields__})


def get_account(engine: sa.Engine, username: str) -> Account | None:
    """One account by name, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(rhip_user).where(rhip_user.c.username == username)).mappings().first()
    return None if row is None else Account(**{k: row[k] for k in Account.__dataclass_fields__})


def list_accounts(engine: sa.Engine) -> list[Account]:
    """Every account (without secrets)."""
    ensure_schema(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rhip_user).order_by(rhip_user.c.username)).mappings().all()
    return [Account(**{k: r[k] for k in Account.__dataclass_fields__}) for r in rows]
