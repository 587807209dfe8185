"""Citizen ID numbers (居民身份证号码) under GB 11643-1999: checksum, birth date, sex and region.

The citizen ID is the root of trust for resident identity, so the platform must never trust a
number that fails any of the standard's rules: an invalid one is flagged, not used for linking.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date

from rhip.fhir.primitives import is_ascii_digits

#: Weights W_i = 2^(17-i) mod 11 for positions 1..17 (GB 11643-1999, ISO 7064 MOD 11-2).
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")


def check_digit(first17: str) -> str:
    """The GB 11643 check character ('0'-'9' or 'X') for the first 17 digits."""
    if len(first17) != 17 or not is_ascii_digits(first17):
        raise ValueError("need exactly 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


@dataclass(frozen=True)
class CitizenIdCheck:
    """Outcome of checking one number; ``problems`` lists rule names, empty when valid."""

    normalized: str
    problems: tuple[str, ...]
    birth_date: date | None = None
    sex: str | None = None  # "male" | "female"
    region: str | None = None  # six-digit GB/T 2260 code of the place of registration

    @property
    def valid(self) -> bool:
        return not self.problems


def normalize_citizen_id(value: str) -> str:
    """Trim, fold full-width digits/letters to half-width and upper-case the check letter."""
    folded = "".join(chr(ord(c) - 0xFEE0) if "！" <= c <= "～" else c for c in value)
    return re.sub(r"\s+", "", folded).upper()


def check_citizen_id(value: str, *, birth_date: date | None = None, sex: str | None = None) -> CitizenIdCheck:
    """Check an 18-digit citizen ID against GB 11643 and, when given, the record's birth date and sex.

    Problems reported: ``format`` (not 17 digits + digit/X), ``checksum``, ``birth-date`` (not a
    real date, or in the future), ``region`` (first two digits not a province code),
    ``birth-date-mismatch`` and ``sex-mismatch`` against the record.
    """
    if birth_date is None and sex is None:
        # ingest checks each number twice (canonicalisation, then the quality rule): remembered
        # per day, since "in the future" depends on it
        return _check_number(value, date.today())
    return _check(value, birth_date, sex, date.today())


@functools.lru_cache(maxsize=4096)
def _check_number(value: str, today: date) -> CitizenIdCheck:
    return _check(value, None, None, today)


def _check(value: str, birth_date: date | None, sex: str | None, today: date) -> CitizenIdCheck:
    number = normalize_citizen_id(value)
    if not _SHAPE.match(number):
        return CitizenIdCheck(number, ("format",))
    problems: list[str] = []
    if check_digit(number[:17]) != number[17]:
        problems.append("checksum")
    born: date | None
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        if born > today or born.year < 1880:
            problems.append("birth-date")
    except ValueError:
        born = None
        problems.append("birth-date")
    if not (11 <= int(number[:2]) <= 82):
        problems.append("region")
    encoded_sex = "male" if int(number[16]) % 2 == 1 else "female"
    if birth_date is not None and born is not None and born != birth_date:
        problems.append("birth-date-mismatch")
    if sex in ("male", "female") and sex != encoded_sex:
        problems.append("sex-mismatch")
    return CitizenIdCheck(number, tuple(problems), born, encoded_sex, number[:6])


def make_citizen_id(region: str, born: date, sequence: int, sex: str) -> str:
    """Build a valid number: region (6 digits) + YYYYMMDD + 3-digit sequence (odd male, even female)."""
    if len(region) != 6 or not is_ascii_digits(region):
        raise ValueError("region must be a six-digit division code")
    seq = sequence % 1000
    if (seq % 2 == 1) != (sex == "male"):
        seq = (seq + 1) % 1000
    first17 = f"{region}{born:%Y%m%d}{seq:03d}"
    return first17 + check_digit(first17)
