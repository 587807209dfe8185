"""The single policy point every FHIR interaction passes through.

The API calls these hooks in exactly one place per interaction: ``authorize`` before the store is
touched, ``search`` for searches (so that totals, includes and pages count only what the caller
may see), ``filter_results`` on every resource about to leave the server, and ``audit`` once the
outcome is known. Each hook hands the work to the security runtime that the authentication
middleware of :mod:`rhip.security.api` puts on the request context (``ctx.extra["security"]``).
Without it (an app built with ``Settings(auth_enabled=False)`` or without that router) they allow
everything and record nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhip.store import Store
    from rhip.store.guard import WriteGuard
    from rhip.store.search import SearchResult

logger = logging.getLogger(__name__)

#: Interaction names passed to the hooks (FHIR's own codes plus the operations this API serves).
INTERACTIONS: tuple[str, ...] = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "create",
    "search-type",
    "search-system",
    "history-instance",
    "history-type",
    "history-system",
    "batch",
    "transaction",
    "capabilities",
    "operation",
)


def new_request_id() -> str:
    """A random version-4 UUID in hex, for a request that sent no ``X-Request-ID``."""
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    """Who is asking and how: built once per request from the HTTP request.

    ``principal`` and ``scopes`` are filled by the security module's authentication; the API itself
    only records the client address, method, path and the request id.
    """

    method: str
    path: str
    client: str | None = None
    request_id: str | None = None
    principal: str | None = None
    scopes: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def authorize(
    ctx: RequestContext,
    interaction: str,
    res_type: str | None,
    res_id: str | None = None,
    resource: dict[str, Any] | None = None,
) -> None:
    """Allow or refuse one interaction; raise ``rhip.errors.Forbidden``/``Unauthorized`` to refuse.

    Args:
        ctx: the request context.
        interaction: one of :data:`INTERACTIONS`.
        res_type: the resource type concerned (None for system-level interactions).
        res_id: the resource id for instance-level interactions.
        resource: the submitted body for writes.
    """
    security = ctx.extra.get("security")
    if security is not None:
        security.authorize(ctx, interaction, res_type, res_id, resource)


def write_guard(ctx: RequestContext) -> WriteGuard | None:
    """The guard the store asks before each version this request writes; None when nothing is checked.

    Refusals the guard raises inside the store (a batch entry answers 403 on its own) are listed
    in ``ctx.extra["write_refusals"]`` as :class:`rhip.store.guard.WriteCheck` values for the audit.
    """
    security = ctx.extra.get("security")
    if security is None:
        return None
    guard: WriteGuard | None = security.write_guard(ctx)
    return guard


def filter_results(ctx: RequestContext, resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the resources this caller may see (all of them when security is off)."""
    security = ctx.extra.get("security")
    if security is None:
        return list(resources)
    shown: list[dict[str, Any]] = security.filter_results(ctx, resources)
    return shown


def search(
    ctx: RequestContext,
    store: Store,
    res_type: str | None,
    params: list[tuple[str, str]],
    *,
    count: int,
    offset: int,
) -> SearchResult:
    """Run a search as this caller: matches, includes and total hold only what they may see."""
    security = ctx.extra.get("security")
    if security is None:
        return store.search(res_type, params, count=count, offset=offset)
    result: SearchResult = security.search(ctx, res_type, params, count=count, offset=offset)
    return result


def audit(
    ctx: RequestContext,
    interaction: str,
    outcome: str,
    entities: Sequence[tuple[str, str]] = (),
) -> None:
    """Record one interaction and its outcome (``"0"`` success, ``"4"``/``"8"`` failures, as AuditEvent).

    ``entities`` are (resource type, id) pairs touched by the interaction.
    """
    security = ctx.extra.get("security")
    if security is not None:
        security.audit(ctx, interaction, outcome, entities)
