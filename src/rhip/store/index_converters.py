"""Value converters of index extraction: an element's value -> its index rows' value columns.

One converter factory per search-parameter type (strings and their pinyin keys, tokens, dates,
references with :func:`parse_reference` and its bounded cache of parsed strings, quantities,
numbers, uris) gives each path its converter when :mod:`rhip.store.index_extract` compiles a
resource type's plan. The converters run for every value indexed in a bulk load, so they do no
work that depends only on the parameter, and call no comprehension or generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from rhip.fhir.search_params import PathSpec
from rhip.store.search_values import (
    MAX_INDEXED_CHARS,
    TIME_MAX,
    TIME_MIN,
    date_range,
    normalize,
    normalized_if_seen,
    phonetic_key,
)

__all__ = ["Convert", "Vals", "local_part", "own_prefixes", "parse_reference"]

#: Value columns of one index row (the columns after ``res_type``, ``res_id``, ``param``).
Vals = tuple[Any, ...]

# --- value converters: element value -> value tuples in index-table column order ---------------
# (the columns after res_type, res_id, param; see rhip.store.index_schema)
#
# Each path gets its converter once, when its type's plan is compiled: the branches that depend
# only on the parameter (its type, the path's element type, a constant, a target type) are taken
# then, so converting a value only tests the value. Converters may return shared tuples: callers
# read what they get and never change it.

#: A path's compiled converter: an element value -> its value tuples.
Convert = Callable[[Any], Sequence[Vals]]
_NONE: tuple[Vals, ...] = ()

#: ``normalize`` of a string seen lately, else None: inline as ``_seen(s) or normalize(s)``, because
#: most strings indexed (codes' displays, names, places) repeat and a dict look-up is far cheaper
#: than a call.
_seen = normalized_if_seen

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string_parts(parts: tuple[str, ...], v: dict[str, Any]) -> list[str]:
    """The non-empty strings of the given parts of a HumanName or Address (or any other object).

    Plain loops rather than comprehensions here and below: in this interpreter each comprehension
    or generator is a call of its own, and these run for every name and address indexed.
    """
    out: list[str] = []
    for key in parts:
        part = v.get(key)
        if part is None:
            continue
        if isinstance(part, list):
            for s in part:
                if isinstance(s, str) and s:
                    out.append(s)
        elif isinstance(part, str) and part:
            out.append(part)
    return out


def _strings_converter(p: PathSpec) -> Convert:
    parts = _NAME_PARTS if p.elem_type == "HumanName" else _ADDRESS_PARTS

    def strings(v: Any) -> Sequence[Vals]:
        if isinstance(v, str):
            return ((_seen(v) or normalize(v), v[:MAX_INDEXED_CHARS]),)
        if not isinstance(v, dict):
            return _NONE
        out: list[Vals] = []
        for s in _string_parts(parts, v):
            out.append((_seen(s) or normalize(s), s[:MAX_INDEXED_CHARS]))
        return out

    return strings


def _phonetic_converter(p: PathSpec) -> Convert:
    parts = _NAME_PARTS if p.elem_type == "HumanName" else _ADDRESS_PARTS

    def phonetic(v: Any) -> Sequence[Vals]:
        if isinstance(v, str):
            exact = v[:MAX_INDEXED_CHARS]
            return ((phonetic_key(exact), exact),)
        if not isinstance(v, dict):
            return _NONE
        out: list[Vals] = []
        for s in _string_parts(parts, v):
            exact = s[:MAX_INDEXED_CHARS]
            out.append((phonetic_key(exact), exact))
        return out

    return phonetic


_TRUE: tuple[Vals, ...] = ((None, "true", None),)
_FALSE: tuple[Vals, ...] = ((None, "false", None),)


def _scalar_tokens(v: Any) -> Sequence[Vals]:
    """Token rows of a value that is not an object (codes and booleans); an object gives none,
    which is all element types other than those of :data:`_TOKENS_BY_ELEMENT` give."""
    if isinstance(v, str):
        return ((None, v[:MAX_INDEXED_CHARS], None),)
    if isinstance(v, bool):
        return _TRUE if v else _FALSE
    return _NONE


def _concept_tokens(v: Any) -> Sequence[Vals]:
    """A CodeableConcept: one row per coding (display, else the concept's text), then the text."""
    if not isinstance(v, dict):
        return _scalar_tokens(v)
    text = v.get("text")
    ntext = (_seen(text) or normalize(text)) if isinstance(text, str) else None
    out: list[Vals] = []
    for c in v.get("coding") or ():
        if isinstance(c, dict):
            display = c.get("display")
            out.append(
                (
                    c.get("system"),
                    c.get("code"),
                    (_seen(display) or normalize(display)) if isinstance(display, str) else ntext,
                )
            )
    if ntext is not None:
        out.append((None, None, ntext))
    return out


def _coding_tokens(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _scalar_tokens(v)
    display = v.get("display")
    return (
        (
            v.get("system"),
            v.get("code"),
            (_seen(display) or normalize(display)) if isinstance(display, str) else None,
        ),
    )


def _identifier_tokens(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _scalar_tokens(v)
    if v.get("value") is None and not v.get("type"):
        return _NONE
    type_text = (v.get("type") or {}).get("text")
    ntype = (_seen(type_text) or normalize(type_text)) if isinstance(type_text, str) else None
    return ((v.get("system"), v.get("value"), ntype),)


def _contact_tokens(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _scalar_tokens(v)
    value = v.get("value")
    return ((v.get("system"), value, None),) if isinstance(value, str) else _NONE


_TOKENS_BY_ELEMENT: dict[str, Convert] = {
    "CodeableConcept": _concept_tokens,
    "Coding": _coding_tokens,
    "Identifier": _identifier_tokens,
    "ContactPoint": _contact_tokens,
}


def _tokens_converter(p: PathSpec) -> Convert:
    if p.const is not None:
        const: tuple[Vals, ...] = ((None, p.const, None),)
        return lambda _v: const
    return _TOKENS_BY_ELEMENT.get(p.elem_type, _scalar_tokens)


def _period(v: dict[str, Any]) -> tuple[float, float] | None:
    start, end = v.get("start"), v.get("end")
    lo = date_range(start) if isinstance(start, str) else None
    hi = date_range(end) if isinstance(end, str) else None
    if lo is None and hi is None:
        return None
    return (lo[0] if lo else TIME_MIN), (hi[1] if hi else TIME_MAX)


def _timing(v: dict[str, Any]) -> tuple[float, float] | None:
    ranges = [r for r in (date_range(e) for e in v.get("event") or () if isinstance(e, str)) if r]
    bounds = (v.get("repeat") or {}).get("boundsPeriod")
    if isinstance(bounds, dict) and (b := _period(bounds)):
        ranges.append(b)
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _dates_converter(p: PathSpec) -> Convert:
    of_object = {"Period": _period, "Timing": _timing}.get(p.elem_type)

    def dates(v: Any) -> Sequence[Vals]:
        if isinstance(v, str):
            rng = date_range(v)
        elif of_object is not None and isinstance(v, dict):
            rng = of_object(v)
        else:
            return _NONE
        return _NONE if rng is None else (rng,)

    return dates


#: Where this server's FHIR API lives under its base URL (``RHIP_BASE_URL``).
FHIR_PATH = "/fhir"


def own_prefixes(base_url: str) -> tuple[str, str]:
    """The prefixes an absolute reference to this server starts with: the FHIR base, then the base.

    ``base_url`` may be the configured base (``http://host:8080``) or the FHIR base the API
    reports (``http://host:8080/fhir``); either gives ``("<base>/fhir/", "<base>/")``, longest
    first, so that ``<base>/fhir/Patient/1`` loses the whole FHIR base and not only the host.
    """
    root = base_url.rstrip("/")
    if root.endswith(FHIR_PATH):
        root = root[: -len(FHIR_PATH)]
    return root + FHIR_PATH + "/", root + "/"


def local_part(ref: str, base_url: str) -> str | None:
    """``ref`` relative to this server (``Patient/1``) when it is an absolute URL of it, else None."""
    for prefix in own_prefixes(base_url):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None


@lru_cache(maxsize=1)
def _own_base() -> str:
    from rhip.config import get_settings

    return get_settings().base_url


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """``(target_type, target_id, url)`` of a reference string.

    Relative references, and absolute ones under this server's FHIR base or base URL
    (``<RHIP_BASE_URL>/fhir/Patient/1``, ``<RHIP_BASE_URL>/Patient/1``: they resolve to this
    server, so FHIR counts them as local), give type and id; other absolute URLs and URNs give
    the url (and the type when the URL ends in ``Type/id``) but no id, so they never match a
    local resource that happens to share the id.
    """
    if ref.startswith("#"):
        return None, None, None
    if "://" in ref or ref.startswith("urn:"):
        local = local_part(ref, _own_base())
        if local is None:
            parts = ref.split("/")
            if len(parts) >= 4 and parts[-2] == "_history":
                parts = parts[:-2]
            ttype = parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha() else None
            return ttype, None, ref
        ref = local
    parts = ref.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2:
        return parts[0], parts[1], None
    return None, None, ref


#: :func:`parse_reference` of the reference strings seen lately (a patient's or an encounter's
#: reference repeats in each of its records); cleared when full. The answers depend only on the
#: string and this server's base URL, which a process keeps.
_PARSED_REFERENCES: dict[str, tuple[str | None, str | None, str | None]] = {}
_PARSED_REFERENCES_KEPT = 16384
#: References longer than this are parsed each time (rare, and they would only fill memory).
_PARSED_REFERENCE_CHARS = 256


#: ``_reference_seen(ref) or _parse_and_keep(ref)``: the parse of ``ref``, a dict look-up when seen.
_reference_seen = _PARSED_REFERENCES.get


def _parse_and_keep(ref: str) -> tuple[str | None, str | None, str | None]:
    parsed = parse_reference(ref)
    if len(ref) <= _PARSED_REFERENCE_CHARS:
        if len(_PARSED_REFERENCES) >= _PARSED_REFERENCES_KEPT:
            _PARSED_REFERENCES.clear()
        _PARSED_REFERENCES[ref] = parsed
    return parsed


def _references_converter(p: PathSpec) -> Convert:
    is_type = p.is_type

    def references(v: Any) -> Sequence[Vals]:
        if isinstance(v, str):  # canonical / uri
            return ((None, None, v.split("|", 1)[0][:MAX_INDEXED_CHARS], None, None),)
        if not isinstance(v, dict):
            return _NONE
        ref = v.get("reference")
        ttype, tid, url = (
            (_reference_seen(ref) or _parse_and_keep(ref)) if isinstance(ref, str) else (None, None, None)
        )
        if ttype is None and isinstance(v.get("type"), str) and tid is None:
            ttype = v["type"] if ref is None else None
        if is_type is not None and ttype != is_type:
            return _NONE
        ident = v.get("identifier")
        isys = ival = None
        if isinstance(ident, dict):
            isys, ival = ident.get("system"), ident.get("value")
        if tid is None and url is None and ival is None:
            return _NONE
        return ((ttype, tid, url[:MAX_INDEXED_CHARS] if url else None, isys, ival),)

    return references


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _range_quantities(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _NONE
    low, high = v.get("low") or {}, v.get("high") or {}
    lo, hi = _num(low.get("value")), _num(high.get("value"))
    if lo is None and hi is None:
        return _NONE
    unit = low or high
    return (
        (
            lo if lo is not None else float("-1e300"),
            hi if hi is not None else 1e300,
            unit.get("system"),
            unit.get("code"),
            unit.get("unit"),
        ),
    )


def _money_quantities(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _NONE
    val = _num(v.get("value"))
    return _NONE if val is None else ((val, val, "urn:iso:std:iso:4217", v.get("currency"), None),)


def _plain_quantities(v: Any) -> Sequence[Vals]:
    if not isinstance(v, dict):
        return _NONE
    val = _num(v.get("value"))
    return _NONE if val is None else ((val, val, v.get("system"), v.get("code"), v.get("unit")),)


def _quantities_converter(p: PathSpec) -> Convert:
    return {"Range": _range_quantities, "Money": _money_quantities}.get(p.elem_type, _plain_quantities)


def _numbers(v: Any) -> Sequence[Vals]:
    val = _num(v)
    return _NONE if val is None else ((val, val),)


def _uris(v: Any) -> Sequence[Vals]:
    return ((v[:MAX_INDEXED_CHARS],),) if isinstance(v, str) else _NONE


#: Search parameter type -> the factory of a path's converter.
_CONVERTERS: dict[str, Callable[[PathSpec], Convert]] = {
    "string": _strings_converter,
    "token": _tokens_converter,
    "date": _dates_converter,
    "reference": _references_converter,
    "quantity": _quantities_converter,
    "number": lambda _p: _numbers,
    "uri": lambda _p: _uris,
}


def _converter(kind: str, p: PathSpec, algorithm: str | None = None) -> Convert:
    """The compiled converter of path ``p`` of a parameter of type ``kind``."""
    if algorithm == "pinyin":
        return _phonetic_converter(p)
    return _CONVERTERS[kind](p)
