"""Comparison features of one source Patient, the same for real-time and batch matching.

Matching never compares raw FHIR: every Patient is reduced once to a flat :class:`RecordFeatures`
(name characters and pinyin, birth date and its day/month swap, sex, phone, address, a citizen ID
that is trusted only when it passes GB 11643 against the record's own birth date and sex, and every
card the record carries). The real-time scorer, the blocking keys and the Splink batch model all
read these columns, so the two paths cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import date
from functools import lru_cache
from typing import Any

from rhip.fhir import systems
from rhip.fhir.identifiers import check_citizen_id, normalize_citizen_id

#: Identifier systems that identify a person (not one facility's record) and so help find candidates.
PERSON_CARD_SYSTEMS: frozenset[str] = frozenset(
    {systems.HEALTH_CARD, systems.SOCIAL_SECURITY_CARD, systems.VIRTUAL_HEALTH_CARD}
)

_NON_DIGIT = re.compile(r"\D")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RecordFeatures:
    """Flat, comparable view of one source Patient (no FHIR nesting, all strings or None)."""

    record_id: str
    name: str | None = None  # full name in characters, no spaces (family + given)
    family: str | None = None  # family name in characters
    name_py: str | None = None  # toneless pinyin of the full name, no spaces ("zhangwei")
    family_py: str | None = None
    dob: str | None = None  # YYYY-MM-DD
    dob_swap: str | None = None  # day and month exchanged, when that is still a date
    sex: str | None = None  # male | female
    phone: str | None = None  # last 11 digits
    district: str | None = None  # six-digit GB/T 2260 code or district text
    address: str | None = None  # address text without spaces
    name_a: str | None = None  # name folded to one ASCII character per character (see fold_ascii)
    address_a: str | None = None
    cid: str | None = None  # citizen ID, only when valid and consistent with the record
    cid_raw: str | None = None  # whatever citizen ID the record carried, normalised
    cid_problems: tuple[str, ...] = ()
    cards: tuple[tuple[str, str], ...] = field(default=())
    deceased: bool = False
    phone_sm4: str | None = None  # the phone SM4-encrypted (rhip.mpi.protect), for the golden Patient
    cid_raw_key: str | None = None  # blocking key of cid_raw: the value itself, or its pseudonym once sealed

    def as_row(self) -> dict[str, Any]:
        """Columns for the MPI record table (the blocking-key form of the raw ID is not stored).

        A shallow copy: every field is a string, a bool or a tuple of strings, so ``asdict``'s
        deep copy would only cost time (a quarter of a whole-index re-seal).
        """
        row = {f.name: getattr(self, f.name) for f in _FIELDS}
        row["cid_problems"] = ",".join(self.cid_problems) or None
        row.pop("cards")
        row.pop("cid_raw_key")
        return row


#: The fields of :class:`RecordFeatures`, in order (looked up once, not per row).
_FIELDS = fields(RecordFeatures)


def fold_ascii(text: str | None) -> str | None:
    """One printable ASCII character per character, so string distances agree across engines.

    DuckDB's and Spark's edit distances count UTF-8 bytes, rapidfuzz counts characters; on the
    folded text all three count the same thing. Distinct characters may fold together (1 in 94),
    which only makes the fuzzy levels slightly more lenient; exact levels use the original text.
    """
    if text is None:
        return None
    return "".join(c if c.isascii() else chr(0x21 + ord(c) % 94) for c in text)


@lru_cache(maxsize=50_000)
def _char_pinyin(char: str) -> str:
    from pypinyin import Style, lazy_pinyin

    return "".join(lazy_pinyin(char, style=Style.NORMAL, errors="default")).lower()


def to_pinyin(text: str) -> str:
    """Toneless pinyin of Chinese text, character by character, so homophones give the same string.

    Each character takes its most common reading (a polyphonic character reads the same way in
    every record, which is what matching needs); ASCII letters and digits are kept, spaces dropped.
    """
    return "".join(_char_pinyin(c) for c in text if not c.isspace())


def _name(patient: dict[str, Any]) -> tuple[str | None, str | None]:
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") in ("official", "usual")), names[0] if names else None)
    if not chosen:
        return None, None
    family = chosen.get("family") or ""
    given = "".join(chosen.get("given") or [])
    full = _SPACE.sub("", family + given) or _SPACE.sub("", chosen.get("text") or "")
    return (full or None), (_SPACE.sub("", family) or None)


def swap_day_month(dob: str | None) -> str | None:
    """The date with day and month exchanged, or None when that is not a different real date."""
    if not dob or len(dob) != 10:
        return None
    try:
        swapped = date(int(dob[:4]), int(dob[8:10]), int(dob[5:7]))
    except ValueError:
        return None
    text = swapped.isoformat()
    return None if text == dob else text


def _encrypted(value: Any) -> bool:
    """An SM4 field token (rhip.security.fields): not comparable, treated as absent."""
    return isinstance(value, str) and value.startswith("sm4:v")


def _phone(patient: dict[str, Any]) -> str | None:
    for telecom in patient.get("telecom") or []:
        if (
            telecom.get("system") in (None, "phone", "sms")
            and telecom.get("value")
            and not _encrypted(telecom["value"])
        ):
            digits = _NON_DIGIT.sub("", str(telecom["value"]))
            if len(digits) >= 7:
                return digits[-11:]
    return None


def _address(patient: dict[str, Any]) -> tuple[str | None, str | None]:
    addresses = patient.get("address") or []
    if not addresses:
        return None, None
    home = next((a for a in addresses if a.get("use") == "home"), addresses[0])
    district = home.get("district")
    for ext in home.get("extension") or []:
        code = (ext.get("valueCode") or (ext.get("valueCoding") or {}).get("code")) if ext else None
        if code and str(code).isdigit() and len(str(code)) == 6:
            district = str(code)
    text = home.get("text") or "".join(
        [*(home.get("line") or []), home.get("district") or "", home.get("city") or ""]
    )
    text = _SPACE.sub("", text)
    return (district or None), (text or None)


def _sex(patient: dict[str, Any]) -> str | None:
    gender = patient.get("gender")
    return gender if gender in ("male", "female") else None


def _cards(patient: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for ident in patient.get("identifier") or []:
        system, value = ident.get("system"), ident.get("value")
        if system and value and not _encrypted(value):
            out.append((str(system), str(value).strip()))
    return tuple(out)


def extract_features(patient: dict[str, Any]) -> RecordFeatures:
    """Reduce a Patient resource to its comparison features.

    The citizen ID is copied to ``cid`` only when it passes every GB 11643 rule including the
    record's own birth date and sex; otherwise its rule names land in ``cid_problems`` and it is
    kept in ``cid_raw`` only as weak evidence (a one-digit typo still looks like the right number).
    """
    record_id = str(patient.get("id") or "")
    name, family = _name(patient)
    dob = patient.get("birthDate")
    dob = dob[:10] if isinstance(dob, str) and len(dob) >= 10 else None
    sex = _sex(patient)
    district, address = _address(patient)
    cards = _cards(patient)
    cid_raw = next((normalize_citizen_id(v) for s, v in cards if s == systems.CITIZEN_ID), None)
    cid: str | None = None
    problems: tuple[str, ...] = ()
    if cid_raw:
        born = date.fromisoformat(dob) if dob else None
        check = check_citizen_id(cid_raw, birth_date=born, sex=sex)
        problems = check.problems
        cid = check.normalized if check.valid else None
    return RecordFeatures(
        record_id=record_id,
        name=name,
        family=family,
        name_py=to_pinyin(name) if name else None,
        family_py=to_pinyin(family) if family else None,
        dob=dob,
        dob_swap=swap_day_month(dob),
        sex=sex,
        phone=_phone(patient),
        district=district,
        address=address,
        name_a=fold_ascii(name),
        address_a=fold_ascii(address),
        cid=cid,
        cid_raw=cid_raw,
        cid_problems=problems,
        cards=cards,
        cid_raw_key=cid_raw,
        deceased=bool(patient.get("deceasedBoolean") or patient.get("deceasedDateTime")),
    )


def blocking_keys(features: RecordFeatures) -> list[str]:
    """Keys under which a record is indexed and looked up for real-time candidates.

    Chosen so that a true match shares at least one key despite any single error: citizen ID
    (also the raw one), birth date and its swap, pinyin name with birth year, phone, person cards.
    Sealed features (:mod:`rhip.mpi.protect`) carry pseudonyms of the citizen ID and phone, so
    those keys hold no plaintext.
    """
    keys: set[str] = set()
    for cid in (features.cid, features.cid_raw_key):
        if cid:
            keys.add(f"c:{cid}")
    if features.dob:
        keys.add(f"d:{features.dob}")
    if features.dob_swap:
        keys.add(f"d:{features.dob_swap}")
    if features.name_py and features.dob:
        keys.add(f"n:{features.name_py}|{features.dob[:4]}")
    if features.name_py and features.phone:
        keys.add(f"p:{features.phone}")
    for system, value in features.cards:
        if system in PERSON_CARD_SYSTEMS:
            keys.add(f"k:{system}|{value}")
    return sorted(keys)
