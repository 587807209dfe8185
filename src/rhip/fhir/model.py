"""The FHIR R4 structure model, compiled once from the package's r4_model.json into walkable tables.

``scripts/gen_fhir_model.py`` derives r4_model.json from the official R4 StructureDefinitions; this
module turns it into ``TypeTable`` objects whose ``props`` map every JSON property name (choice
types already expanded, e.g. ``valueQuantity``) to a ready-to-use ``Prop``. Validation and
reference iteration walk resources against these tables with plain dict lookups, which is what
keeps them fast enough for bulk ingest.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Final

import orjson

#: Kinds of a property's value.
PRIMITIVE: Final = 0
COMPLEX: Final = 1
RESOURCE: Final = 2

#: Modes of a property: how the validator's hot loop dispatches on it.
MODE_STRING: Final = 0
MODE_CODE: Final = 1
MODE_COMPLEX: Final = 2
MODE_DATE: Final = 3
MODE_COMPLEX_ARRAY: Final = 4
MODE_BOOLEAN: Final = 5
MODE_REFERENCE: Final = 6
MODE_OTHER: Final = 7
MODE_MEMO: Final = 8
MODE_MEMO_ARRAY: Final = 9
MODE_DECIMAL: Final = 10
#: A string/markdown value (R4's string regex), and an array of them: checked inline.
MODE_TEXT: Final = 11
MODE_TEXT_ARRAY: Final = 12

#: Datatypes whose values repeat across records (codes, and quantities: vital signs and lab values
#: take few distinct values with their units): validated once per distinct value.
_MEMO_TYPES: Final = frozenset({"CodeableConcept", "Coding", "Quantity"})

_DATE_TYPES: Final = frozenset({"date", "dateTime", "instant"})
_NON_STRING: Final = frozenset(
    {"boolean", "integer", "positiveInt", "unsignedInt", "decimal", "xhtml", "base64Binary"}
)

#: A primitive check: returns None when the JSON value is acceptable, else a short rule name.
PrimitiveCheck = Callable[[Any], str | None]

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
#: Integral decimals the store can encode (orjson: signed and unsigned 64-bit).
DECIMAL_INT_MIN: Final = -(2**63)
DECIMAL_INT_MAX: Final = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Prop:
    """One JSON property of a type: how to check its value(s)."""

    name: str
    type_name: str
    kind: int
    is_array: bool
    min: int
    check: PrimitiveCheck | None = None
    table: TypeTable | None = None
    choice: str | None = None
    codes: frozenset[str] | None = None
    value_set: str | None = None
    targets: frozenset[str] | None = None
    ext_sibling: bool = True
    #: bound ``fullmatch`` of the R4 regex for string-valued primitives (None otherwise).
    match: Callable[[str], Any] | None = None
    #: one of the MODE_* constants (single/array, primitive/complex, with required codes, other).
    mode: int = MODE_OTHER


def _mode(kind: int, is_array: bool, codes: frozenset[str] | None, type_name: str) -> int:
    if kind == PRIMITIVE:
        if is_array:
            return MODE_OTHER
        if type_name == "boolean":
            return MODE_BOOLEAN
        if type_name == "decimal":
            return MODE_DECIMAL
        if type_name in _NON_STRING:
            return MODE_OTHER
        if type_name in _DATE_TYPES:
            return MODE_DATE
        return MODE_CODE if codes is not None else MODE_STRING
    if kind == COMPLEX:
        if type_name == "Reference":
            return MODE_OTHER if is_array else MODE_REFERENCE
        if type_name == "Extension":
            return MODE_OTHER  # the general path also checks ext-1
        if type_name in _MEMO_TYPES:
            return MODE_MEMO_ARRAY if is_array else MODE_MEMO
        return MODE_COMPLEX_ARRAY if is_array else MODE_COMPLEX
    return MODE_OTHER


def _prop_mode(
    kind: int,
    is_array: bool,
    codes: frozenset[str] | None,
    type_name: str,
    match: Callable[[str], Any] | None,
) -> int:
    """The mode of a property: free text (string, markdown: the commonest values) gets its own."""
    if kind == PRIMITIVE and codes is None and match is _is_fhir_string:
        return MODE_TEXT_ARRAY if is_array else MODE_TEXT
    return _mode(kind, is_array, codes, type_name)


@dataclass(slots=True, eq=False)
class TypeTable:
    """A resource, complex datatype or backbone element (named by its path, e.g. ``Patient.contact``)."""

    name: str
    kind: str
    props: dict[str, Prop] = field(default_factory=dict)
    #: (name, "_" + name) of each element with min >= 1.
    required: tuple[tuple[str, str], ...] = ()
    #: (group, variant names) of each choice element with min >= 1.
    required_choices: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class R4Model:
    """The compiled model: type tables by name, the concrete resource types and primitive checks."""

    types: dict[str, TypeTable]
    resource_types: frozenset[str]
    primitives: dict[str, PrimitiveCheck]
    value_sets: dict[str, frozenset[str]]


#: R4's regex of string and markdown values.
STRING_REGEX = r"[ \r\n\t\S]+"


def fullmatcher(regex: str) -> Callable[[str], Any]:
    """``fullmatch`` of an R4 regex under re.ASCII (truthy when the whole value matches).

    re.ASCII gives \\s and \\S the meaning they have in the Java/XML Schema regexes R4 was written
    for (so an ideographic space U+3000 in a Chinese name is a valid string character). The string
    regex is answered by two substring searches instead: its class admits every character but the
    ASCII vertical tab and form feed (the only ASCII whitespace it does not list), and free text is
    the longest input validation sees; ``in`` scans it in C where the regex engine steps through
    it a character at a time.

    No value may hold a NUL character (U+0000): R4 says strings should not contain control
    characters, R5 says they shall not, and PostgreSQL cannot keep one in text or jsonb, so a
    record accepted on SQLite would fail on PostgreSQL. The look-ahead scans in C, once.
    """
    if regex == STRING_REGEX:
        return _is_fhir_string
    return re.compile(r"(?=[^\x00]*\Z)(?:" + regex + ")", re.ASCII).fullmatch


def _is_fhir_string(value: str) -> bool | None:
    if value and "\x0b" not in value and "\x0c" not in value and "\x00" not in value:
        return True
    return None


def _regex_check(regex: str) -> PrimitiveCheck:
    match = fullmatcher(regex)

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return "type"
        if match(value):
            return None
        return "nul" if "\x00" in value else "format"

    return check


def _date_check(regex: str) -> PrimitiveCheck:
    match = re.compile(regex, re.ASCII).fullmatch
    month_days = calendar.monthrange

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return "type"
        if not match(value):
            return "format"
        # the regex allows days 01-31 in every month; only days 29-31 need the calendar
        if (
            len(value) >= 10
            and value[8:10] > "28"
            and int(value[8:10]) > month_days(int(value[0:4]), int(value[5:7]))[1]
        ):
            return "calendar"
        return None

    return check


def _check_boolean(value: Any) -> str | None:
    return None if type(value) is bool else "type"


def _check_integer(value: Any) -> str | None:
    if type(value) is not int:
        return "type"
    return None if _INT32_MIN <= value <= _INT32_MAX else "range"


def _check_positive_int(value: Any) -> str | None:
    if type(value) is not int:
        return "type"
    return None if 1 <= value <= _INT32_MAX else "range"


def _check_unsigned_int(value: Any) -> str | None:
    if type(value) is not int:
        return "type"
    return None if 0 <= value <= _INT32_MAX else "range"


def _check_decimal(value: Any) -> str | None:
    kind = type(value)
    if kind is float:
        # NaN and infinity are not JSON numbers (orjson would store them as null)
        return None if value - value == 0 else "range"
    if kind is int:
        # the store's JSON encoder holds 64-bit integers; a larger one could not be written
        return None if DECIMAL_INT_MIN <= value <= DECIMAL_INT_MAX else "range"
    return "type"


_BASE64 = re.compile(r"[0-9a-zA-Z+/=]+", re.ASCII).fullmatch


def _check_base64(value: Any) -> str | None:
    # R4's regex (\s*([0-9a-zA-Z\+/=]){4}\s*)+ backtracks badly on large attachments (80 ms for
    # 170 kB); this is the same rule in linear time, except that whitespace may fall anywhere.
    if type(value) is not str:
        return "type"
    compact = "".join(value.split()) if not _BASE64(value) else value
    return None if compact and len(compact) % 4 == 0 and _BASE64(compact) else "format"


def _check_xhtml(value: Any) -> str | None:
    if type(value) is not str:
        return "type"
    if "\x00" in value:
        return "nul"
    return None if value.lstrip().startswith("<div") else "format"


def _primitive_checks(spec: dict[str, dict[str, str]]) -> dict[str, PrimitiveCheck]:
    fixed: dict[str, PrimitiveCheck] = {
        "boolean": _check_boolean,
        "integer": _check_integer,
        "positiveInt": _check_positive_int,
        "unsignedInt": _check_unsigned_int,
        "decimal": _check_decimal,
        "xhtml": _check_xhtml,
        "base64Binary": _check_base64,
    }
    checks: dict[str, PrimitiveCheck] = {}
    for name, entry in spec.items():
        if name in fixed:
            checks[name] = fixed[name]
        elif name in ("date", "dateTime", "instant"):
            checks[name] = _date_check(entry["regex"])
        else:
            checks[name] = _regex_check(entry["regex"] or r"[\s\S]+")
    return checks


def _compile(raw: dict[str, Any]) -> R4Model:
    primitives = _primitive_checks(raw["primitives"])
    regexes = {
        name: fullmatcher(spec["regex"])
        for name, spec in raw["primitives"].items()
        if spec["regex"] and name not in _NON_STRING
    }
    value_sets = {url: frozenset(codes) for url, codes in raw["valueSets"].items()}
    resource_types = frozenset(raw["resources"])
    tables = {name: TypeTable(name, spec["kind"]) for name, spec in raw["types"].items()}
    for name, spec in raw["types"].items():
        table = tables[name]
        groups: dict[str, list[str]] = {}
        required: list[tuple[str, str]] = []
        for prop_name, type_name, min_, max_, choice, value_set, targets, flags in spec["elements"]:
            if type_name in primitives:
                kind, check, target_table = PRIMITIVE, primitives[type_name], None
            elif type_name == "Resource" or type_name in resource_types:
                kind, check, target_table = RESOURCE, None, None
            else:
                kind, check, target_table = COMPLEX, None, tables[type_name]
            codes = value_sets.get(value_set) if value_set else None
            table.props[prop_name] = Prop(
                name=prop_name,
                type_name=type_name,
                kind=kind,
                is_array=max_ != "1",
                min=min_,
                check=check,
                table=target_table,
                choice=choice,
                codes=codes,
                value_set=value_set,
                targets=frozenset(targets) if targets else None,
                ext_sibling=kind == PRIMITIVE and not flags & 1,
                mode=_prop_mode(kind, max_ != "1", codes, type_name, regexes.get(type_name)),
                match=regexes.get(type_name),
            )
            if choice:
                groups.setdefault(choice, []).append(prop_name)
            if min_ >= 1:
                required.append((prop_name, "_" + prop_name))
        table.required = tuple(required)
        table.required_choices = tuple((g, tuple(groups[g])) for g in spec.get("requiredChoices", ()))
    return R4Model(tables, resource_types, primitives, value_sets)


@cache
def load_model() -> R4Model:
    """The compiled R4 model (loaded from package data once per process)."""
    data = resources.files("rhip.fhir").joinpath("data", "r4_model.json").read_bytes()
    return _compile(orjson.loads(data))


def resource_types() -> frozenset[str]:
    """Names of the 147 concrete R4 resource types (``Patient``, ``Observation``, ...)."""
    return load_model().resource_types


def is_resource_type(name: str) -> bool:
    """True when ``name`` is a concrete R4 resource type."""
    return name in load_model().resource_types
