"""``GET /health`` and ``GET /ready``: the probes of a load balancer, systemd or Kubernetes.

``/health`` (liveness) says only that the process answers: no database, no data, nothing that
could make a slow store restart a healthy server. ``/ready`` (readiness) runs
:func:`rhip.api.readiness.readiness_checks` and answers 503 naming the failing checks, so traffic
goes elsewhere until the store, its schema, the keys and the audit writer are in order. Both
answer without a token (:data:`rhip.security.middleware.PUBLIC_PATHS`) and are not audited: they
read no resident's data, and a probe every few seconds would bury the audit trail.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rhip.api.readiness import Check, readiness_checks

router = APIRouter(tags=["operations"])

#: Paths of the probes (public: see :data:`rhip.security.middleware.PUBLIC_PATHS`).
PROBE_PATHS = ("/health", "/ready")
#: Seconds the readiness checks may take before the probe answers 503 (a database that hangs).
READY_TIMEOUT = 5.0

_READY_EXAMPLE = {
    "status": "ready",
    "checks": [
        {"name": "database", "status": "pass", "detail": "postgresql answers"},
        {"name": "schema", "status": "pass", "detail": "at head 0007"},
        {"name": "keys", "status": "pass", "detail": "sm4 v1, jwt v1, hmac v1"},
        {"name": "audit", "status": "pass", "detail": "audit writer running"},
    ],
}
_NOT_READY_EXAMPLE = {
    "status": "not ready",
    "failing": ["schema"],
    "checks": [
        {
            "name": "schema",
            "status": "fail",
            "detail": "at 0006, this version needs 0007: run rhip db upgrade",
        }
    ],
}


def _example(example: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


@router.get(
    PROBE_PATHS[0],
    response_class=JSONResponse,
    responses={200: _example({"status": "pass"}, "The process answers.")},
)
async def health() -> JSONResponse:
    """Liveness: the server process answers (no database, no token, not audited)."""
    return JSONResponse({"status": "pass"})


@router.get(
    PROBE_PATHS[1],
    response_class=JSONResponse,
    responses={
        200: _example(_READY_EXAMPLE, "Every check passes (or is skipped)."),
        503: _example(_NOT_READY_EXAMPLE, "A check failed; ``failing`` names it."),
    },
)
async def ready(request: Request) -> JSONResponse:
    """Readiness: the store database answers, its schema is at head, the keys load, audit runs."""
    state = request.app.state
    security = getattr(state, "security", None)
    try:
        with anyio.fail_after(READY_TIMEOUT):
            checks = await anyio.to_thread.run_sync(
                readiness_checks, state.store.engine, state.settings, security, abandon_on_cancel=True
            )
    except TimeoutError:
        checks = [Check("database", "fail", f"no answer within {READY_TIMEOUT:g} s")]
    failing = [c.name for c in checks if c.status == "fail"]
    body: dict[str, Any] = {"status": "not ready" if failing else "ready"}
    if failing:
        body["failing"] = failing
    body["checks"] = [c.as_json() for c in checks]
    return JSONResponse(body, status_code=503 if failing else 200)
