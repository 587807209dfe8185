"""JWT bearer tokens: issue and verify, signed with the versioned key ring (``kid`` = key version).

Tokens are HS256 JWTs signed with a 256-bit key under ``<data_dir>/keys/jwt``; rotating the key
(``rhip keys rotate jwt``) signs new tokens with the new version while tokens of older versions
stay valid until they expire. An external identity provider can replace the issuer: the API only
needs :func:`decode_token` to yield the same claims.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from rhip.errors import Unauthorized
from rhip.security.keys import KeyRing
from rhip.security.users import Account

ISSUER = "rhip"
#: Default lifetime of an access token, in seconds.
TOKEN_TTL = 3600
#: Longest break-the-glass grant, in seconds.
BREAK_GLASS_TTL = 3600


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as carried in the token."""

    sub: str
    role: str
    scope: str
    patient: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    area: str | None = None
    break_glass: dict[str, Any] | None = None  # {"patient": id, "reason": text, "until": epoch}

    def glass_for(self, patient_id: str | None) -> bool:
        """True when a live break-the-glass grant covers this resident."""
        grant = self.break_glass
        return bool(
            grant
            and patient_id
            and grant.get("patient") == patient_id
            and grant.get("until", 0) > time.time()
        )


def issue_token(
    keys: KeyRing,
    account: Account,
    scope: str,
    *,
    ttl: int = TOKEN_TTL,
    break_glass: dict[str, Any] | None = None,
) -> str:
    """A signed access token for an account with the given (already narrowed) scope."""
    version, key = keys.current("jwt")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": account.username,
        "role": account.role,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    for name, value in (
        ("patient", account.patient_id),
        ("practitioner", account.practitioner_id),
        ("organization", account.organization_id),
        ("area", account.area),
        ("btg", break_glass),
    ):
        if value:
            claims[name] = value
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": str(version)})


def decode_token(keys: KeyRing, token: str) -> Principal:
    """The principal of a valid token; Unauthorized for expired, forged or malformed ones."""
    try:
        header = jwt.get_unverified_header(token)
        key = keys.get("jwt", int(header.get("kid", "0")))
        claims = jwt.decode(
            token, key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except (jwt.PyJWTError, KeyError, ValueError):
        raise Unauthorized("invalid or expired access token") from None
    return Principal(
        sub=str(claims["sub"]),
        role=str(claims.get("role", "")),
        scope=str(claims.get("scope", "")),
        patient=claims.get("patient"),
        practitioner=claims.get("practitioner"),
        organization=claims.get("organization"),
        area=claims.get("area"),
        break_glass=claims.get("btg"),
    )
