"""FHIRPath functions required by SQL-on-FHIR v2, compiled to SQL.

Covers the functions the specification lists for ViewDefinitions (``where``, ``exists``,
``empty``, ``first``, ``join``, ``ofType``, ``extension``, ``getResourceKey``,
``getReferenceKey``, ``lowBoundary``/``highBoundary``, ``not``) plus a few cheap extras used by the
standard view library (``last``, ``count``, ``select``, ``distinct``, ``lower``, ``upper``).
"""

from __future__ import annotations

from collections.abc import Callable

from rhip.errors import InvalidResource
from rhip.lake.fhirpath import Binary, Call, Const, Literal, Member, Node
from rhip.lake.fhirpath_sql import Env, Val, as_bool, as_list, as_num, as_one, as_text, compile_path
from rhip.lake.fhirpath_typed import exists_equal, first_of

__all__ = ["FUNCTIONS", "compile_call"]

_Fn = Callable[[Val, tuple[Node, ...], Val, Env], Val]


def _arity(name: str, args: tuple[Node, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise InvalidResource(f"FHIRPath function {name}() takes {low}..{high} arguments, got {len(args)}")


def _where(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("where", args, 1, 1)
    d = env.dialect
    var = env.var()
    cond = as_bool(compile_path(args[0], Val(var, "one", base.fhir_type), env), env)
    return Val(d.filter(as_list(base, env), var, cond), "list", base.fhir_type)


def _select(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("select", args, 1, 1)
    d = env.dialect
    var = env.var()
    inner = as_list(compile_path(args[0], Val(var, "one"), env), env)
    return Val(d.flatten(d.transform(as_list(base, env), var, inner)), "list")


def _exists(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("exists", args, 0, 1)
    if args and (folded := _exists_equal(base, args[0], ctx, env)) is not None:
        return folded
    if args:
        base = _where(base, args, ctx, env)
    if base.kind == "list":
        return Val(f"({env.dialect.length(base.sql)} > 0)", "bool", "boolean")
    return Val(f"(({base.sql}) IS NOT NULL)", "bool", "boolean")


def _exists_equal(base: Val, cond: Node, ctx: Val, env: Env) -> Val | None:
    """Fold ``where(member = 'text').exists()`` into one JSON-path lookup when the schema allows."""
    if not isinstance(cond, Binary) or cond.op != "=":
        return None
    member, other = cond.left, cond.right
    if not isinstance(member, Member) or member.base is not None:
        member, other = cond.right, cond.left
    if not isinstance(member, Member) or member.base is not None or not isinstance(other, Literal | Const):
        return None
    value = compile_path(other, ctx, env)
    if value.kind != "str":
        return None
    return exists_equal(base, member.name, value.sql, env)


def _empty(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("empty", args, 0, 0)
    return Val(f"(NOT {_exists(base, (), ctx, env).sql})", "bool", "boolean")


def _count(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("count", args, 0, 0)
    return Val(f"CAST({env.dialect.length(as_list(base, env))} AS BIGINT)", "int", "integer")


def _first(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("first", args, 0, 0)
    if base.kind != "list":
        return base
    folded = first_of(base, env)
    if folded is not None:
        return folded
    return Val(env.dialect.item(base.sql, "0"), "one", base.fhir_type)


def _last(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("last", args, 0, 0)
    if base.kind != "list":
        return base
    return Val(env.dialect.last(base.sql), "one", base.fhir_type)


def _distinct(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("distinct", args, 0, 0)
    return Val(env.dialect.distinct(as_list(base, env)), "list", base.fhir_type)


def _join(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("join", args, 0, 1)
    sep = as_text(compile_path(args[0], ctx, env), env) if args else env.bind("")
    lst = as_list(base, env)
    return Val(env.dialect.join(lst, sep), "str", "string")


def _not(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("not", args, 0, 0)
    return Val(f"(NOT {as_bool(base, env)})", "bool", "boolean")


def _case(fn: str) -> _Fn:
    def compile_case(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
        _arity(fn, args, 0, 0)
        return Val(f"{fn}({as_text(base, env)})", "str", "string")

    return compile_case


def _extension(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("extension", args, 1, 1)
    from rhip.lake.fhirpath_sql import _member

    d = env.dialect
    url = as_text(compile_path(args[0], ctx, env), env)
    ext = _member(base, "extension", env)
    var = env.var()
    return Val(d.filter(ext.sql, var, f"({d.get(var, 'url')} = {url})"), "list", "Extension")


def _resource_key(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("getResourceKey", args, 0, 0)
    if env.is_root(base):
        return Val(env.dialect.json_text(env.root_json("id")), "one", "id")
    return Val(env.dialect.get(as_one(base, env), "id"), "one", "id")


def _reference_key(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    _arity("getReferenceKey", args, 0, 1)
    d = env.dialect
    if base.origin is not None and "[*]" not in base.origin[1]:
        ref = f"json_extract_string({base.origin[0]}, '{base.origin[1]}.\"reference\"')"
    else:
        ref = d.get(as_one(base, env), "reference")
    pattern = env.bind(r"([A-Za-z]+)/([A-Za-z0-9\-\.]{1,64})(/_history/.*)?$")
    key = f"nullif({d.regex_extract(ref, pattern, 2)}, '')"
    if not args:
        return Val(key, "one", "id")
    if not isinstance(args[0], Member) or args[0].base is not None:
        raise InvalidResource("getReferenceKey() takes a resource type name")
    wanted = env.bind(args[0].name)
    return Val(f"(CASE WHEN {d.regex_extract(ref, pattern, 1)} = {wanted} THEN {key} END)", "one", "id")


def _of_type(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
    raise InvalidResource("ofType() must follow an element name, as in value.ofType(Quantity)")


def _boundary(high: bool) -> _Fn:
    def compile_boundary(base: Val, args: tuple[Node, ...], ctx: Val, env: Env) -> Val:
        _arity("highBoundary" if high else "lowBoundary", args, 0, 1)
        return _boundary_sql(base, high, env)

    return compile_boundary


def _boundary_sql(base: Val, high: bool, env: Env) -> Val:
    d = env.dialect
    text = as_one(base, env) if base.kind in ("list", "one") else as_text(base, env)
    hint = base.fhir_type
    if hint == "decimal" or base.kind in ("num", "int"):
        return _decimal_boundary(text, high, env)
    number = d.regex_match(text, env.bind(r"-?[0-9]+(\.[0-9]+)?"))
    time_pat = d.regex_match(text, env.bind(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"))
    tz_low, tz_high = env.bind("+14:00"), env.bind("-12:00")
    month_end = d.last_day(d.substr(text, 1, 7))
    if high:
        date = (
            f"(CASE length({text}) WHEN 4 THEN {text} || '-12-31' "
            f"WHEN 7 THEN {text} || '-' || {month_end} ELSE {d.substr(text, 1, 10)} END)"
        )
        time = f"(CASE length({text}) WHEN 5 THEN {text} || ':59.999' WHEN 8 THEN {text} || '.999' "
        time += f"ELSE {text} END)"
        day_time, tz = "'T23:59:59.999'", tz_high
    else:
        date = (
            f"(CASE length({text}) WHEN 4 THEN {text} || '-01-01' "
            f"WHEN 7 THEN {text} || '-01' ELSE {d.substr(text, 1, 10)} END)"
        )
        time = f"(CASE length({text}) WHEN 5 THEN {text} || ':00.000' WHEN 8 THEN {text} || '.000' "
        time += f"ELSE {text} END)"
        day_time, tz = "'T00:00:00.000'", tz_low
    as_datetime = f"(CASE WHEN length({text}) <= 10 THEN {date} || {day_time} || {tz} ELSE {text} END)"
    if hint in ("dateTime", "instant"):
        return Val(as_datetime, "str", "dateTime")
    if hint == "time":
        return Val(time, "str", "time")
    if hint == "date":
        return Val(date, "str", "date")
    dec = _decimal_boundary(text, high, env).sql
    expr = (
        f"(CASE WHEN ({text}) IS NULL THEN NULL WHEN {number} THEN {d.to_text(dec)} "
        f"WHEN {time_pat} THEN {time} WHEN length({text}) <= 10 THEN {date} ELSE {as_datetime} END)"
    )
    return Val(expr, "one")


def _decimal_boundary(text: str, high: bool, env: Env) -> Val:
    d = env.dialect
    digits = d.regex_extract(text, env.bind(r"\.([0-9]+)$"), 1)
    half = f"(0.5 / power(10, coalesce(length({digits}), 0)))"
    value = as_num(Val(text, "one"), env)
    return Val(f"({value} {'+' if high else '-'} {half})", "num", "decimal")


FUNCTIONS: dict[str, _Fn] = {
    "where": _where,
    "select": _select,
    "exists": _exists,
    "empty": _empty,
    "count": _count,
    "first": _first,
    "last": _last,
    "distinct": _distinct,
    "join": _join,
    "not": _not,
    "lower": _case("lower"),
    "upper": _case("upper"),
    "extension": _extension,
    "getResourceKey": _resource_key,
    "getReferenceKey": _reference_key,
    "ofType": _of_type,
    "lowBoundary": _boundary(False),
    "highBoundary": _boundary(True),
}


def compile_call(node: Call, ctx: Val, env: Env) -> Val:
    """Compile a function call; ``ofType`` on an element becomes the typed choice element."""
    if node.name == "ofType" and isinstance(node.base, Member) and len(node.args) == 1:
        type_arg = node.args[0]
        if not isinstance(type_arg, Member) or type_arg.base is not None:
            raise InvalidResource("ofType() takes a type name")
        type_name = type_arg.name.split(".")[-1]
        choice = Member(node.base.base, node.base.name + type_name[:1].upper() + type_name[1:])
        val = compile_path(choice, ctx, env)
        return Val(val.sql, val.kind, type_name)
    fn = FUNCTIONS.get(node.name)
    if fn is None:
        raise InvalidResource(f"unsupported FHIRPath function {node.name}()")
    base = ctx if node.base is None else compile_path(node.base, ctx, env)
    return fn(base, node.args, ctx, env)
