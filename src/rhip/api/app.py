"""The FastAPI application: the FHIR REST routes plus the routers other modules contribute.

``create_app`` is the one factory used by ``rhip serve``, the tests and the benchmarks. Other
capabilities add endpoints the way an outside plugin would: a module named in
:data:`ROUTER_MODULES` that exposes ``router`` (and optionally ``setup(app)``) is included when it
can be imported, and silently skipped when it does not exist yet.
"""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from sqlalchemy import Engine, event
from starlette.middleware.gzip import GZipMiddleware

from rhip import __version__
from rhip.api import (
    operation_definitions,
    routes_probes,
    routes_rest,
    routes_results,
    routes_search,
    routes_static,
    routes_system,
)
from rhip.api.dispatch import gate_included_routers
from rhip.api.http import FhirResponse
from rhip.api.routing import install_handlers
from rhip.config import Settings, get_settings

if TYPE_CHECKING:
    from rhip.store import Store

logger = logging.getLogger(__name__)

#: Modules whose ``router`` (and optional ``setup(app)``) are added to the app when importable.
ROUTER_MODULES: tuple[str, ...] = (
    "rhip.lake.api",
    "rhip.mpi.api",
    "rhip.quality.api",
    "rhip.security.api",
    "rhip.surveillance.api",
    "rhip.ingest.api",
)


def _include_contributed(app: FastAPI, modules: tuple[str, ...]) -> list[str]:
    included = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        router = getattr(module, "router", None)
        if router is not None:
            app.include_router(router)
        setup = getattr(module, "setup", None)
        if callable(setup):
            setup(app)
        included.append(name)
    return included


#: Seconds between WAL checkpoints while the API serves an SQLite store (as the MLLP listener).
CHECKPOINT_INTERVAL = 0.5


def start_checkpoints(engine: Engine) -> Callable[[], None] | None:
    """Checkpoint an SQLite store's log in a thread of its own while the app runs; return the stop.

    SQLite otherwise checkpoints inside the commit that takes the log past 1,000 pages, and the
    write lock (so every create waiting in the next group) waits for the copy and the sync of
    the database file. Any commit of the process wakes the thread; what is committed and how
    durable it is stay the same (see :mod:`rhip.store.walcheckpoint`). The thread holds the write
    lock of the process's writers while it restarts a grown log. None for other stores.
    """
    from rhip.api.deps import sqlite_write_lock
    from rhip.store.walcheckpoint import BackgroundCheckpoints, has_wal_file

    if not has_wal_file(engine):
        return None
    checkpoints = BackgroundCheckpoints(engine, CHECKPOINT_INTERVAL, lock=sqlite_write_lock(engine))

    def committed(_conn: Any) -> None:
        checkpoints.committed()

    checkpoints.start()
    event.listen(engine, "commit", committed)

    def stop() -> None:
        event.remove(engine, "commit", committed)
        checkpoints.stop()

    return stop


def create_app(
    store: Store | None = None,
    settings: Settings | None = None,
    *,
    router_modules: tuple[str, ...] | None = None,
) -> FastAPI:
    """Build the API.

    Args:
        store: the store to serve; default: ``Store.from_settings(settings)`` (closed on shutdown).
        settings: platform settings; default: :func:`rhip.config.get_settings`.
        router_modules: modules contributing routers; default :data:`ROUTER_MODULES`.
    """
    settings = settings or get_settings()
    owned = store is None
    if store is None:
        from rhip.store import Store

        store = Store.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything alive once the app has started (modules, routes, compiled plans) lives as long as
        # the server: moved out of the collector's sight, the full collections that large searches
        # trigger no longer walk it again and again (broad-search p95 in docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        checkpoints = start_checkpoints(app.state.store.engine)
        try:
            yield
        finally:
            if checkpoints is not None:
                checkpoints()
            gc.unfreeze()
            if owned:
                app.state.store.close()

    app = FastAPI(
        title="RHIP FHIR API",
        version=__version__,
        default_response_class=FhirResponse,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    install_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    # Order matters: literal FHIR paths (metadata, _history, _search) first, then the routers other
    # modules contribute (their literal paths such as /fhir/$export must win over the patterns),
    # then the generic /fhir/{type}/{id} patterns.
    app.include_router(routes_system.router)
    app.include_router(routes_static.router)
    app.include_router(routes_probes.router)
    modules = ROUTER_MODULES if router_modules is None else router_modules
    app.state.contributed = _include_contributed(app, modules)
    app.include_router(routes_results.router)
    app.include_router(operation_definitions.router)
    app.include_router(routes_search.router)
    app.include_router(routes_rest.router)
    gate_included_routers(app)
    return app
