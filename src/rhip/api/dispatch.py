"""Route dispatch that skips included routers which cannot match the request path.

FastAPI tries the routes of every included router in order, and each try costs several
microseconds (it records and restores its per-route context in the scope around the regex). With
about 70 routes, a FHIR create or read paid for some 60 tries before reaching its own route, a
quarter of the CPU of a create. :func:`gate_included_routers` gives each top-level included
router a gate built from the literal start of its paths: a request whose path starts with none of
them cannot match any route of that router, so the router answers "no match" at once. The gate
only skips routers that would have answered "no match" anyway, so which route serves a request,
and every 404/405 answer, stays as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

Matcher = Callable[[Scope], tuple[Match, Scope]]


@dataclass(frozen=True)
class PathGate:
    """What a path must look like for any route of one router to match it.

    ``exact``: paths of routes without parameters (their regex ``^...$`` also takes the path with
    one trailing newline, so that form is in the set too); ``prefixes``: the literal start of every
    path with parameters.
    """

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def may_match(self, path: str) -> bool:
        """False only when no route of the router can match ``path``."""
        return path in self.exact or path.startswith(self.prefixes)


def route_path(scope: Scope) -> str:
    """The path the routes match against: ``scope["path"]`` without the ``root_path`` (as Starlette)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def gate_for(included: Any) -> PathGate | None:
    """The gate of one included router, or None when a route's path cannot be bounded by a prefix.

    Only FastAPI routes whose compiled regex starts with their literal head are gated; a mount, a
    host route or anything else leaves the router ungated (tried as before).
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    for context in included.effective_route_contexts():
        route = getattr(context, "original_route", None)
        path_format = getattr(context, "path_format", "")
        regex = getattr(context, "path_regex", None)
        if getattr(context, "starlette_route", None) is not None or not isinstance(route, APIRoute):
            return None
        if not path_format or regex is None:
            return None
        head = path_format.split("{", 1)[0]
        if not regex.pattern.startswith("^" + re.escape(head)):
            return None
        if "{" in path_format:
            prefixes.append(head)
        else:
            exact.update((head, head + "\n"))
    return PathGate(frozenset(exact), tuple(prefixes))


def _gated(matches: Matcher, gate: PathGate, version: Callable[[], int], built: int) -> Matcher:
    def gated_matches(scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or gate.may_match(route_path(scope)) or version() != built:
            return matches(scope)
        return Match.NONE, {}

    return gated_matches


def gate_included_routers(app: FastAPI) -> int:
    """Install a :class:`PathGate` on every top-level included router of ``app``; return how many.

    A gate stands aside (the router is tried in full) once routes are added to its router after
    this call, so a late ``add_api_route`` is never missed.
    """
    count = 0
    for route in app.router.routes:
        original = getattr(route, "original_router", None)
        version = _routes_version(original)
        if version is None or "matches" in vars(route):
            continue
        gate = gate_for(route)
        if gate is None:
            continue
        # an instance attribute: it shadows the class's method for this one router object
        vars(route)["matches"] = _gated(route.matches, gate, version, version())
        count += 1
    return count


def _routes_version(router: Any) -> Callable[[], int] | None:
    """A cheap "have the routes changed" counter of an included router (None: cannot tell).

    FastAPI bumps ``_routes_version`` on every route or router added; a router holding no
    included routers of its own is covered by its own counter (including one later added to it),
    otherwise the recursive sum is needed.
    """
    if not hasattr(router, "_routes_version") or not hasattr(router, "_get_routes_version"):
        return None
    if any(hasattr(child, "original_router") for child in router.routes):
        recursive: Callable[[], int] = router._get_routes_version
        return recursive
    return lambda: int(router._routes_version)
