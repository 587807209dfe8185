"""Per-request building blocks of the FHIR routes: the store, the request context, type checks.

Routes stay small by asking for these instead of reaching into ``app.state`` themselves; the
security module sees one ``RequestContext`` per request, made here.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.shaping import resource_elements
from rhip.config import Settings
from rhip.errors import InvalidRequest, InvalidResource, Issue, ResourceNotFound

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from rhip.store import Store

T = TypeVar("T")
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


async def get_store(request: Request) -> Store:
    """The store this app serves (async: resolved on the event loop, no worker-thread hop)."""
    store: Store = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    """The settings this app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def raw_body(request: Request) -> bytes:
    """The request body (read on the event loop, before the sync route runs in a worker thread)."""
    return await request.body()


#: Paths made only of these characters read the same in ``scope["path"]`` and ``request.url.path``.
_PLAIN_PATH = re.compile(r"/(?!/)[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def request_path(request: Request) -> str:
    """``request.url.path`` without building the URL when the raw path has nothing to escape.

    Starlette escapes ``?``, ``#`` and ``\\`` and its URL parser drops tabs and newlines and
    rewrites a leading ``//``; a path free of all of those is returned as the scope holds it.
    """
    path: str = request.scope["path"]
    return path if _PLAIN_PATH.fullmatch(path) else request.url.path


def request_context(request: Request) -> access.RequestContext:
    """The one RequestContext of this request (made on first use and kept on ``request.state``)."""
    ctx = getattr(request.state, "rhip_ctx", None)
    if ctx is None:
        ctx = access.RequestContext(
            method=request.method,
            path=request_path(request),
            client=request.client.host if request.client else None,
            request_id=request.headers.get("x-request-id") or access.new_request_id(),
            headers={k: v for k, v in request.headers.items() if k in ("authorization", "x-request-id")},
        )
        request.state.rhip_ctx = ctx
    return ctx


def begin(
    request: Request,
    interaction: str,
    res_type: str | None,
    res_id: str | None = None,
    resource: dict[str, Any] | None = None,
) -> access.RequestContext:
    """Record the interaction on the context and pass it through the policy hook."""
    ctx = request_context(request)
    ctx.extra["interaction"] = interaction
    ctx.extra["entities"] = [(res_type, res_id)] if res_type and res_id else []
    access.authorize(ctx, interaction, res_type, res_id, resource)
    return ctx


def check_type(res_type: str) -> str:
    """404 for a resource type R4 does not define."""
    if res_type not in resource_elements():
        raise ResourceNotFound(f"unknown resource type '{res_type[:64]}'")
    return res_type


def check_id(res_id: str, *, for_write: bool = False) -> str:
    """A well-formed FHIR id; 400 on writes, 404 on reads otherwise."""
    if not ID_RE.match(res_id):
        if for_write:
            raise InvalidRequest("id: not a valid FHIR id ([A-Za-z0-9-.]{1,64})", expression=("id",))
        raise ResourceNotFound("no resource with that id (malformed id)")
    return res_id


def _basic_issues(resource: dict[str, Any]) -> list[Issue]:
    issues = []
    if resource.get("resourceType") not in resource_elements():
        issues.append(Issue("error", "invalid", "resourceType: unknown resource type", ("resourceType",)))
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        issues.append(
            Issue("error", "value", "id: not a valid FHIR id", (f"{resource.get('resourceType')}.id",))
        )
    return issues


def validate(resource: dict[str, Any]) -> list[Issue]:
    """Every issue found in a resource: the platform validator's, or the basic checks until it exists."""
    issues = _basic_issues(resource)
    if issues:
        return issues
    try:
        from rhip.fhir.validation import validate_resource
    except ImportError:
        return []
    return list(validate_resource(resource))


def ensure_valid(resource: dict[str, Any]) -> None:
    """Raise InvalidResource (422) naming every element in error when the resource is invalid."""
    issues = [i for i in validate(resource) if i.severity in ("error", "fatal")]
    if issues:
        first = issues[0]
        raise InvalidResource(first.diagnostics, issues=issues)


#: How a route's work reaches the store: ``inline`` (short point reads, run on the event loop when the
#: store is SQLite), ``write`` and ``thread`` (the worker pool; writes also take :func:`write_lock`).
WORK_KINDS = ("inline", "write", "thread")


async def run_work(request: Request, kind: str, work: Callable[[], T]) -> T:
    """Run a route body according to its kind (see :data:`WORK_KINDS`)."""
    if kind == "inline" and store_is_sqlite(request):
        return work()
    return await anyio.to_thread.run_sync(work)


def store_work(kind: str) -> Callable[[Callable[..., Response]], Callable[..., Awaitable[Response]]]:
    """Decorate a sync route body so that it runs per :func:`run_work` (FastAPI sees an async route)."""
    if kind not in WORK_KINDS:
        raise ValueError(f"unknown work kind {kind}")

    def decorate(func: Callable[..., Response]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(func)
        async def endpoint(*args: Any, **kwargs: Any) -> Response:
            request = kwargs["request"]
            return await run_work(request, kind, functools.partial(func, *args, **kwargs))

        return endpoint

    return decorate


_WRITE_LOCK = threading.Lock()


def write_lock(request: Request) -> contextlib.AbstractContextManager[Any]:
    """Serialise store writes in this process when the store is SQLite.

    SQLite has one writer; a second one sleeps in SQLite's busy handler (1, 2, 5, 10 ms steps),
    which under load costs far more than the write. Queuing on a Python lock wakes the next writer
    the moment the previous commit ends, while parsing, validation and rendering still overlap.
    """
    lock = _sqlite_lock(request.app.state.store)
    return contextlib.nullcontext() if lock is None else lock


def _sqlite_lock(store: Store) -> threading.Lock | None:
    return sqlite_write_lock(store.engine)


def sqlite_write_lock(engine: Engine) -> threading.Lock | None:
    """The lock every SQLite write of this process to ``engine`` takes (None for other stores)."""
    if getattr(engine.dialect, "name", "") != "sqlite":
        return None
    lock = engine.__dict__.get("_rhip_write_lock")
    if lock is None:
        with _WRITE_LOCK:
            lock = engine.__dict__.setdefault("_rhip_write_lock", threading.Lock())
    return cast(threading.Lock, lock)


#: Create bodies up to this size are checked on the event loop and grouped (SQLite); larger ones are
#: parsed and validated in a worker thread, so that one big body never holds up the loop.
INLINE_CREATE_BYTES = 64 * 1024


def store_is_sqlite(request: Request) -> bool:
    """True when the app's store is SQLite (one writer: writes take :func:`write_lock`)."""
    state = request.app.state
    sqlite = getattr(state, "store_is_sqlite", None)
    if sqlite is None:
        sqlite = state.store_is_sqlite = getattr(state.store.engine.dialect, "name", "") == "sqlite"
    return bool(sqlite)


def create_resource(
    request: Request, resource: dict[str, Any], if_none_exist: list[tuple[str, str]] | None
) -> Any:
    """Create in the calling worker thread: under the write lock on SQLite, directly otherwise."""
    store: Store = request.app.state.store
    with write_lock(request):
        return store.create(resource, if_none_exist=if_none_exist, assign_id=True)


async def create_grouped(request: Request, resource: dict[str, Any]) -> Any:
    """Create on SQLite from the event loop through the group-commit batcher of this loop."""
    from rhip.api.batching import batcher_for

    store: Store = request.app.state.store
    lock = _sqlite_lock(store)
    if lock is None:
        raise RuntimeError("group commit is for SQLite stores only")
    return await batcher_for(request.app.state, store, lock).create(resource)
