"""Registry of the search parameters the platform indexes and answers.

The built-in parameters come from the official FHIR R4 SearchParameter definitions, compiled by
``scripts/gen_search_params.py`` into ``data/search_parameters.json``: every FHIRPath expression is
turned into simple JSON paths so that indexing walks dicts instead of running a FHIRPath engine.
Parameters whose expressions do not compile are left out of the table (and listed in
docs/search-parameters.md), so :func:`search_params_for` only ever names parameters that are really indexed;
the CapabilityStatement is built from it. The platform adds a few of its own
(:func:`platform_params`), and a region adds its own parameters with
:func:`register_search_param`, the same hook the built-ins go through.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import orjson

__all__ = [
    "COMMON_PARAMS",
    "RESULT_PARAMS",
    "SUPPORTED_MODIFIERS",
    "SUPPORTED_PREFIXES",
    "Component",
    "PathSpec",
    "SearchParamDef",
    "all_resource_types",
    "excluded_params",
    "get_search_param",
    "platform_params",
    "register_search_param",
    "registry_version",
    "search_params_for",
    "unregister_search_param",
]

#: Modifiers answered per parameter type (``missing`` works on every type).
SUPPORTED_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text"}),
    "date": frozenset({"missing"}),
    "reference": frozenset({"missing", "identifier", "type"}),  # "type" stands for :[type]
    "quantity": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
    "composite": frozenset({"missing"}),
    "special": frozenset(),
}

#: Comparison prefixes per ordered type (others accept none).
SUPPORTED_PREFIXES: dict[str, tuple[str, ...]] = {
    "date": ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"),
    "number": ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"),
    "quantity": ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"),
}

#: Parameters valid on every resource type and answered from the resource table itself.
COMMON_PARAMS: dict[str, str] = {"_id": "token", "_lastUpdated": "date"}

#: Result-shaping parameters the search engine understands (the API consumes _count, _elements...).
RESULT_PARAMS = frozenset(
    {"_sort", "_include", "_revinclude", "_total", "_summary", "_type", "_count", "_offset"}
)


@dataclass(frozen=True)
class PathSpec:
    """One compiled path: JSON keys (or ``{"where": [field, value]}`` filters) and the element type.

    ``is_type`` keeps only references to that resource type (``where(resolve() is X)``);
    ``const`` indexes a fixed token value whenever the element is present.
    """

    steps: tuple[str | tuple[str, str], ...]
    elem_type: str
    is_type: str | None = None
    const: str | None = None


@dataclass(frozen=True)
class Component:
    """One component of a composite parameter: its type and the paths relative to the context."""

    type: str
    paths: tuple[PathSpec, ...]


@dataclass(frozen=True)
class SearchParamDef:
    """A search parameter as indexed: name (the ``code``), type, expression, compiled paths."""

    name: str
    type: str
    expression: str
    paths: tuple[PathSpec, ...] = ()
    targets: tuple[str, ...] = ()
    url: str = ""
    #: composite only: context paths (steps) and the two components evaluated at each context
    contexts: tuple[tuple[tuple[str | tuple[str, str], ...], tuple[Component, ...]], ...] = ()
    #: string only: ``"pinyin"`` matches on a phonetic key (the ``phonetic`` parameters)
    algorithm: str | None = None

    @property
    def modifiers(self) -> frozenset[str]:
        """Modifiers this parameter accepts."""
        return SUPPORTED_MODIFIERS.get(self.type, frozenset())


def _steps(raw: list[Any]) -> tuple[str | tuple[str, str], ...]:
    return tuple(s if isinstance(s, str) else (s["where"][0], s["where"][1]) for s in raw)


def _path(raw: dict[str, Any]) -> PathSpec:
    return PathSpec(_steps(raw["steps"]), raw["type"], raw.get("is"), raw.get("const"))


def _from_json(name: str, raw: dict[str, Any]) -> SearchParamDef:
    contexts = tuple(
        (
            _steps(ctx["steps"]),
            tuple(Component(c["type"], tuple(_path(p) for p in c["paths"])) for c in ctx["components"]),
        )
        for ctx in raw.get("contexts", [])
    )
    return SearchParamDef(
        name=name,
        type=raw["type"],
        expression=raw["expression"],
        paths=tuple(_path(p) for p in raw.get("paths", [])),
        targets=tuple(raw.get("targets", ())),
        url=raw.get("url", ""),
        contexts=contexts,
        algorithm=raw.get("algorithm"),
    )


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    data = resources.files("rhip.fhir").joinpath("data/search_parameters.json").read_bytes()
    table: dict[str, Any] = orjson.loads(data)
    return table


@lru_cache(maxsize=1)
def platform_params() -> dict[str, dict[str, Any]]:
    """The parameters the platform adds to R4's (``data/platform_search_parameters.json``), raw, by type.

    R4 leaves some elements the platform's own rules read without a parameter (a CareTeam's
    ``managingOrganization``, which gives its facility a care relationship); they are indexed
    and searched like the built-ins, and named in the CapabilityStatement under the identifier base.
    """
    data = resources.files("rhip.fhir").joinpath("data/platform_search_parameters.json").read_bytes()
    table: dict[str, dict[str, Any]] = orjson.loads(data)["resources"]
    return table


def _platform_defs() -> dict[str, dict[str, SearchParamDef]]:
    from rhip.config import get_settings

    base = get_settings().identifier_base.rstrip("/")
    return {
        rt: {
            name: _from_json(name, {**raw, "url": f"{base}/SearchParameter/{rt}-{name}"})
            for name, raw in params.items()
        }
        for rt, params in platform_params().items()
    }


_lock = threading.Lock()
_registry: dict[str, dict[str, SearchParamDef]] | None = None
_version = 0


def _reg() -> dict[str, dict[str, SearchParamDef]]:
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                built = {
                    rt: {name: _from_json(name, raw) for name, raw in params.items()}
                    for rt, params in _table()["resources"].items()
                }
                for rt, params in _platform_defs().items():
                    built[rt].update(params)
                _registry = built
    return _registry


def search_params_for(res_type: str) -> dict[str, SearchParamDef]:
    """Indexed parameters of ``res_type`` by name (built-in and registered); empty if unknown type.

    ``_id`` and ``_lastUpdated`` (see :data:`COMMON_PARAMS`) are answered from the resource table
    and are not in this mapping.
    """
    return dict(_reg().get(res_type, {}))


def get_search_param(res_type: str, name: str) -> SearchParamDef | None:
    """One indexed parameter of ``res_type`` by name, or None (no copy of the registry is made)."""
    return _reg().get(res_type, {}).get(name)


def all_resource_types() -> list[str]:
    """Every resource type the table knows (all R4 resource types)."""
    return sorted(_reg())


def excluded_params() -> list[dict[str, Any]]:
    """Official parameters (or parts of their expressions) left out, with the reason."""
    return list(_table()["excluded"])


def register_search_param(res_type: str, param: SearchParamDef) -> None:
    """Add (or replace) a search parameter of ``res_type``, e.g. a region's own SearchParameter.

    Resources written afterwards are indexed for it; existing resources need a reindex.
    Raises ValueError for an unknown type or a parameter without paths.
    """
    global _version
    if param.type not in SUPPORTED_MODIFIERS or param.type == "special":
        raise ValueError(f"search parameter {param.name}: unsupported type {param.type}")
    if not param.paths and not param.contexts:
        raise ValueError(f"search parameter {param.name}: no paths to index")
    reg = _reg()
    with _lock:
        reg.setdefault(res_type, {})[param.name] = param
        _version += 1


def unregister_search_param(res_type: str, name: str) -> None:
    """Remove a parameter added with :func:`register_search_param` (or a built-in one)."""
    global _version
    with _lock:
        _reg().get(res_type, {}).pop(name, None)
        _version += 1


def registry_version() -> int:
    """A counter bumped on every registration, so compiled extractors know to rebuild."""
    return _version
