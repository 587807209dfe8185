"""FHIR Reference handling: parse reference strings, find every Reference in a resource, rewrite them.

Store and ingest need the same three things: know what a ``Reference.reference`` string points at
(``Patient/123``, an absolute URL, ``urn:uuid:`` placeholders of a transaction, ``#contained``),
visit every Reference element of a resource by walking the R4 model (so ``uri`` elements that happen
to be called ``reference`` are never mistaken for one), and rewrite placeholders to server ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import orjson

from rhip.errors import InvalidResource, Issue
from rhip.fhir.model import COMPLEX, PRIMITIVE, RESOURCE, TypeTable, load_model

_dumps = orjson.dumps
_ID: Final = r"[A-Za-z0-9\-\.]{1,64}"
_RELATIVE = re.compile(rf"([A-Z][A-Za-z]+)/({_ID})(?:/_history/({_ID}))?", re.ASCII)
_ABSOLUTE = re.compile(rf"(\S*?)/?([A-Z][A-Za-z]+)/({_ID})(?:/_history/({_ID}))?", re.ASCII)
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?(\S+)", re.ASCII)
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+", re.ASCII)
_LOCAL = re.compile(rf"#(?:{_ID})?", re.ASCII)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+", re.ASCII)

#: Kinds of reference a parsed string can be.
RELATIVE: Final = "relative"
ABSOLUTE: Final = "absolute"
UUID: Final = "uuid"
OID: Final = "oid"
CONTAINED: Final = "contained"
CONDITIONAL: Final = "conditional"


@dataclass(frozen=True, slots=True)
class ParsedReference:
    """What a ``Reference.reference`` string points at.

    ``kind`` is one of ``relative`` (``Patient/1``, optionally ``/_history/2``), ``absolute``
    (a URL; ``resource_type``/``id``/``base`` are set when it ends in ``Type/id``), ``uuid`` and
    ``oid`` (``urn:`` placeholders; ``id`` is the whole URN), ``contained`` (``#id``; ``id`` is
    empty for ``#`` meaning the container) or ``conditional`` (``Patient?identifier=...`` inside a
    transaction; ``query`` is set).
    """

    kind: str
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    base: str | None = None
    query: str | None = None

    @property
    def relative(self) -> str | None:
        """``Type/id`` when the type and id are known, else None."""
        if self.resource_type and self.id and self.kind in (RELATIVE, ABSOLUTE):
            return f"{self.resource_type}/{self.id}"
        return None


def try_parse_reference(value: str) -> ParsedReference | None:
    """Parse a reference string; None when it is not a valid R4 reference."""
    types = load_model().resource_types
    if value.startswith("#"):
        return ParsedReference(CONTAINED, id=value[1:]) if _LOCAL.fullmatch(value) else None
    if value.startswith("urn:"):
        if _UUID.fullmatch(value):
            return ParsedReference(UUID, id=value)
        if _OID.fullmatch(value):
            return ParsedReference(OID, id=value)
        return None
    match = _RELATIVE.fullmatch(value)
    if match:
        if match[1] not in types:
            return None
        return ParsedReference(RELATIVE, match[1], match[2], match[3])
    match = _CONDITIONAL.fullmatch(value)
    if match:
        return ParsedReference(CONDITIONAL, match[1], query=match[2]) if match[1] in types else None
    if _SCHEME.fullmatch(value):
        match = _ABSOLUTE.fullmatch(value)
        if match and match[2] in types:
            return ParsedReference(ABSOLUTE, match[2], match[3], match[4], base=match[1])
        return ParsedReference(ABSOLUTE, base=value)
    return None


def parse_reference(value: str) -> ParsedReference:
    """Parse ``Patient/123``, ``Patient/123/_history/2``, an absolute URL, ``urn:uuid:...``,
    ``urn:oid:...``, ``#contained`` or a conditional ``Patient?identifier=...`` reference.

    Raises:
        InvalidResource: the string is none of these (the message does not echo the value).
    """
    parsed = try_parse_reference(value)
    if parsed is None:
        raise InvalidResource(
            "reference is not Type/id, an absolute URL, urn:uuid:, urn:oid: or #id",
            [Issue("error", "value", "invalid reference format", ("Reference.reference",))],
        )
    return parsed


def _resource_table(resource: Mapping[str, Any]) -> TypeTable | None:
    """The type table of a resource dict, None unless resourceType names a concrete resource type."""
    model = load_model()
    rtype = resource.get("resourceType")
    return model.types[rtype] if type(rtype) is str and rtype in model.resource_types else None


#: A location while walking: the root name, or (parent location, element name, array index or None).
Location = str | tuple[Any, str, int | None]


def render_path(location: Location) -> str:
    """``Observation.component[1].valueQuantity`` from a walk location."""
    parts: list[str] = []
    while type(location) is tuple:
        parent, key, index = location
        parts.append(f".{key}" if index is None else f".{key}[{index}]")
        location = parent
    return str(location) + "".join(reversed(parts))


@cache
def _reference_free(table: TypeTable) -> bool:
    """True when no Reference or resource can sit below this type except inside an extension."""
    seen: set[str] = set()
    stack = [table]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for prop in current.props.values():
            if prop.kind == RESOURCE or prop.type_name == "Reference":
                return False
            if prop.kind == COMPLEX and prop.table is not None and prop.type_name != "Extension":
                stack.append(prop.table)
    return True


def _may_hold_reference(item: dict[str, Any], table: TypeTable) -> bool:
    """False when the subtree certainly holds no Reference (skips walking most coded values)."""
    if not _reference_free(table):
        return True
    try:
        return b'Reference"' in _dumps(item)  # an extension's valueReference is the only way in
    except orjson.JSONEncodeError:
        return True


def _collect(
    node: Mapping[str, Any], table: TypeTable, where: Location, out: list[tuple[Location, Any]]
) -> None:
    props = table.props
    for key, value in node.items():
        prop = props.get(key)
        if prop is None or prop.kind == PRIMITIVE:
            continue
        items = enumerate(value) if type(value) is list else ((None, value),)
        for index, item in items:
            if type(item) is not dict:
                continue
            location = (where, key, index)
            if prop.kind == RESOURCE:
                sub = _resource_table(item)
                if sub is not None:
                    _collect(item, sub, location, out)
                continue
            sub = prop.table
            if sub is None:
                continue
            if prop.type_name == "Reference":
                out.append((location, item))
            elif not _may_hold_reference(item, sub):
                continue
            _collect(item, sub, location, out)


def iter_references(
    resource: Mapping[str, Any], *, path: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(element path, Reference dict)`` for every Reference element in ``resource``.

    Walks the R4 model, including extensions, contained resources and, for a Bundle, the entry
    resources (paths like ``Bundle.entry[2].resource.subject``). The dicts are the resource's own
    objects, so callers may rewrite ``reference`` in place. References with only an ``identifier``
    or ``display`` are yielded too. Unknown elements are skipped (validate first).

    Args:
        resource: a resource dict with ``resourceType``.
        path: root of the yielded paths; defaults to the resource type.
    """
    table = _resource_table(resource)
    if table is None:
        return
    found: list[tuple[Location, Any]] = []
    _collect(resource, table, path or table.name, found)
    for location, ref in found:
        yield render_path(location), ref


def rewrite_references(resource: Mapping[str, Any], mapping: Mapping[str, str]) -> int:
    """Replace every ``Reference.reference`` found in ``mapping`` (e.g. ``urn:uuid:…`` → ``Patient/7``).

    Changes the resource in place and returns the number of references rewritten.
    """
    count = 0
    for _, ref in iter_references(resource):
        target = ref.get("reference")
        if type(target) is str and target in mapping:
            ref["reference"] = mapping[target]
            count += 1
    return count
