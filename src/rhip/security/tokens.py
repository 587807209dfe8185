"""JWT bearer tokens: issue and verify, signed with the versioned key ring (``kid`` = key version).

Tokens are HS256 JWTs signed with a 256-bit key under ``<data_dir>/keys/jwt``; rotating the key
(``rhip keys rotate jwt``) signs new tokens with the new version while tokens of older versions
stay valid until they expire. An external identity provider can replace the issuer: the API only
needs :func:`decode_token` to yield the same claims.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

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


def _key_version(token: str) -> int:
    """The ``kid`` of a token's header, read from the header segment alone.

    PyJWT's ``get_unverified_header`` checks every character of all three segments in Python
    (≈ 0.1 ms a token) and ``decode`` does it again: the signature check still sees the whole
    token, so the header alone is read here. Raises ValueError when it is not a JWT header.
    """
    segment = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, orjson.JSONDecodeError):
        raise ValueError("malformed token header") from None
    if not isinstance(header, dict):
        raise ValueError("malformed token header")
    return int(header.get("kid", "0"))


def _verified_claims(keys: KeyRing, token: str) -> dict[str, Any]:
    """The claims of a token whose signature, issuer and expiry hold; Unauthorized otherwise."""
    try:
        key = keys.get("jwt", _key_version(token))
        claims = jwt.decode(
            token, key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        raise Unauthorized("invalid or expired access token") from None
    return dict(claims)


def decode_token(keys: KeyRing, token: str) -> Principal:
    """The principal of a valid token; Unauthorized for expired, forged or malformed ones."""
    return _principal(_verified_claims(keys, token))


def _principal(claims: dict[str, Any]) -> Principal:
    """The caller a verified token's claims describe."""
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


class TokenVerifier:
    """Verifies bearer tokens for one key ring and remembers the ones that verified.

    A client sends the same token with every request for up to an hour, and PyJWT's checks cost
    ≈ 0.2 ms of CPU each time, more than the rest of authentication and audit together. A token
    that verified once is looked up by its exact text instead; its expiry is checked on every use,
    as :func:`decode_token` would. Only verified tokens are kept (a forged or expired one is never
    stored), at most ``max_size`` of them (the oldest is dropped first), and each verifier belongs
    to one app's key ring, so a token signed by another app's keys is never found here.
    """

    def __init__(self, keys: KeyRing, max_size: int = 4096) -> None:
        self.keys = keys
        self.max_size = max_size
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; Unauthorized for expired, forged or malformed ones."""
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if time.time() < expires:
                return principal
            self._verified.pop(token, None)
            raise Unauthorized("invalid or expired access token")
        claims = _verified_claims(self.keys, token)
        principal = _principal(claims)
        self._remember(token, principal, float(claims["exp"]))
        return principal

    def _remember(self, token: str, principal: Principal, expires: float) -> None:
        while len(self._verified) >= self.max_size:
            try:
                del self._verified[next(iter(self._verified))]
            except (KeyError, StopIteration, RuntimeError):  # emptied or changed by another thread
                break
        self._verified[token] = (principal, expires)
