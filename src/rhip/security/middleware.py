"""Authentication on every request: a bearer token is required outside a short list of public paths.

The middleware turns the token into a :class:`~rhip.security.tokens.Principal` and puts a ready
:class:`~rhip.api.access.RequestContext` (with the principal and the security runtime) on the
request state, so every router, the FHIR routes and other modules' alike, sees the same caller.
Requests without a valid token are answered 401 here, before any route runs, and audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from rhip.api.access import RequestContext, new_request_id
from rhip.errors import Unauthorized
from rhip.security.audit import AuditRecord

if TYPE_CHECKING:
    from rhip.security.runtime import SecurityRuntime

#: Paths anyone may call: discovery, the token endpoint, the API description and the chart
#: pages' static scripts (plotly.js and its loader: no data; a chart page saved to a file loads
#: them without a token) and the liveness and readiness probes (no data: see
#: :mod:`rhip.api.routes_probes`).
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/static/plotly.min.js",
        "/static/rhip-charts.js",
        "/fhir/metadata",
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
        "/auth/token",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
    }
)

#: Back-office routers of other modules: path prefix -> roles allowed. Their answers are not
#: filtered per resident, so only roles that see everybody (or run the platform) may call them.
#: The longest matching prefix decides. The MPI's resident reads (card lookup, resident,
#: ``$everything``) filter and audit every record they return through :mod:`rhip.api.access`, so
#: practitioners may use them; review, match and corrections stay with the roles that see everybody.
MODULE_GATES: dict[str, frozenset[str]] = {
    "/mpi/resident": frozenset({"platform_admin", "system", "practitioner"}),
    "/mpi/": frozenset({"platform_admin", "system"}),
    "/ingest/": frozenset({"platform_admin", "system"}),
    "/quality/": frozenset({"platform_admin", "system", "facility_admin", "public_health"}),
    "/surveillance/": frozenset({"platform_admin", "system", "public_health"}),
}


def _credentials(scope: Scope) -> tuple[str, str | None]:
    """The ``Authorization`` and ``X-Request-ID`` headers ("" and None when absent; the last wins).

    Only these two are read: decoding every header of every request into a dict cost more than
    the look-ups it served.
    """
    auth, request_id = "", None
    for name, value in scope.get("headers") or ():
        if len(name) == 13 and name.lower() == b"authorization":
            auth = value.decode("latin-1")
        elif len(name) == 12 and name.lower() == b"x-request-id":
            request_id = value.decode("latin-1")
    return auth, request_id


def _refusal(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    code = "login" if status == 401 else "forbidden"
    issue = {"severity": "error", "code": code, "diagnostics": message}
    body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="rhip"'))
    return status, headers, body


#: Every gated prefix, for one C-level test that lets FHIR paths (nearly every request) through.
_GATED = tuple(MODULE_GATES)


def _gate(path: str) -> frozenset[str] | None:
    """The roles allowed on a back-office path (longest matching prefix), None when not gated."""
    if not path.startswith(_GATED):
        return None
    best: str | None = None
    for prefix in MODULE_GATES:
        if path.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else MODULE_GATES[best]


class SecurityMiddleware:
    """Pure ASGI middleware (no response buffering) that authenticates each HTTP request."""

    def __init__(self, app: ASGIApp, runtime: SecurityRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, attach the context, and pass on (or answer 401)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth, request_id = _credentials(scope)
        path = scope.get("path", "")
        client = scope.get("client")
        ctx = RequestContext(
            method=scope.get("method", "GET"),
            path=path,
            client=client[0] if client else None,
            request_id=request_id or new_request_id(),
            headers={} if request_id is None else {"x-request-id": request_id},
        )
        ctx.extra["security"] = self.runtime
        try:
            if auth[:7].lower() == "bearer ":
                principal = self.runtime.tokens.verify(auth[7:].strip())
                ctx.principal = principal.sub
                ctx.scopes = tuple(principal.scope.split())
                ctx.extra["principal"] = principal
            elif path not in PUBLIC_PATHS:
                raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
        except Unauthorized as exc:
            if path in PUBLIC_PATHS:
                ctx.extra.pop("principal", None)
            else:
                await self._refuse(ctx, exc.diagnostics, send)
                return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["rhip_ctx"] = ctx
        roles = _gate(path)
        if roles is None:
            await self.app(scope, receive, send)
            return
        principal = ctx.extra["principal"]
        if principal.role not in roles:
            await self._refuse(
                ctx, f"role {principal.role} may not use {path.split('/')[1]}", send, status=403
            )
            return
        await self._audited(ctx, principal, scope, receive, send)

    async def _audited(
        self, ctx: RequestContext, principal: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run a back-office route and audit it with the status it answered."""
        status = [500]

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            outcome = "0" if status[0] < 400 else "4" if status[0] < 500 else "8"
            self.runtime.record(
                AuditRecord(
                    actor=principal.sub,
                    role=principal.role,
                    action=f"{ctx.method} {ctx.path}"[:120],
                    outcome=outcome,
                    source=ctx.client,
                    request_id=ctx.request_id,
                    path=ctx.path,
                )
            )

    async def _refuse(self, ctx: RequestContext, message: str, send: Send, status: int = 401) -> None:
        principal = ctx.extra.get("principal")
        self.runtime.record(
            AuditRecord(
                actor=getattr(principal, "sub", "anonymous"),
                role=getattr(principal, "role", ""),
                action="authenticate" if status == 401 else "access",
                outcome="4",
                source=ctx.client,
                request_id=ctx.request_id,
                path=ctx.path,
                detail=message,
            )
        )
        status, headers, body = _refusal(status, message)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
