"""Index rows written once for search parameters that overlap, so the write path stores less.

Many FHIR search parameters index the same elements as others: Observation ``combo-code`` is
``code`` plus ``component-code``; ``patient`` is ``subject`` restricted to references to a Patient.
Writing those values once per parameter made about a third of an Observation's index rows copies.
Here the overlap is found once per resource type from the compiled parameter table:

* union: when every path of ``A`` is also a path of ``B`` (same type, hence same converter and
  table), the rows of those paths are written under ``A`` only and ``B`` keeps its other paths;
* type filter: when ``B`` has exactly the paths of reference parameter ``A`` but keeps only
  references to one type (``where(resolve() is Patient)``), ``B`` has no rows of its own and reads
  ``A``'s rows whose ``target_type`` is that type (the row values are identical by construction).

The search side asks :func:`rhip.store.index_extract.stored_params` which rows a parameter reads,
so every search gives the same results as with one row per parameter. Data indexed before this
scheme (one full row set per parameter) is still found, because a parameter reads its own rows too.
Only FHIR's own parameters take part: parameters common to all types (``_tag``...) because a
search across all types reads them by name alone, and a region's registered parameters because
they can be unregistered (which would leave others without the rows they read).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rhip.fhir.search_params import SearchParamDef

__all__ = ["Sharing", "StoredAs", "parts_of", "plan_sharing"]

#: Where a parameter's rows are: (param value, required target_type or None) pairs.
StoredAs = tuple[tuple[str, str | None], ...]
_COMMON = "http://hl7.org/fhir/SearchParameter/Resource-"
_BUILT_IN = "http://hl7.org/fhir/SearchParameter/"


def _candidate(sp: SearchParamDef) -> bool:
    """Only FHIR's own parameters share rows: a region's registered ones come and go."""
    return sp.url.startswith(_BUILT_IN) and not sp.url.startswith(_COMMON)


@dataclass(frozen=True)
class Sharing:
    """A type's reduced parameter definitions (only the paths still written under their own name)
    and, for every parameter, the rows a search on it reads."""

    reduced: dict[str, SearchParamDef]
    stored: dict[str, StoredAs]


def parts_of(sp: SearchParamDef) -> tuple[Any, ...]:
    """What a parameter indexes: its paths, or for a composite its (context, components) pairs."""
    return sp.contexts if sp.type == "composite" else sp.paths


def _filtered(params: dict[str, SearchParamDef]) -> dict[str, tuple[str, str]]:
    """Reference parameters that are another one restricted to a target type: name -> (base, type)."""
    out: dict[str, tuple[str, str]] = {}
    plain = [a for a in params.values() if a.type == "reference" and a.paths and _candidate(a)]
    for b in params.values():
        if b.type != "reference" or not b.paths or not _candidate(b):
            continue
        kinds = {p.is_type for p in b.paths}
        if len(kinds) != 1 or None in kinds:
            continue
        target = next(iter(kinds))
        assert target is not None
        unfiltered = {replace(p, is_type=None) for p in b.paths}
        for a in sorted(plain, key=lambda sp: sp.name):
            if all(p.is_type is None for p in a.paths) and set(a.paths) == unfiltered:
                out[b.name] = (a.name, target)
                break
    return out


def _unions(params: dict[str, SearchParamDef], skip: set[str]) -> dict[str, tuple[tuple[str, ...], set[Any]]]:
    """Parameters whose paths include all of others': name -> (bases, paths left to write)."""
    out: dict[str, tuple[tuple[str, ...], set[Any]]] = {}
    candidates = [sp for sp in params.values() if _candidate(sp) and parts_of(sp)]
    order = sorted(candidates, key=lambda sp: (-len(set(parts_of(sp))), sp.name))
    for b in candidates:
        if b.name in skip:
            continue
        whole = set(parts_of(b))
        left = set(whole)
        bases: list[str] = []
        for a in order:
            parts = set(parts_of(a))
            if (
                a.type == b.type
                and a.algorithm == b.algorithm
                and parts
                and parts <= left
                # bases are strictly smaller (or equal with a smaller name): no cycles
                and (len(parts) < len(whole) or (parts == whole and a.name < b.name))
            ):
                bases.append(a.name)
                left -= parts
        if bases:
            out[b.name] = (tuple(bases), left)
    return out


def plan_sharing(params: dict[str, SearchParamDef]) -> Sharing:
    """Work out which rows each parameter of one resource type writes and reads."""
    filtered = _filtered(params)
    unions = _unions(params, set(filtered))
    reduced: dict[str, SearchParamDef] = {}
    for name in filtered:
        reduced[name] = replace(params[name], paths=())
    for name, (_bases, left) in unions.items():
        sp = params[name]
        if sp.type == "composite":
            reduced[name] = replace(sp, contexts=tuple(c for c in sp.contexts if c in left))
        else:
            reduced[name] = replace(sp, paths=tuple(p for p in sp.paths if p in left))
    stored: dict[str, StoredAs] = {}

    def chain(name: str) -> StoredAs:
        if name not in stored:
            if name in filtered:
                stored[name] = (filtered[name],)
            else:
                bases = unions[name][0] if name in unions else ()
                found = [(name, None), *(entry for b in bases for entry in chain(b))]
                stored[name] = tuple(dict.fromkeys(found))
        return stored[name]

    for name in params:
        chain(name)
    return Sharing(reduced, stored)
