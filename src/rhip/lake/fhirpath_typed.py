"""Schema-aware compilation of plain member paths (``code.coding.code``) into one JSON path lookup.

With the FHIR R4 structure model the compiler knows, for every step, whether the element repeats,
so a dotted path becomes a single ``json_extract_string(x, '$.code.coding[*].code')`` instead of a
chain of list lambdas: one parse of a small JSON fragment and no per-item lambda calls. Paths the
model does not know (unknown elements, choice elements without ``ofType``) fall back to the generic
compilation, which needs no schema.
"""

from __future__ import annotations

from functools import cache

from rhip.lake.fhirpath_sql import Env, Val

__all__ = ["element", "exists_equal", "first_of", "from_path", "typed_chain"]


@cache
def element(type_name: str, name: str) -> tuple[str, bool] | None:
    """(type of the child element, whether it repeats) for ``type_name.name``, or None if unknown."""
    try:
        from rhip.fhir.model import load_model
    except ImportError:  # pragma: no cover - the model ships with the package
        return None
    table = load_model().types.get(type_name)
    prop = table.props.get(name) if table is not None else None
    if prop is None:
        return None
    child = prop.table.name if prop.table is not None else prop.type_name
    return child, bool(prop.is_array)


def typed_chain(base: Val, names: list[str], env: Env) -> Val | None:
    """One JSON-path lookup for ``base.n1.n2...`` when the model knows every step, else None."""
    if not env.dialect.strict_json_path or base.fhir_type is None or base.kind != "one":
        return None
    steps: list[tuple[str, bool]] = []
    type_name = base.fhir_type
    for name in names:
        found = element(type_name, name)
        if found is None:
            return None
        type_name, repeats = found
        steps.append((name, repeats))
    if env.is_root(base):
        obj = env.root_json(names[0])
        path = "$" + ("[*]" if steps[0][1] else "") + "".join(_seg(n, r) for n, r in steps[1:])
    elif base.origin is not None and "[*]" not in base.origin[1]:
        obj, prefix = base.origin
        path = prefix + "".join(_seg(n, r) for n, r in steps)
    else:
        obj = base.sql
        path = "$" + "".join(_seg(n, r) for n, r in steps)
    return from_path(obj, path, type_name, env)


def from_path(obj: str, path: str, type_name: str | None, env: Env) -> Val:
    """The value at a JSON path of ``obj``: a list when the path has wildcards, else one value."""
    sql = f"json_extract_string({obj}, '{path}')"
    if "[*]" in path:
        return Val(f"coalesce({sql}, {env.dialect.empty_list()})", "list", type_name, (obj, path))
    return Val(sql, "one", type_name, (obj, path))


def first_of(base: Val, env: Env) -> Val | None:
    """``first()`` of a path whose only repetition is its last step: that array's item [0]."""
    if base.origin is None or not env.dialect.strict_json_path:
        return None
    obj, path = base.origin
    if path.count("[*]") != 1 or not path.endswith("[*]"):
        return None
    return from_path(obj, path[:-3] + "[0]", base.fhir_type, env)


def exists_equal(base: Val, member: str, value_sql: str, env: Env) -> Val | None:
    """``base.where(member = value).exists()`` as one list_contains over a JSON path, when typed."""
    if base.origin is None or base.fhir_type is None or not env.dialect.strict_json_path:
        return None
    found = element(base.fhir_type, member)
    if found is None or found[1]:
        return None
    obj, path = base.origin
    values = (
        f"coalesce(json_extract_string({obj}, '{path}{_seg(member, False)}'), {env.dialect.empty_list()})"
    )
    if "[*]" not in path:
        values = f"[json_extract_string({obj}, '{path}{_seg(member, False)}')]"
    return Val(f"coalesce(list_contains({values}, {value_sql}), FALSE)", "bool", "boolean")


def _seg(name: str, repeats: bool) -> str:
    return f'."{name}"' + ("[*]" if repeats else "")
