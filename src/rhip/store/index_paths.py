"""Path walking for index extraction: the values a search parameter's path reaches in a resource.

A path is a sequence of JSON keys and where-filters (``(key, wanted value)``), compiled from its
FHIRPath expression by :mod:`rhip.fhir.search_params`. :func:`walk` follows any path; the readers
:func:`_reader` builds are the same walk specialised for the one- and two-key paths that nearly all
parameters have. :mod:`rhip.store.index_extract` compiles them into its plans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

__all__ = ["Reader", "walk"]


def walk(node: Any, steps: tuple[str | tuple[str, str], ...]) -> list[Any]:
    """Values reached from ``node`` by following JSON keys (lists flattened) and where-filters."""
    nodes = [node]
    for step in steps:
        if isinstance(step, str):
            nxt: list[Any] = []
            for n in nodes:
                if isinstance(n, dict):
                    v = n.get(step)
                    if v is None:
                        continue
                    if isinstance(v, list):
                        nxt.extend(v)
                    else:
                        nxt.append(v)
            nodes = nxt
        else:
            key, want = step
            nodes = [n for n in nodes if isinstance(n, dict) and n.get(key) == want]
        if not nodes:
            break
    return nodes


#: The values a path reaches in a resource (what :func:`walk` gives from the resource root).
Reader = Callable[[dict[str, Any]], Sequence[Any]]


def _reader(steps: tuple[str | tuple[str, str], ...]) -> Reader:
    """A function giving ``walk(resource, steps)``, specialised for the common one- and two-key paths.

    Most parameters read one top-level element or one key below it; the readers of those do no
    per-step type tests and builds no intermediate lists.
    """
    first = steps[0] if steps else None
    if len(steps) == 1 and isinstance(first, str):
        return partial(_top_values, first)
    if len(steps) == 2 and isinstance(first, str) and isinstance(steps[1], str):
        return partial(_child_values, first, steps[1])
    if isinstance(first, str):
        return partial(_walk_present, first, steps)
    return partial(_walk_from, steps)


def _top_values(key: str, resource: dict[str, Any]) -> Sequence[Any]:
    v = resource.get(key)
    if v is None:
        return ()
    return v if isinstance(v, list) else (v,)


def _child_values(key: str, child: str, resource: dict[str, Any]) -> Sequence[Any]:
    v = resource.get(key)
    if v is None:
        return ()
    out: list[Any] = []
    for node in v if isinstance(v, list) else (v,):
        if isinstance(node, dict):
            x = node.get(child)
            if x is not None:
                if isinstance(x, list):
                    out.extend(x)
                else:
                    out.append(x)
    return out


def _walk_present(
    key: str, steps: tuple[str | tuple[str, str], ...], resource: dict[str, Any]
) -> Sequence[Any]:
    return walk(resource, steps) if key in resource else ()


def _walk_from(steps: tuple[str | tuple[str, str], ...], resource: dict[str, Any]) -> Sequence[Any]:
    return walk(resource, steps)
