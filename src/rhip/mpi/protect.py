"""No plaintext citizen ID or phone in the MPI's tables: keyed pseudonyms and SM4, with the store's keys.

The MPI matches on citizen IDs and phones, and its tables live in the same database as the store,
so they get the store's protection (:mod:`rhip.store.fieldcrypt`, the same key ring):

* exact comparisons and blocking use HMAC-SM3 pseudonyms: a record's ``cid`` (trusted citizen
  ID) and ``phone`` are pseudonyms from the moment its features are sealed, in memory as in
  ``mpi_record``; the citizen-ID and phone blocking keys and citizen-ID cards in ``mpi_card``
  are pseudonyms too. Equal values give equal pseudonyms under one key, so matching is unchanged.
* the raw citizen ID (``cid_raw``) is compared approximately (one digit wrong still counts), so it
  stays plaintext in memory and is stored SM4-encrypted, decrypted only to be compared;
  the phone is also stored SM4-encrypted (``phone_sm4``) for the golden Patient.
* ``key_version`` records the HMAC key version of a row's pseudonyms; ``rhip keys reencrypt``
  (:mod:`rhip.mpi.rekey`) and ``rhip link --all`` rewrite rows of another version (rows from
  before revision 0006, or after an ``hmac`` key rotation); the SM4 tokens name their own version.

An engine no Store opened has no keys: its MPI rows stay plaintext (as the store's rows do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rhip.fhir.identifiers import normalize_citizen_id
from rhip.fhir.systems import CITIZEN_ID
from rhip.mpi.features import RecordFeatures
from rhip.security.fields import token_version

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from rhip.security.crypto import FieldCipher

_CID_CONTEXT = "mpi_record.cid_raw"
_PHONE_CONTEXT = "mpi_record.phone"
#: The SM4-encrypted columns of ``mpi_record`` and the associated data bound to each.
SM4_COLUMNS = {"cid_raw": _CID_CONTEXT, "phone_sm4": _PHONE_CONTEXT}


class MpiSeal:
    """Seals record features for matching and storage, and opens stored rows again."""

    def __init__(self, cipher: FieldCipher | None) -> None:
        self.cipher = cipher

    @classmethod
    def of(cls, conn: Connection | Engine) -> MpiSeal:
        """The seal of the store whose engine ``conn`` belongs to."""
        from rhip.store import fieldcrypt

        return cls(fieldcrypt.of(conn).cipher)

    @property
    def version(self) -> int | None:
        """The HMAC key version new pseudonyms are made with (None without keys)."""
        return None if self.cipher is None else self.cipher.keys.current("hmac")[0]

    def features(self, features: RecordFeatures) -> RecordFeatures:
        """Matching features: citizen ID, phone, raw-ID key and citizen-ID cards as pseudonyms."""
        if self.cipher is None:
            return dataclasses.replace(features, cid_raw_key=features.cid_raw)
        hide = self.cipher.pseudonym
        cards = tuple(
            (system, hide(normalize_citizen_id(value)) if system == CITIZEN_ID else value)
            for system, value in features.cards
        )
        return dataclasses.replace(
            features,
            cid=hide(features.cid) if features.cid else None,
            cid_raw_key=hide(features.cid_raw) if features.cid_raw else None,
            phone=hide(features.phone) if features.phone else None,
            phone_sm4=self.cipher.encrypt(features.phone, context=_PHONE_CONTEXT) if features.phone else None,
            cards=cards,
        )

    def row(self, features: RecordFeatures) -> dict[str, Any]:
        """The ``mpi_record`` columns of sealed features: the raw citizen ID SM4-encrypted."""
        row = features.as_row()
        if self.cipher is not None and features.cid_raw:
            row["cid_raw"] = self.cipher.encrypt(features.cid_raw, context=_CID_CONTEXT)
        row["key_version"] = self.version
        return row

    def raw_cid(self, stored: str | None) -> str | None:
        """The raw citizen ID of a stored row, decrypted for comparison."""
        if stored is None or self.cipher is None or not stored.startswith("sm4:v"):
            return stored
        return self.cipher.decrypt(stored, context=_CID_CONTEXT)

    def reveal(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored row with plaintext ``cid`` and ``phone`` (for the golden Patient only)."""
        if self.cipher is None:
            return row
        out = dict(row)
        out["cid"] = self.raw_cid(row["cid_raw"]) if row["cid"] else None
        sealed = row.get("phone_sm4")
        out["phone"] = self.cipher.decrypt(sealed, context=_PHONE_CONTEXT) if sealed else None
        return out

    def card_values(self, system: str, value: str) -> list[str]:
        """The ``mpi_card`` values a looked-up card may be stored as (every kept HMAC key)."""
        if self.cipher is None or system != CITIZEN_ID:
            return [value]
        return self.cipher.pseudonyms(normalize_citizen_id(value)) or [value]

    def tokens_stale(self, row: Mapping[Any, Any]) -> bool:
        """True when a token of the row names an SM4 version older than the newest (no decryption)."""
        if self.cipher is None:
            return False
        newest, _ = self.cipher.keys.current("sm4")
        return not sm4_versions(row) <= {None, newest}

    def renewed_tokens(self, row: Mapping[Any, Any]) -> dict[str, str]:
        """The row's SM4 columns that are not under the newest SM4 key, re-encrypted under it.

        Decrypted with the version each token names and encrypted again with the same associated
        data, so the row reads as before; values in clear (a row written without keys) are left
        to a re-seal, which also rebuilds their pseudonyms.
        """
        if self.cipher is None:
            return {}
        newest, _ = self.cipher.keys.current("sm4")
        out: dict[str, str] = {}
        for column, context in SM4_COLUMNS.items():
            token = row[column]
            if token and token_version(token) not in (None, newest):
                out[column] = self.cipher.reencrypt(token, context=context)
        return out


def sm4_versions(row: Mapping[Any, Any]) -> set[int | None]:
    """The SM4 key versions of a stored row's tokens; None for a value in clear."""
    return {token_version(row[column]) for column in SM4_COLUMNS if row[column]}
