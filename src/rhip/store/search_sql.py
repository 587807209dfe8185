"""Pure functions turning one search value into SQL predicates on an index table.

Each ``*_clause`` function takes an index-table alias and a parsed search value and returns a
SQLAlchemy boolean expression with every value bound, never formatted into SQL text. The rules are
those of the FHIR R4 search page: strings match case- and accent-insensitively from the start,
tokens as ``system|code``, dates and numbers as ranges with the precision of the value written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, literal, not_, or_, true
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.expression import FromClause

from rhip.errors import InvalidRequest, NotSupported
from rhip.store.index_converters import local_part
from rhip.store.index_extract import stored_params
from rhip.store.search_values import MAX_INDEXED_CHARS, date_range, normalize, number_range, phonetic_key

__all__ = [
    "PREFIXES",
    "composite_clause",
    "date_clause",
    "number_clause",
    "param_clause",
    "quantity_clause",
    "range_clause",
    "reference_clause",
    "split_prefix",
    "split_values",
    "string_clause",
    "token_clause",
    "uri_clause",
]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_TOP = chr(0x10FFFF)


#: Alternatives joined flat below this many; above it, in a balanced tree of parenthesised halves.
_FLAT_OR = 64


def any_of(alternatives: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    """``a OR b OR ...`` for a parameter's comma-separated values, however many there are.

    SQLite parses a flat OR chain into a tree as deep as the chain is long and refuses an
    expression deeper than 1,000 ("Expression tree is too large"): a search with about 500
    values failed with a 500 (a practitioner's consent look-up for a page of residents asks for
    that many). Parenthesised halves keep the depth logarithmic; the meaning is the same.
    """
    if len(alternatives) == 1:
        return alternatives[0]
    if len(alternatives) <= _FLAT_OR:
        return or_(*alternatives)
    half = len(alternatives) // 2
    left, right = Grouping(any_of(alternatives[:half])), Grouping(any_of(alternatives[half:]))
    return left.op("OR", is_comparison=True)(right)  # or_() would flatten the halves into one chain


def param_clause(t: FromClause, res_type: str, name: str) -> ColumnElement[bool]:
    """Rows of index table ``t`` that belong to ``res_type``'s parameter ``name``.

    Usually ``param = name``; a parameter that shares rows with others (see
    :mod:`rhip.store.index_sharing`) also reads theirs: ``param IN ('combo-code', 'code', ...)``,
    or ``param = 'subject' AND target_type = 'Patient'`` for Observation ``patient``.
    """
    entries = stored_params(res_type, name)
    plain = [param for param, target in entries if target is None]
    terms: list[ColumnElement[bool]] = []
    if plain:
        terms.append(t.c.param == plain[0] if len(plain) == 1 else t.c.param.in_(plain))
    for param, target in entries:
        if target is not None:
            terms.append(and_(t.c.param == param, t.c.target_type == target))
    return terms[0] if len(terms) == 1 else or_(*terms)


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives (OR), honouring ``\\,`` escapes."""
    out, cur, i = [], [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in ",$|\\":
            cur.append(raw[i : i + 2])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _split_escaped(raw: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw):
            cur.append(raw[i + 1])
            i += 2
            continue
        if raw[i] == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(raw[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(raw: str) -> str:
    return _split_escaped(raw, "\x00")[0]


def split_prefix(raw: str) -> tuple[str, str]:
    """``("ge", "2020")`` from ``ge2020``; ``eq`` when no prefix is written."""
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] in "-+."):
        return raw[:2], raw[2:]
    return "eq", raw


def _starts_with(col: Any, text: str) -> ColumnElement[bool]:
    """Prefix match as a range, so a plain B-tree index serves it on both back ends."""
    text = text[:MAX_INDEXED_CHARS]
    return and_(col >= text, col < text + _TOP)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def string_clause(
    t: FromClause, modifier: str | None, raw: str, phonetic: bool = False
) -> ColumnElement[bool]:
    """String: starts-with on the normalised form; ``:exact`` and ``:contains``.

    ``phonetic`` parameters compare phonetic keys (pinyin) instead of the normalised text.
    """
    value = _unescape(raw)
    if modifier == "exact":
        return t.c.exact == value[:MAX_INDEXED_CHARS]
    norm = phonetic_key(value) if phonetic else normalize(value)
    if modifier == "contains":
        return t.c.norm.like("%" + _like_escape(norm) + "%", escape="\\")
    return _starts_with(t.c.norm, norm)


def _system_code(t: FromClause, raw: str, sys_col: str, code_col: str) -> ColumnElement[bool]:
    parts = _split_escaped(raw, "|", 1)
    if len(parts) == 1:
        return t.c[code_col] == parts[0]
    system, code = parts
    if system == "":
        return and_(t.c[sys_col].is_(None), t.c[code_col] == code)
    if code == "":
        return t.c[sys_col] == system
    return and_(t.c[sys_col] == system, t.c[code_col] == code)


def token_clause(t: FromClause, modifier: str | None, raw: str) -> ColumnElement[bool]:
    """Token: ``code``, ``system|code``, ``|code``, ``system|``; ``:text`` on display text.

    ``:not`` is handled by the caller (it negates the whole parameter).
    """
    if modifier == "text":
        return _starts_with(t.c.text, normalize(_unescape(raw)))
    return _system_code(t, raw, "system", "code")


def range_clause(lo_col: Any, hi_col: Any, prefix: str, s_lo: float, s_hi: float) -> ColumnElement[bool]:
    """Compare a stored range ``[lo_col, hi_col)`` with the search range ``[s_lo, s_hi)``."""
    # ``lo_col < s_hi`` / ``lo_col < s_lo`` below are implied (stored ranges have low < high) but
    # bound the index range scan on (param, low), which is what makes these prefixes fast.
    contained = and_(lo_col >= s_lo, hi_col <= s_hi)
    if prefix == "eq":
        return and_(lo_col >= s_lo, lo_col < s_hi, hi_col <= s_hi)
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return hi_col > s_hi
    if prefix == "lt":
        return lo_col < s_lo
    if prefix == "ge":
        return or_(hi_col > s_hi, contained)
    if prefix == "le":
        return or_(lo_col < s_lo, contained)
    if prefix == "sa":
        return lo_col >= s_hi
    if prefix == "eb":
        return and_(lo_col < s_lo, hi_col <= s_lo)
    raise InvalidRequest(f"unknown prefix {prefix!r}")


def date_clause(t: FromClause, raw: str, lo: str = "low", hi: str = "high") -> ColumnElement[bool]:
    """Date with prefix; the search range is the precision of the value written."""
    prefix, text = split_prefix(raw)
    rng = date_range(text)
    if rng is None:
        raise InvalidRequest(f"search value {text[:40]!r} is not a FHIR date")
    s_lo, s_hi = rng
    if prefix == "ap":
        gap = 0.1 * abs(time.time() - s_lo)
        return and_(t.c[lo] < s_hi + gap, t.c[hi] > s_lo - gap)
    return range_clause(t.c[lo], t.c[hi], prefix, s_lo, s_hi)


def _number(lo_col: Any, hi_col: Any, raw: str) -> ColumnElement[bool]:
    prefix, text = split_prefix(raw)
    value, s_lo, s_hi = number_range(text)
    if prefix == "eq":
        return and_(lo_col >= s_lo, hi_col < s_hi)
    if prefix == "ne":
        return not_(and_(lo_col >= s_lo, hi_col < s_hi))
    if prefix == "ap":
        margin = abs(value) * 0.1 or (s_hi - s_lo) / 2
        return and_(lo_col <= value + margin, hi_col >= value - margin)
    ops = {
        "gt": hi_col > value,
        "sa": lo_col > value,
        "lt": lo_col < value,
        "eb": hi_col < value,
        "ge": hi_col >= value,
        "le": lo_col <= value,
    }
    return ops[prefix]


def number_clause(t: FromClause, raw: str) -> ColumnElement[bool]:
    """Number with prefix; ``eq`` means within the precision of the value written."""
    return _number(t.c.low, t.c.high, raw)


def quantity_clause(
    t: FromClause,
    raw: str,
    lo: str = "low",
    hi: str = "high",
    system: str = "system",
    code: str = "code",
    unit: str | None = "unit",
) -> ColumnElement[bool]:
    """Quantity ``[prefix]number|system|code`` (``number||code`` matches code or unit)."""
    parts = _split_escaped(raw, "|", 2)
    cond = _number(t.c[lo], t.c[hi], parts[0])
    if len(parts) == 1:
        return cond
    if len(parts) != 3:
        raise InvalidRequest("quantity search value must be number|system|code")
    sys_v, code_v = parts[1], parts[2]
    if sys_v:
        cond = and_(cond, t.c[system] == sys_v)
    if code_v:
        code_match = t.c[code] == code_v
        if not sys_v and unit is not None:
            code_match = or_(code_match, t.c[unit] == code_v)
        cond = and_(cond, code_match)
    return cond


def reference_clause(t: FromClause, modifier: str | None, raw: str, base_url: str) -> ColumnElement[bool]:
    """Reference by id, ``Type/id``, absolute URL, ``:[type]`` and ``:identifier``."""
    value = _unescape(raw)
    if modifier == "identifier":
        return _system_code(t, raw, "ident_system", "ident_value")
    if modifier is not None:  # :[type]
        rid = value.rsplit("/", 1)[-1] if "/" in value and "://" not in value else value
        return and_(t.c.target_type == modifier, t.c.target_id == rid)
    value = local_part(value, base_url) or value
    if "://" in value or value.startswith("urn:"):
        return t.c.url == value.split("|", 1)[0]
    parts = value.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2:
        return and_(t.c.target_type == parts[0], t.c.target_id == parts[1])
    return t.c.target_id == value


def uri_clause(t: FromClause, modifier: str | None, raw: str) -> ColumnElement[bool]:
    """Uri: exact; ``:below`` (value is a prefix of the stored uri), ``:above`` (the reverse)."""
    value = _unescape(raw)[:MAX_INDEXED_CHARS]
    if modifier == "below":
        return _starts_with(t.c.uri, value)
    if modifier == "above":
        return and_(
            func.length(t.c.uri) <= len(value),
            func.substr(literal(value), 1, func.length(t.c.uri)) == t.c.uri,
        )
    return t.c.uri == value


def composite_clause(t: FromClause, second_type: str, raw: str) -> ColumnElement[bool]:
    """Composite ``token$value`` (second part token, quantity, date or string)."""
    parts = _split_escaped(raw, "$", 1)
    if len(parts) != 2:
        raise InvalidRequest("composite search value must have two parts joined by '$'")
    first = raw.split("$", 1)[0] if "\\$" not in raw else parts[0]
    cond = _system_code(t, first, "system1", "code1")
    second = parts[1]
    if second_type == "token":
        return and_(cond, _system_code(t, second, "system2", "code2"))
    if second_type == "quantity":
        return and_(cond, quantity_clause(t, second, "low2", "high2", "system2", "code2", "text2"))
    if second_type == "date":
        return and_(cond, date_clause(t, second, "low2", "high2"))
    if second_type == "string":
        return and_(cond, _starts_with(t.c.text2, normalize(second)))
    raise NotSupported(f"composite search with a {second_type} component")


def truth(value: bool) -> ColumnElement[bool]:
    """A literal true/false predicate."""
    return true() if value else false()
