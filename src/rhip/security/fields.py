"""Encryption at rest of designated sensitive fields: the citizen ID and phone numbers of a Patient.

:func:`protect` replaces each citizen-ID identifier value and each phone number with an SM4
token (``sm4:v<N>:...``, the field path bound as associated data) and adds a searchable HMAC-SM3
pseudonym identifier (system :data:`rhip.fhir.systems.CITIZEN_ID_PSEUDONYM`), so that exact
look-ups by ID still work without the plaintext being stored. :func:`reveal` reverses it for a
caller entitled to the plaintext. Both are pure functions over a resource dict; the store or the
ingest pipeline decides where to call them.
"""

from __future__ import annotations

import copy
from typing import Any

from rhip.fhir.systems import CITIZEN_ID, CITIZEN_ID_PSEUDONYM
from rhip.security.crypto import FieldCipher

_ID_CONTEXT = "Patient.identifier"
_PHONE_CONTEXT = "Patient.telecom"


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("sm4:v")


def protect(resource: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    """A copy of a Patient with citizen ID and phone numbers encrypted (others returned unchanged)."""
    if resource.get("resourceType") != "Patient":
        return resource
    out = copy.deepcopy(resource)
    identifiers = out.get("identifier") or []
    pseudonyms = []
    for ident in identifiers:
        value = ident.get("value") if isinstance(ident, dict) else None
        if ident.get("system") == CITIZEN_ID and isinstance(value, str) and not _is_token(value):
            pseudonyms.append({"system": CITIZEN_ID_PSEUDONYM, "value": cipher.pseudonym(value)})
            ident["value"] = cipher.encrypt(value, context=_ID_CONTEXT)
    known = {(i.get("system"), i.get("value")) for i in identifiers if isinstance(i, dict)}
    identifiers.extend(p for p in pseudonyms if (p["system"], p["value"]) not in known)
    for point in out.get("telecom") or []:
        value = point.get("value") if isinstance(point, dict) else None
        if point.get("system") == "phone" and isinstance(value, str) and not _is_token(value):
            point["value"] = cipher.encrypt(value, context=_PHONE_CONTEXT)
    return out


def reveal(resource: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    """A copy of a protected Patient with the plaintext restored and the pseudonyms removed."""
    if resource.get("resourceType") != "Patient":
        return resource
    out = copy.deepcopy(resource)
    kept = []
    for ident in out.get("identifier") or []:
        if ident.get("system") == CITIZEN_ID_PSEUDONYM:
            continue
        if ident.get("system") == CITIZEN_ID and _is_token(ident.get("value")):
            ident["value"] = cipher.decrypt(ident["value"], context=_ID_CONTEXT)
        kept.append(ident)
    if "identifier" in out:
        out["identifier"] = kept
    for point in out.get("telecom") or []:
        if isinstance(point, dict) and _is_token(point.get("value")):
            point["value"] = cipher.decrypt(point["value"], context=_PHONE_CONTEXT)
    return out


def pseudonym_query(citizen_id: str, cipher: FieldCipher) -> tuple[str, str]:
    """The search pair that finds a protected Patient by citizen ID: ``("identifier", "system|hmac")``."""
    return "identifier", f"{CITIZEN_ID_PSEUDONYM}|{cipher.pseudonym(citizen_id)}"
