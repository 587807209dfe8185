"""Encryption at rest of designated sensitive fields: citizen IDs and phone numbers of persons.

:func:`protect` replaces each citizen-ID identifier value and each phone/SMS number of a Patient,
RelatedPerson or Practitioner (and of a Patient's contacts) with an SM4 token (``sm4:v<N>:...``,
the field path bound as associated data) and adds searchable HMAC-SM3 pseudonym identifiers
(systems :data:`rhip.fhir.systems.CITIZEN_ID_PSEUDONYM` and :data:`~rhip.fhir.systems.PHONE_PSEUDONYM`),
so that exact look-ups still work without the plaintext being stored. :func:`reveal` reverses it.
Both are pure functions over a resource dict; :mod:`rhip.store.fieldcrypt` applies them on every
write and read of the store. Other resource types pass through untouched (not even copied).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from rhip.fhir.systems import CITIZEN_ID, CITIZEN_ID_PSEUDONYM, PHONE_PSEUDONYM
from rhip.security.crypto import FieldCipher, sm3_hmac

#: The resource types whose citizen IDs and phone numbers are encrypted.
PROTECTED_TYPES = frozenset({"Patient", "RelatedPerson", "Practitioner"})
#: ContactPoint systems whose values are encrypted.
PHONE_SYSTEMS = frozenset({"phone", "sms"})
#: Identifier systems added by :func:`protect` and removed by :func:`reveal`.
PSEUDONYM_SYSTEMS = frozenset({CITIZEN_ID_PSEUDONYM, PHONE_PSEUDONYM})
#: Every encrypted value starts with this.
TOKEN_PREFIX = "sm4:v"
_NON_DIGIT = re.compile(r"\D")


def is_token(value: Any) -> bool:
    """True for a value made by :meth:`FieldCipher.encrypt`."""
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def phone_digits(value: str) -> str:
    """The form a phone number's pseudonym is computed on: its digits only."""
    return _NON_DIGIT.sub("", value)


def protect(resource: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    """A copy of a person resource with citizen IDs and phone numbers encrypted.

    Resources of other types are returned as they are. Values already encrypted are kept, so
    protecting twice changes nothing. Only the elements that change are copied: the caller's dict
    is never modified.
    """
    res_type = resource.get("resourceType")
    if res_type not in PROTECTED_TYPES:
        return resource
    out = dict(resource)
    pseudonyms: list[dict[str, str]] = []
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list):
        out["identifier"] = [
            _protect_identifier(i, f"{res_type}.identifier", cipher, pseudonyms) for i in identifiers
        ]
    telecom = resource.get("telecom")
    if isinstance(telecom, list):
        out["telecom"] = [_protect_point(p, f"{res_type}.telecom", cipher, pseudonyms) for p in telecom]
    contacts = resource.get("contact")
    if res_type == "Patient" and isinstance(contacts, list):
        out["contact"] = [_protect_contact(c, cipher) for c in contacts]
    if pseudonyms:
        kept: list[Any] = out["identifier"] if isinstance(out.get("identifier"), list) else []
        known = {(i.get("system"), i.get("value")) for i in kept if isinstance(i, dict)}
        new = [p for p in pseudonyms if (p["system"], p["value"]) not in known]
        out["identifier"] = [*kept, *{(p["system"], p["value"]): p for p in new}.values()]
    return out


def _protect_identifier(
    ident: Any, context: str, cipher: FieldCipher, pseudonyms: list[dict[str, str]]
) -> Any:
    if not isinstance(ident, dict) or ident.get("system") != CITIZEN_ID:
        return ident
    value = ident.get("value")
    if not isinstance(value, str) or is_token(value):
        return ident
    pseudonyms.append({"system": CITIZEN_ID_PSEUDONYM, "value": cipher.pseudonym(value)})
    return {**ident, "value": cipher.encrypt(value, context=context)}


def _protect_point(
    point: Any, context: str, cipher: FieldCipher, pseudonyms: list[dict[str, str]] | None
) -> Any:
    if not isinstance(point, dict) or point.get("system") not in PHONE_SYSTEMS:
        return point
    value = point.get("value")
    if not isinstance(value, str) or is_token(value):
        return point
    if pseudonyms is not None and (digits := phone_digits(value)):
        pseudonyms.append({"system": PHONE_PSEUDONYM, "value": cipher.pseudonym(digits)})
    return {**point, "value": cipher.encrypt(value, context=context)}


def _protect_contact(contact: Any, cipher: FieldCipher) -> Any:
    telecom = contact.get("telecom") if isinstance(contact, dict) else None
    if not isinstance(telecom, list):
        return contact
    return {
        **contact,
        "telecom": [_protect_point(p, "Patient.contact.telecom", cipher, None) for p in telecom],
    }


def reveal(resource: dict[str, Any], cipher: FieldCipher, *, in_place: bool = False) -> dict[str, Any]:
    """The plaintext of a protected resource, with the pseudonyms removed.

    ``in_place`` changes ``resource`` itself (for a body just decoded from storage); otherwise a
    copy is returned. Raises InvalidRequest (altered data, wrong key) or KeyError (a key version
    missing) from :meth:`FieldCipher.decrypt`.
    """
    res_type = resource.get("resourceType")
    if res_type not in PROTECTED_TYPES:
        return resource
    out = resource if in_place else copy.deepcopy(resource)
    identifiers = out.get("identifier")
    if isinstance(identifiers, list):
        kept = [i for i in identifiers if not (isinstance(i, dict) and i.get("system") in PSEUDONYM_SYSTEMS)]
        for ident in kept:
            if isinstance(ident, dict) and ident.get("system") == CITIZEN_ID and is_token(ident.get("value")):
                ident["value"] = cipher.decrypt(ident["value"], context=f"{res_type}.identifier")
        out["identifier"] = kept
    _reveal_points(out.get("telecom"), f"{res_type}.telecom", cipher)
    if res_type == "Patient":
        for contact in out.get("contact") or []:
            if isinstance(contact, dict):
                _reveal_points(contact.get("telecom"), "Patient.contact.telecom", cipher)
    return out


def _reveal_points(points: Any, context: str, cipher: FieldCipher) -> None:
    for point in points if isinstance(points, list) else []:
        if isinstance(point, dict) and is_token(point.get("value")):
            point["value"] = cipher.decrypt(point["value"], context=context)


def token_versions(resource: dict[str, Any]) -> set[int] | None:
    """The SM4 key versions of a protected resource's tokens; None when a designated value is plaintext.

    Used by re-encryption to skip resources already entirely under the current key.
    """
    res_type = resource.get("resourceType")
    values = [
        i.get("value")
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == CITIZEN_ID
    ]
    points = list(resource.get("telecom") or [])
    if res_type == "Patient":
        for contact in resource.get("contact") or []:
            points.extend(contact.get("telecom") or [] if isinstance(contact, dict) else [])
    values += [p.get("value") for p in points if isinstance(p, dict) and p.get("system") in PHONE_SYSTEMS]
    versions: set[int] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        version = token_version(value)
        if version is None:
            return None
        versions.add(version)
    return versions


def token_version(value: str) -> int | None:
    """The SM4 key version an ``sm4:v<N>:...`` token names; None for a value in clear."""
    if not is_token(value):
        return None
    return int(value[len(TOKEN_PREFIX) :].partition(":")[0])


def pseudonym_versions(
    stored: dict[str, Any], revealed: dict[str, Any], hmac_keys: list[tuple[int, bytes]]
) -> set[int | None]:
    """The HMAC key versions of a stored resource's pseudonym identifiers.

    A pseudonym does not name its key, so each one is recomputed from the plaintext (``revealed``)
    under the kept keys (``hmac_keys``, newest first: :meth:`FieldCipher.hmac_keys`) until all are
    accounted for; None stands for a pseudonym no kept key made. Re-encryption uses it to skip
    bodies already under the newest key after an ``hmac`` rotation, ``rhip keys status`` to count
    what each version still protects.
    """
    left = stored_pseudonyms(stored)
    sources = [s.encode("utf-8") for s in _pseudonym_sources(revealed)]
    found: set[int | None] = set()
    for version, key in hmac_keys:
        if not left:
            break
        made = left.intersection(sm3_hmac(key, source) for source in sources)
        if made:
            found.add(version)
            left -= made
    if left:
        found.add(None)
    return found


def stored_pseudonyms(stored: dict[str, Any]) -> set[str]:
    """The pseudonym identifier values :func:`protect` added to a stored resource."""
    return {
        i["value"]
        for i in stored.get("identifier") or []
        if isinstance(i, dict) and i.get("system") in PSEUDONYM_SYSTEMS and isinstance(i.get("value"), str)
    }


def _pseudonym_sources(revealed: dict[str, Any]) -> list[str]:
    """The plaintext values :func:`protect` makes pseudonyms of: citizen IDs and phone digits."""
    sources = [
        i["value"]
        for i in revealed.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == CITIZEN_ID and isinstance(i.get("value"), str)
    ]
    for point in revealed.get("telecom") or []:
        value = point.get("value") if isinstance(point, dict) else None
        if isinstance(value, str) and point.get("system") in PHONE_SYSTEMS:
            sources.append(phone_digits(value))
    return [s for s in sources if s]


def pseudonym_query(citizen_id: str, cipher: FieldCipher) -> tuple[str, str]:
    """The search pair that finds a protected person by citizen ID: ``("identifier", "system|hmac")``."""
    return "identifier", f"{CITIZEN_ID_PSEUDONYM}|{cipher.pseudonym(citizen_id)}"
