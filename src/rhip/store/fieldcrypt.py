"""Encryption at rest of designated sensitive fields, applied by the store on every write and read.

A :class:`FieldCrypt` wraps :mod:`rhip.security.fields`: writes protect citizen IDs and phone
numbers of persons *before* the body is encoded and its index rows are extracted, so neither the
body tables nor any index table holds the plaintext; reads reveal them again (encryption at rest
protects a stolen database or backup, what a caller may see is the access policy's job); searches
by citizen ID or phone are rewritten to the HMAC-SM3 pseudonyms that :func:`~rhip.security.fields.protect`
indexes. The store binds its FieldCrypt to its engine (:func:`bind`), so the code that holds only
a connection (single writes, bundles, bulk, search) finds it with :func:`of` instead of every
signature growing a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import orjson

from rhip.errors import FieldKeyError, InvalidRequest
from rhip.fhir.identifiers import check_citizen_id, normalize_citizen_id
from rhip.fhir.systems import CITIZEN_ID, CITIZEN_ID_PSEUDONYM, PHONE_PSEUDONYM
from rhip.security import fields
from rhip.store.meta import content_of

#: Tells whether two different contents (stored, new) of a resource still count as the same.
Alike = Callable[[dict[str, Any], dict[str, Any]], bool]

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from rhip.config import Settings
    from rhip.security.crypto import FieldCipher

Params = list[tuple[str, str]]

_TOKEN = fields.TOKEN_PREFIX.encode("ascii")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


class FieldCrypt:
    """What one store does to designated sensitive fields on the way in and out.

    Args:
        cipher: the SM4/HMAC keys; None for a store that neither encrypts nor decrypts.
        protect_writes: encrypt on write (``RHIP_FIELD_ENCRYPTION``); when False, values already
            encrypted are still revealed on read, so switching encryption off never hides data.
    """

    def __init__(self, cipher: FieldCipher | None, *, protect_writes: bool = True) -> None:
        self.cipher = cipher
        self.protect_writes = protect_writes and cipher is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> FieldCrypt:
        """Keys under ``<data_dir>/keys``; encryption on write as ``field_encryption`` says."""
        from rhip.security.crypto import FieldCipher
        from rhip.security.keys import KeyRing

        return cls(FieldCipher(KeyRing(settings.data_dir)), protect_writes=settings.field_encryption)

    # --- writes --------------------------------------------------------------------------------
    def protect(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource as stored: person resources encrypted, any other one unchanged (same object)."""
        if not self.protect_writes or resource.get("resourceType") not in fields.PROTECTED_TYPES:
            return resource
        return fields.protect(resource, self._keys())

    # --- reads ---------------------------------------------------------------------------------
    def loads(self, body: bytes) -> dict[str, Any]:
        """Decode a stored body and reveal its encrypted fields (plaintext rows decode as they are)."""
        value: dict[str, Any] = orjson.loads(body)
        # the type first: other types never pay the byte search
        if self.cipher is not None and value.get("resourceType") in fields.PROTECTED_TYPES and _TOKEN in body:
            self._reveal(value, in_place=True)
        return value

    def reveal(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A plaintext copy of a protected resource (the same object when it holds nothing encrypted)."""
        if self.cipher is None or not _has_protection(resource):
            return resource
        return self._reveal(resource, in_place=False)

    def same_content(self, stored: bytes, resource: dict[str, Any], alike: Alike | None = None) -> bool:
        """Whether ``resource`` (plain or protected) has the content of a stored body.

        Compared on plaintext: encryption uses random nonces, so two encryptions of one record differ.
        ``alike(stored, new)``, given the two contents when they differ, may still count them as
        the same (ingest: one line of a file repeated, see :mod:`rhip.ingest.repeats`).
        """
        old, new = content_of(self.loads(stored)), content_of(self.reveal(resource))
        return old == new or (alike is not None and alike(old, new))

    def _reveal(self, resource: dict[str, Any], *, in_place: bool) -> dict[str, Any]:
        cipher = self._keys()
        try:
            return fields.reveal(resource, cipher, in_place=in_place)
        except (InvalidRequest, KeyError) as exc:
            reason = exc.args[0] if exc.args else type(exc).__name__
            raise FieldKeyError(_key_error(resource, str(reason), cipher)) from None
        except ValueError:
            raise FieldKeyError(_key_error(resource, "malformed sm4 token", cipher)) from None

    def _keys(self) -> FieldCipher:
        if self.cipher is None:
            raise RuntimeError("this store has no field-encryption keys")
        return self.cipher

    # --- search --------------------------------------------------------------------------------
    def search_params(self, res_type: str | None, params: Params) -> Params:
        """Search parameters rewritten so that a citizen ID or phone finds its protected record.

        ``identifier`` (also chained, ``subject:Patient.identifier``) keeps its values and gains
        the citizen-ID pseudonyms as alternatives, so plaintext rows written before encryption are
        found too. ``phone`` and ``telecom`` (phone numbers) of person types become an
        ``identifier`` search on the phone pseudonyms, when this store encrypts on write.
        """
        if self.cipher is None:
            return params
        return [self._rewrite(res_type, name, raw) for name, raw in params]

    def _rewrite(self, res_type: str | None, name: str, raw: str) -> tuple[str, str]:
        if (name == "identifier" and res_type in fields.PROTECTED_TYPES) or name.endswith(".identifier"):
            return name, self._identifier_values(raw)
        if self.protect_writes and res_type in fields.PROTECTED_TYPES and name in ("phone", "telecom"):
            hashed = self._phone_values(raw)
            if hashed is not None:
                return "identifier", hashed
        return name, raw

    def _identifier_values(self, raw: str) -> str:
        values = _UNESCAPED_COMMA.split(raw)
        extra: list[str] = []
        for value in values:
            system, bar, code = value.rpartition("|")
            if (bar and system == CITIZEN_ID and code) or (not bar and check_citizen_id(code).valid):
                extra.extend(f"{CITIZEN_ID_PSEUDONYM}|{h}" for h in self._pseudonyms(code))
        return ",".join([*values, *dict.fromkeys(extra)]) if extra else raw

    def _phone_values(self, raw: str) -> str | None:
        out: list[str] = []
        for value in _UNESCAPED_COMMA.split(raw):
            system, bar, number = value.rpartition("|")
            digits = fields.phone_digits(number)
            if (bar and system not in fields.PHONE_SYSTEMS) or "@" in number or not digits:
                return None  # not a phone number: leave the parameter to the plain index
            out.extend(f"{PHONE_PSEUDONYM}|{h}" for h in self._keys().pseudonyms(digits))
        return ",".join(out) if out else None  # no HMAC key yet: nothing was ever protected

    def _pseudonyms(self, citizen_id: str) -> list[str]:
        forms = dict.fromkeys([citizen_id, normalize_citizen_id(citizen_id)])
        return [h for form in forms for h in self._keys().pseudonyms(form)]


def _has_protection(resource: dict[str, Any]) -> bool:
    """Cheap test for encrypted values or pseudonyms, so plain resources are never copied."""
    if resource.get("resourceType") not in fields.PROTECTED_TYPES:
        return False
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and (
            ident.get("system") in fields.PSEUDONYM_SYSTEMS or fields.is_token(ident.get("value"))
        ):
            return True
    points = list(resource.get("telecom") or [])
    for contact in resource.get("contact") or []:
        points.extend(contact.get("telecom") or [] if isinstance(contact, dict) else [])
    return any(isinstance(p, dict) and fields.is_token(p.get("value")) for p in points)


def _key_error(resource: dict[str, Any], reason: str, cipher: FieldCipher) -> str:
    where = f"{resource.get('resourceType')}/{resource.get('id')}"
    return (
        f"{where}: an encrypted field cannot be decrypted ({reason}); the keys under "
        f"{cipher.keys.root} are not the ones it was written with (check RHIP_DATA_DIR)"
    )


#: The FieldCrypt of a store that has none: bodies are stored and returned as they are.
PLAIN = FieldCrypt(None)
_BOUND: WeakKeyDictionary[Engine, FieldCrypt] = WeakKeyDictionary()


def bind(engine: Engine, crypt: FieldCrypt) -> None:
    """Make ``crypt`` the field encryption of every connection of ``engine`` (done by the Store)."""
    _BOUND[engine] = crypt


def of(conn: Connection | Engine) -> FieldCrypt:
    """The FieldCrypt bound to the engine of ``conn`` (:data:`PLAIN` for an engine no Store opened)."""
    return _BOUND.get(conn.engine, PLAIN)
