"""Structural validation of FHIR R4 JSON resources against the compiled R4 model.

Every record that enters the platform passes here, at ingest rates of tens of thousands of
resources a second, so this is a hand-written walk over precompiled tables (see ``model``) instead
of a JSON Schema or a profile engine. It checks what R4 defines structurally: known resource types,
unknown elements (``_name`` primitive-extension siblings allowed), JSON types and R4 regexes of
primitives (plus real calendar dates), arrays vs single values, required elements, one choice
variant, codes of compiled required bindings, reference formats and target types, ``#contained``
references, the ext-1 extension rule, and contained resources and Bundle entries recursively.
Each problem becomes an ``Issue`` whose ``expression`` is the element path
(``Observation.component[1].valueQuantity.value``); messages name elements and rules, never the
offending values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from rhip.errors import InvalidResource, Issue
from rhip.fhir.model import (
    DECIMAL_INT_MAX,
    DECIMAL_INT_MIN,
    MODE_BOOLEAN,
    MODE_CODE,
    MODE_COMPLEX,
    MODE_COMPLEX_ARRAY,
    MODE_DATE,
    MODE_DECIMAL,
    MODE_MEMO,
    MODE_MEMO_ARRAY,
    MODE_REFERENCE,
    MODE_STRING,
    MODE_TEXT,
    MODE_TEXT_ARRAY,
    PRIMITIVE,
    RESOURCE,
    Prop,
    TypeTable,
    load_model,
)
from rhip.fhir.references import (
    CONTAINED,
    UUID,
    Location,
    ParsedReference,
    iter_references,
    render_path,
    try_parse_reference,
)

#: A location: the root name, or (parent location, element name, array index or None).
_Path = Location

_RULES: Final = {
    "type": ("structure", "{t} value has the wrong JSON type"),
    "format": ("value", "value does not match the FHIR {t} format"),
    "nul": ("value", "{t} value contains a NUL character (U+0000), which FHIR strings may not hold"),
    "range": ("value", "value is out of range for {t}"),
    "calendar": ("value", "{t} value is not a real calendar date"),
}
#: Distinct CodeableConcept/Coding values already found valid, and parsed reference strings
#: (both bounded: cleared when full; results depend only on the value, so caching is exact).
_VALID_CODES: set[tuple[str, bytes]] = set()
_PARSED: dict[str, ParsedReference | None] = {}
_CACHE_MAX: Final = 100_000
_MISSING: Final = ParsedReference("")
_dumps = orjson.dumps
_NOT_AN_ELEMENT: Final = "primitive extension must be a non-empty JSON object"
_BAD_REFERENCE: Final = "reference is not Type/id, an absolute URL, urn:uuid:, urn:oid: or #id"
_BUNDLE_REQUEST_TYPES: Final = frozenset({"transaction", "batch"})
_BUNDLE_RESPONSE_TYPES: Final = frozenset({"transaction-response", "batch-response"})


class _Context:
    """Issues found so far and the ``#id`` references of the resource being walked."""

    __slots__ = ("issues", "local_refs")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.local_refs: list[tuple[_Path, str]] = []

    def add(
        self,
        code: str,
        message: str,
        path: _Path,
        key: str | None = None,
        index: int | None = None,
        severity: str = "error",
    ) -> None:
        if key is not None:
            path = (path, key, index)
        self.issues.append(Issue(severity, code, message, (render_path(path),)))

    def primitive(self, prop: Prop, rule: str, path: _Path, key: str, index: int | None) -> None:
        code, message = _RULES[rule]
        self.add(code, message.format(t=prop.type_name), path, key, index)


def _walk(obj: dict[str, Any], table: TypeTable, path: _Path, ctx: _Context) -> None:
    """Check one JSON object against its type table (the hot loop: common cases inline)."""
    props = table.props
    choices: set[str] | None = None
    for key, value in obj.items():
        prop = props.get(key)
        if prop is None:
            if key != "resourceType" or table.kind != "resource":  # what _extra_key skips first
                _extra_key(obj, key, value, table, path, ctx)
            continue
        if prop.choice is not None:
            if choices is None:
                choices = {prop.choice}
            elif prop.choice in choices:
                ctx.add("structure", f"only one {prop.choice}[x] variant is allowed", path, key)
            else:
                choices.add(prop.choice)
        mode = prop.mode  # branches in the order of how often they occur in clinical data
        if mode == MODE_MEMO:
            if type(value) is dict and value:
                _memo_walk(value, prop.table, (path, key, None), ctx)  # type: ignore[arg-type]
            else:
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_TEXT:  # model.fullmatcher's test of R4's string regex, inline
            if type(value) is not str or not value or "\x0b" in value or "\x0c" in value or "\x00" in value:
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_REFERENCE and type(value) is dict and value:
            where = (path, key, None)
            if len(value) != 1 or "reference" not in value:  # a bare {"reference": ...} needs no walk
                _walk(value, prop.table, where, ctx)  # type: ignore[arg-type]
            _reference(value, prop, where, ctx)
        elif mode == MODE_STRING:
            if type(value) is not str or prop.match(value) is None:  # type: ignore[misc]
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_CODE:
            if type(value) is not str or prop.match(value) is None or value not in prop.codes:  # type: ignore[misc, operator]
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_MEMO_ARRAY and type(value) is list and value:
            sub = prop.table
            for index, item in enumerate(value):
                if type(item) is dict and item:
                    _memo_walk(item, sub, (path, key, index), ctx)  # type: ignore[arg-type]
                else:
                    _complex(prop, item, (path, key, index), ctx)
        elif mode == MODE_DATE:
            if type(value) is not str or prop.match(value) is None or (len(value) > 9 and value[8:10] > "28"):  # type: ignore[misc]
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_COMPLEX_ARRAY and type(value) is list and value:
            sub = prop.table
            for index, item in enumerate(value):
                if type(item) is dict and item:
                    _walk(item, sub, (path, key, index), ctx)  # type: ignore[arg-type]
                else:
                    _complex(prop, item, (path, key, index), ctx)
        elif mode == MODE_COMPLEX:
            if type(value) is dict and value:
                _walk(value, prop.table, (path, key, None), ctx)  # type: ignore[arg-type]
            else:
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_DECIMAL:
            if type(value) is float:
                if value - value != 0:  # NaN or infinity
                    _general(prop, key, value, obj, path, ctx)
            elif type(value) is not int or not DECIMAL_INT_MIN <= value <= DECIMAL_INT_MAX:
                _general(prop, key, value, obj, path, ctx)
        elif mode == MODE_TEXT_ARRAY:
            if type(value) is not list or not value:
                _general(prop, key, value, obj, path, ctx)
            else:
                for item in value:
                    if (
                        type(item) is not str
                        or not item
                        or "\x0b" in item
                        or "\x0c" in item
                        or "\x00" in item
                    ):
                        _general(prop, key, value, obj, path, ctx)  # reports every item, as before
                        break
        elif mode != MODE_BOOLEAN or type(value) is not bool:
            _general(prop, key, value, obj, path, ctx)
    if table.required or table.required_choices:
        _required(obj, table, path, ctx)


def _required(obj: dict[str, Any], table: TypeTable, path: _Path, ctx: _Context) -> None:
    """Elements with min >= 1 (a primitive counts when only its ``_name`` is there) and required choices."""
    for name, sibling in table.required:
        if name not in obj and sibling not in obj:
            ctx.add("required", "required element is missing", path, name)
    for group, names in table.required_choices:
        if not any(n in obj or "_" + n in obj for n in names):
            ctx.add("required", f"one {group}[x] variant is required", path, f"{group}[x]")


def _memo_walk(obj: dict[str, Any], table: TypeTable, path: _Path, ctx: _Context) -> None:
    """Walk a coded value unless the identical value already passed (codes repeat across records)."""
    try:
        key = (table.name, _dumps(obj))
    except (TypeError, orjson.JSONEncodeError):
        _walk(obj, table, path, ctx)
        return
    if key in _VALID_CODES:
        return
    issues, local_refs = len(ctx.issues), len(ctx.local_refs)
    _walk(obj, table, path, ctx)
    _remember_valid(key, issues, local_refs, ctx)


def _remember_valid(key: tuple[str, bytes], issues: int, local_refs: int, ctx: _Context) -> None:
    """Cache a value that was walked without a finding (``issues``, ``local_refs``: counts before).

    Only context-free successes are kept: a "#id" inside (via an extension) depends on the container.
    """
    if len(ctx.issues) == issues and len(ctx.local_refs) == local_refs:
        if len(_VALID_CODES) >= _CACHE_MAX:
            _VALID_CODES.clear()
        _VALID_CODES.add(key)


def _general(prop: Prop, key: str, value: Any, obj: dict[str, Any], path: _Path, ctx: _Context) -> None:
    """Every case the hot loop does not inline: arrays of primitives, codes, references, resources, errors."""
    if prop.is_array:
        if type(value) is not list:
            ctx.add("structure", "element must be a JSON array", path, key)
        elif not value:
            ctx.add("structure", "array must not be empty", path, key)
        elif prop.kind == PRIMITIVE:
            check, codes = prop.check, prop.codes
            for index, item in enumerate(value):
                if item is None:
                    if not _has_sibling_at(obj, key, index):
                        ctx.add("structure", "null without a matching _ extension", path, key, index)
                    continue
                rule = check(item)  # type: ignore[misc]
                if rule is not None:
                    ctx.primitive(prop, rule, path, key, index)
                elif codes is not None and item not in codes:
                    ctx.add(
                        "code-invalid",
                        f"code is not in required value set {prop.value_set}",
                        path,
                        key,
                        index,
                    )
        else:
            for index, item in enumerate(value):
                _complex(prop, item, (path, key, index), ctx)
    elif type(value) is list:
        ctx.add("structure", "element must be a single value, not an array", path, key)
    elif prop.kind == PRIMITIVE:
        rule = prop.check(value)  # type: ignore[misc]
        if rule is not None:
            ctx.primitive(prop, rule, path, key, None)
        elif prop.codes is not None and value not in prop.codes:
            ctx.add("code-invalid", f"code is not in required value set {prop.value_set}", path, key)
    else:
        _complex(prop, value, (path, key, None), ctx)


def _complex(prop: Prop, value: Any, path: _Path, ctx: _Context) -> None:
    if prop.kind == RESOURCE:
        _resource(value, path, ctx, contained=prop.name == "contained")
        return
    if type(value) is not dict:
        ctx.add("structure", f"{prop.type_name} must be a JSON object", path)
        return
    if not value:
        ctx.add("structure", "object must not be empty", path)
        return
    if prop.type_name == "Extension":
        # extensions repeat across records (the GB sex code on every Patient): an identical
        # extension that already passed is not walked again; inline, so that nesting costs the
        # same stack depth as without the cache
        try:
            key: tuple[str, bytes] | None = ("Extension", _dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            key = None
        if key in _VALID_CODES:
            return
        issues, local_refs = len(ctx.issues), len(ctx.local_refs)
    _walk(value, prop.table, path, ctx)  # type: ignore[arg-type]
    if prop.type_name == "Reference":
        _reference(value, prop, path, ctx)
    elif prop.type_name == "Extension":
        if ("extension" in value) == any(k.startswith(("value", "_value")) for k in value):
            ctx.add(
                "invariant", "an extension has either a value or nested extensions, not both (ext-1)", path
            )
        if key is not None:
            _remember_valid(key, issues, local_refs, ctx)


def _has_sibling_at(obj: dict[str, Any], key: str, index: int) -> bool:
    sibling = obj.get("_" + key)
    return type(sibling) is list and index < len(sibling) and sibling[index] is not None


def _extra_key(
    obj: dict[str, Any], key: str, value: Any, table: TypeTable, path: _Path, ctx: _Context
) -> None:
    """A key that is not an element: resourceType at a resource root, a ``_name`` sibling, or unknown."""
    if key == "resourceType" and table.kind == "resource":
        return
    if key.startswith("_"):
        prop = table.props.get(key[1:])
        if prop is not None and prop.ext_sibling:
            _primitive_extension(prop, obj.get(key[1:]), value, path, ctx)
            return
    ctx.add("structure", "unknown element", path, key)


def _primitive_extension(prop: Prop, primitive: Any, value: Any, path: _Path, ctx: _Context) -> None:
    """Check ``_name`` (id and extensions of a primitive); paths use the element name, as FHIRPath does."""
    element = load_model().types["Element"]
    name = prop.name
    if not prop.is_array:
        if type(value) is not dict or not value:
            ctx.add("structure", _NOT_AN_ELEMENT, path, "_" + name)
        else:
            _walk(value, element, (path, name, None), ctx)
        return
    if type(value) is not list or (type(primitive) is list and len(primitive) != len(value)):
        ctx.add("structure", "primitive extension array must match the value array", path, "_" + name)
        return
    for index, item in enumerate(value):
        if item is None:
            if type(primitive) is not list or primitive[index] is None:
                ctx.add("structure", "value and extension are both null", path, name, index)
        elif type(item) is not dict or not item:
            ctx.add(
                "structure", "primitive extension must be a non-empty JSON object", path, "_" + name, index
            )
        else:
            _walk(item, element, (path, name, index), ctx)


def _reference(value: dict[str, Any], prop: Prop, path: _Path, ctx: _Context) -> None:
    target = value.get("reference")
    if type(target) is str:
        parsed = _PARSED.get(target, _MISSING)
        if parsed is _MISSING:
            parsed = try_parse_reference(target)
            if len(_PARSED) >= _CACHE_MAX:
                _PARSED.clear()
            _PARSED[target] = parsed
        if parsed is None:
            ctx.add(
                "value",
                "reference is not Type/id, an absolute URL, urn:uuid:, urn:oid: or #id",
                path,
                "reference",
            )
            return
        if parsed.kind == CONTAINED:
            ctx.local_refs.append((path, parsed.id or ""))
        elif prop.targets is not None and parsed.resource_type and parsed.resource_type not in prop.targets:
            allowed = ", ".join(sorted(prop.targets))
            message = f"reference to {parsed.resource_type} is not allowed here ({allowed})"
            ctx.add("value", message, path, "reference", severity="warning")
    elif len(value) == 1 and "reference" in value:  # a bare {"reference": ...} was not walked
        ctx.add("structure", "string value has the wrong JSON type", path, "reference")
    kind = value.get("type")
    targets = prop.targets
    if (
        type(kind) is str
        and targets is not None
        and kind not in targets
        and "/" not in kind
        and ":" not in kind
    ):
        allowed = ", ".join(sorted(targets))
        ctx.add(
            "value",
            f"Reference.type is not a target allowed here ({allowed})",
            path,
            "type",
            severity="warning",
        )


def _resource(value: Any, path: _Path, ctx: _Context, *, contained: bool) -> None:
    """Check a whole resource (top level, contained, or a Bundle / Parameters entry)."""
    if type(value) is not dict:
        ctx.add("structure", "resource must be a JSON object", path)
        return
    model = load_model()
    rtype = value.get("resourceType")
    if type(rtype) is not str or rtype not in model.resource_types:
        ctx.add("structure", "missing or unknown resourceType", path)
        return
    table = model.types[rtype]
    if contained:
        if "contained" in value:
            ctx.add("structure", "a contained resource must not contain resources (dom-2)", path, "contained")
        _walk(value, table, path, ctx)
    else:
        saved, ctx.local_refs = ctx.local_refs, []
        _walk(value, table, path, ctx)
        if ctx.local_refs:
            _check_local_refs(value, ctx)
        ctx.local_refs = saved
    if rtype == "Bundle":
        _bundle_rules(value, path, ctx)


def _check_local_refs(resource: dict[str, Any], ctx: _Context) -> None:
    contained = resource.get("contained", [])
    if type(contained) is not list:
        return  # already reported as not an array
    ids = {c.get("id") for c in contained if type(c) is dict}
    for where, local_id in ctx.local_refs:
        if local_id and local_id not in ids:
            ctx.add("value", "#reference does not match a contained resource", where, "reference")


def _bundle_rules(bundle: dict[str, Any], path: _Path, ctx: _Context) -> None:
    """bdl-3/bdl-4: transaction and batch entries need request, their responses need response."""
    kind = bundle.get("type")
    entries = bundle.get("entry")
    if type(entries) is not list:
        return
    needed = (
        "request" if kind in _BUNDLE_REQUEST_TYPES else "response" if kind in _BUNDLE_RESPONSE_TYPES else None
    )
    if needed is None:
        return
    for index, entry in enumerate(entries):
        if type(entry) is dict and needed not in entry:
            ctx.add("required", f"a {kind} entry needs {needed}", (path, "entry", index), needed)


def validate_resource(resource: Any, *, path_prefix: str = "") -> list[Issue]:
    """Check a resource's structure against FHIR R4 and return every problem found (empty if valid).

    Args:
        resource: the parsed JSON (``orjson.loads`` output); anything else is reported, not raised.
        path_prefix: root of the issue expressions instead of the resource type, e.g.
            ``Bundle.entry[3].resource`` when checking one entry of a larger document.

    Returns:
        ``Issue`` objects with a FHIR issue-type code (``structure``, ``required``, ``value``,
        ``code-invalid``, ``invariant``) and ``expression`` = (element path,). Severity is
        ``error`` except for a reference to a resource type the element does not allow, which R4
        examples themselves contain and which is reported as a ``warning``.
    """
    ctx = _Context()
    root = path_prefix
    if not root:
        rtype = resource.get("resourceType") if type(resource) is dict else None
        root = rtype if type(rtype) is str and rtype.isidentifier() else "Resource"
    try:
        _resource(resource, root, ctx, contained=False)
    except RecursionError:
        # hundreds of nested extensions or items: reject rather than crash the caller
        ctx.issues.append(Issue("error", "too-long", "resource is nested too deeply to validate", (root,)))
    return ctx.issues


def ensure_valid(resource: Any, *, path_prefix: str = "") -> None:
    """Validate and raise when there is at least one error (warnings alone pass).

    Raises:
        InvalidResource: with every issue attached, warnings included (HTTP 422; the API renders
            it as an OperationOutcome).
    """
    issues = validate_resource(resource, path_prefix=path_prefix)
    if any(issue.severity in ("error", "fatal") for issue in issues):
        issues.sort(key=lambda issue: issue.severity != "error")
        first = issues[0]
        where = first.expression[0] if first.expression else "resource"
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise InvalidResource(f"invalid resource: {where}: {first.diagnostics}{more}", issues)


def validate_bundle_references(bundle: Mapping[str, Any]) -> list[Issue]:
    """Check that a transaction/batch is self-consistent: every ``urn:uuid:`` reference inside an entry
    resource names the ``fullUrl`` of an entry, and no two entries share a ``fullUrl``.

    Returns issues with code ``not-found`` (dangling reference, expression = the reference element)
    or ``duplicate`` (repeated fullUrl).
    """
    issues: list[Issue] = []
    entries = bundle.get("entry")
    if type(entries) is not list:
        return issues
    full_urls: set[str] = set()
    for index, entry in enumerate(entries):
        url = entry.get("fullUrl") if type(entry) is dict else None
        if type(url) is str:
            if url in full_urls:
                issues.append(
                    Issue(
                        "error",
                        "duplicate",
                        "fullUrl repeats an earlier entry",
                        (f"Bundle.entry[{index}].fullUrl",),
                    )
                )
            full_urls.add(url)
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is not dict:
            continue
        for where, ref in iter_references(resource, path=f"Bundle.entry[{index}].resource"):
            target = ref.get("reference")
            if type(target) is str and target.startswith("urn:uuid:") and target not in full_urls:
                parsed = try_parse_reference(target)
                message = (
                    "urn:uuid reference matches no entry fullUrl"
                    if parsed and parsed.kind == UUID
                    else "malformed urn:uuid reference"
                )
                issues.append(Issue("error", "not-found", message, (f"{where}.reference",)))
    return issues
