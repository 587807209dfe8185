"""SMART on FHIR v2 scopes: ``<context>/<type>.<permissions>`` with context patient|user|system.

Permissions are letters out of ``cruds`` (create, read, update, delete, search); SMART v1's
``read``/``write`` and ``*`` are accepted and mapped to their v2 letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

#: Interaction -> the SMART permission letter it needs.
INTERACTION_LETTER: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "history-type": "r",
    "history-system": "r",
    "operation": "r",
    "search-type": "s",
    "search-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}


@dataclass(frozen=True)
class Scope:
    """One parsed resource scope."""

    context: str
    res_type: str
    letters: frozenset[str]

    def allows(self, res_type: str | None, letter: str) -> bool:
        """True when this scope grants ``letter`` on ``res_type`` (None = any type / system level)."""
        if letter not in self.letters:
            return False
        return self.res_type == "*" or (res_type is not None and self.res_type == res_type)


def parse_scope(text: str) -> Scope | None:
    """A resource scope, or None for other scopes (openid, launch, offline_access...)."""
    match = _SCOPE.match(text.strip())
    if not match:
        return None
    context, res_type, perms = match.groups()
    letters = _V1.get(perms, perms)
    if any(ch not in "cruds" for ch in letters):
        return None
    return Scope(context, res_type, frozenset(letters))


def parse_scopes(text: str) -> list[Scope]:
    """Every resource scope in a space-separated scope string."""
    return [s for s in (parse_scope(part) for part in text.split()) if s is not None]


def scopes_allow(scopes: list[Scope], res_type: str | None, letter: str) -> bool:
    """True when any scope grants the permission."""
    return any(s.allows(res_type, letter) for s in scopes)


def narrow(requested: str | None, granted: str) -> str:
    """The requested scopes that fall inside the granted ones (all granted when nothing is asked)."""
    if not requested:
        return granted
    allowed = parse_scopes(granted)
    keep = []
    for part in requested.split():
        scope = parse_scope(part)
        if scope is None:
            if part in ("openid", "fhirUser", "launch/patient", "offline_access"):
                keep.append(part)
            continue
        if all(_granted(allowed, scope, ch) for ch in scope.letters):
            keep.append(part)
    return " ".join(keep)


def _granted(allowed: list[Scope], scope: Scope, letter: str) -> bool:
    return any(
        g.context == scope.context and letter in g.letters and g.res_type in ("*", scope.res_type)
        for g in allowed
    )
