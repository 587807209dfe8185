"""Value conversions shared by indexing and querying, so both sides agree exactly.

FHIR search compares strings case- and accent-insensitively, dates as ranges whose width is the
precision of the value, and numbers within the precision they were written with. Both the index
(what a resource holds) and the query (what a client asks) go through these functions.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

from rhip.errors import InvalidRequest

__all__ = [
    "MAX_INDEXED_CHARS",
    "TIME_MAX",
    "TIME_MIN",
    "date_range",
    "normalize",
    "normalized_if_seen",
    "number_range",
    "phonetic_key",
]

#: Longest string kept in a string/uri index row (keeps B-tree entries within PostgreSQL limits).
MAX_INDEXED_CHARS = 512
#: Stand-ins for open period ends (year 1 and year 9999, epoch seconds).
TIME_MIN = -62135596800.0
TIME_MAX = 253402300800.0

_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@lru_cache(maxsize=65536)
def phonetic_key(text: str) -> str:
    """Phonetic key of a name: Chinese characters as toneless pinyin, then normalised, no spaces.

    张三, "Zhang San" and ＺＨＡＮＧＳＡＮ all give ``zhangsan``; Latin names keep their letters.
    """
    if text.isascii():
        return "".join(ch for ch in text.lower() if ch.isalnum())[:MAX_INDEXED_CHARS]
    from pypinyin import lazy_pinyin  # imported on first use: it loads its dictionary

    spelled = "".join(lazy_pinyin(text))
    return "".join(ch for ch in normalize(spelled) if ch.isalnum())


def normalize(text: str) -> str:
    """Lower-case, accent-free, width-folded form used for string matching (NFKD + casefold)."""
    folded = _NORMALIZED.get(text)
    if folded is not None:
        return folded
    size = len(text)
    if text.isascii():
        folded = text.lower()[:MAX_INDEXED_CHARS]
    elif size <= _CACHED_CHARS:
        folded = _normalize_unicode(text)
    elif size <= _CACHED_LONG_CHARS:
        return _normalize_long(text)
    else:
        return _normalize_unicode(text)
    if size <= _CACHED_CHARS:
        if len(_NORMALIZED) >= _NORMALIZED_KEPT:
            _NORMALIZED.clear()
        _NORMALIZED[text] = folded
    return folded


#: Strings up to this length are remembered: codes, systems, names, places and display texts repeat
#: across resources far more than they vary; long free text rarely repeats and would only fill memory.
_CACHED_CHARS = 64
#: How many short strings are remembered; the memory is cleared when full (a feed's vocabulary is
#: re-learnt in a few resources, and clearing costs nothing per look-up, unlike an LRU's bookkeeping).
_NORMALIZED_KEPT = 16384
#: ``normalize`` of every short string seen lately. The indexer looks a string up here inline
#: (:data:`normalized_if_seen`) and calls :func:`normalize` only on a miss, so a repeated code or
#: name costs one dict look-up rather than a Python call.
_NORMALIZED: dict[str, str] = {}
#: ``normalized_if_seen(text)``: ``normalize(text)`` when remembered, else None.
normalized_if_seen = _NORMALIZED.get
#: Longer non-ASCII strings up to this length (code texts, long display names: they repeat with
#: their code) get a small cache of their own, so they cannot push the short names out. Their
#: regex passes cost ~40 ns a character, so one hit saves tens of microseconds.
_CACHED_LONG_CHARS = MAX_INDEXED_CHARS


@lru_cache(maxsize=1024)
def _normalize_long(text: str) -> str:
    return _normalize_unicode(text)


def _normalize_unicode(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    bmp, astral = _combining_marks()
    stripped = bmp.sub("", folded)
    if _ASTRAL.search(stripped):  # rare: marks outside the BMP need the slower class
        stripped = astral.sub("", stripped)
    return unicodedata.normalize("NFC", stripped.casefold())[:MAX_INDEXED_CHARS]


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@lru_cache(maxsize=1)
def _combining_marks() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Character classes of every code point with a non-zero combining class: (BMP, beyond BMP).

    Built once from this interpreter's Unicode tables (a few milliseconds), so removing marks is one
    C-level regex pass instead of a Python call per character. The BMP class is kept apart because
    the regex engine tests a class of BMP characters with one bitmap look-up, but a class that also
    holds astral characters range by range (hundreds of ranges: ~10x slower per character).
    """
    # planes 0-1 and 14 hold every mark; the others are ideographs, private use or unassigned
    scan = itertools.chain(range(0x20000), range(0xE0000, 0xE1000))
    points = [cp for cp in scan if unicodedata.combining(chr(cp))]
    return (
        _char_class([cp for cp in points if cp <= 0xFFFF]),
        _char_class([cp for cp in points if cp > 0xFFFF]),
    )


def _char_class(points: list[int]) -> re.Pattern[str]:
    """One regex matching runs of the given (sorted) code points, written as ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )
    return re.compile(f"[{body}]+")


@lru_cache(maxsize=1)
def _local_zone() -> tzinfo:
    from rhip.config import get_settings

    try:
        return ZoneInfo(get_settings().timezone)
    except Exception:  # an unknown zone name must not break indexing
        return UTC


@lru_cache(maxsize=32768)
def date_range(text: str) -> tuple[float, float] | None:
    """The range ``[low, high)`` in epoch seconds that a FHIR date/dateTime/instant covers.

    The width is the precision written: ``2020`` covers the year, ``2020-03-01T10:00`` a minute,
    ``...:05.123`` a millisecond. Values without a zone are read in the configured local zone.
    Returns None when the text is not a FHIR date. Cached (birth dates, visit days and the times
    of one batch repeat), and with no wrapper around the cache: the indexer calls it per date.
    """
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    try:
        if zone is not None:  # day, hour and minute are there too: the regex nests them
            return _offset_range(int(year), int(month), int(day), int(hour), int(minute), sec, frac, zone)
        return aware_range(year, month, day, hour, minute, sec, frac, _local_zone())
    except (ValueError, OverflowError):
        return None


def aware_range(
    year: str,
    month: str | None,
    day: str | None,
    hour: str | None,
    minute: str | None,
    sec: str | None,
    frac: str | None,
    tz: tzinfo,
) -> tuple[float, float]:
    """``[low, high)`` in epoch seconds of a date written to some precision, read in ``tz``.

    The definition through aware datetimes: values without a zone use it, and the integer fast
    path for explicit offsets must give the same floats (tests compare the two). Raises ValueError
    or OverflowError for dates that do not exist.
    """
    y = int(year)
    hi: datetime | None
    if month is None:
        lo = datetime(y, 1, 1, tzinfo=tz)
        hi = datetime(y + 1, 1, 1, tzinfo=tz) if y < 9999 else None
    elif day is None:
        mo = int(month)
        lo = datetime(y, mo, 1, tzinfo=tz)
        hi = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=tz) if y < 9999 or mo < 12 else None
    else:
        lo = datetime(y, int(month), int(day), tzinfo=tz)
        if hour is None:
            hi = lo + timedelta(days=1)
        else:
            lo = lo.replace(hour=int(hour), minute=int(minute or 0), second=int(sec or 0))
            if sec is None:
                hi = lo + timedelta(minutes=1)
            elif frac:
                lo = lo + timedelta(seconds=float(frac))
                hi = lo + timedelta(seconds=_width_seconds(frac))
            else:
                hi = lo + timedelta(seconds=1)
    return lo.timestamp(), (hi.timestamp() if hi is not None else TIME_MAX)


_EPOCH_DAY = date(1970, 1, 1).toordinal()
#: Wall-clock microseconds (from 1970-01-01) of 10000-01-01: datetime arithmetic overflows there.
_WALL_END_US = (date(9999, 12, 31).toordinal() + 1 - _EPOCH_DAY) * 86_400_000_000
_ONE_US = timedelta(microseconds=1)


def _width_seconds(frac: str) -> float:
    """The width of a time written with fraction ``frac`` (``.123``: a millisecond)."""
    return 10.0 ** -(len(frac) - 1)


def _micros(seconds: float) -> int:
    """Whole microseconds of a float number of seconds, rounded as ``timedelta`` rounds them."""
    return timedelta(seconds=seconds) // _ONE_US


def _offset_range(
    y: int, mo: int, d: int, hour: int, minute: int, sec: str | None, frac: str | None, zone: str
) -> tuple[float, float] | None:
    """:func:`date_range` of a time with an explicit offset, in integer microseconds.

    The same numbers as building aware datetimes and calling ``timestamp()`` (which divides the
    microseconds since the epoch by 10**6): the bounds are the same integers, divided the same way,
    and values datetime refuses (hour 24, second 60, offsets of a day or more, times past year
    9999) give None as they did. Four times faster, which matters because measurement times rarely
    repeat. Raises ValueError for a date that does not exist.
    """
    second = int(sec or 0)
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[4:6]))
    if hour > 23 or minute > 59 or second > 59 or abs(offset) >= 1440:
        return None
    days = date(y, mo, d).toordinal() - _EPOCH_DAY
    lo = (days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000
    if sec is None:
        width = 60_000_000
    elif frac:
        lo += _micros(float(frac))
        width = _micros(_width_seconds(frac))
    else:
        width = 1_000_000
    hi = lo + width
    if hi >= _WALL_END_US:
        return None
    shift = offset * 60_000_000
    return (lo - shift) / 1_000_000, (hi - shift) / 1_000_000


def number_range(text: str) -> tuple[float, float, float]:
    """``(value, low, high)`` for a search number: the range implied by its significant digits.

    ``100`` means [99.5, 100.5); ``1e2`` (one significant figure) means [50, 150);
    ``5.40`` means [5.395, 5.405).
    Raises InvalidRequest for text that is not a number.
    """
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidRequest(f"search value {text[:40]!r} is not a number") from None
    if not d.is_finite():
        raise InvalidRequest("search value is not a finite number")
    exp = int(d.as_tuple().exponent)
    half = Decimal(5) * Decimal(10) ** (exp - 1)
    return float(d), float(d - half), float(d + half)
