"""The FHIR R4 REST API of the platform (FastAPI): CRUD, search, history, bundles, operations.

Use :func:`create_app` to build the ASGI app around a :class:`rhip.store.Store`; ``rhip serve``
runs it under uvicorn. Security plugs in through :mod:`rhip.api.access`; other modules add their
own routers through :data:`ROUTER_MODULES`. FastAPI is imported on first use of ``create_app``,
so that ``rhip --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rhip.api.access import RequestContext, audit, authorize, filter_results

if TYPE_CHECKING:
    from rhip.api.app import ROUTER_MODULES, create_app

__all__ = ["ROUTER_MODULES", "RequestContext", "audit", "authorize", "create_app", "filter_results"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "ROUTER_MODULES"):
        from rhip.api import app

        return getattr(app, name)
    raise AttributeError(f"module 'rhip.api' has no attribute {name!r}")
