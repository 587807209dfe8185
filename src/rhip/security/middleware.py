"""Authentication on every request: a bearer token is required outside a short list of public paths.

The middleware turns the token into a :class:`~rhip.security.tokens.Principal` and puts a ready
:class:`~rhip.api.access.RequestContext` (with the principal and the security runtime) on the
request state, so every router, the FHIR routes and other modules' alike, sees the same caller.
Requests without a valid token are answered 401 here, before any route runs, and audited.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from rhip.api.access import RequestContext
from rhip.errors import Unauthorized
from rhip.security.audit import AuditRecord
from rhip.security.tokens import decode_token

if TYPE_CHECKING:
    from rhip.security.runtime import SecurityRuntime

#: Paths anyone may call: discovery, the token endpoint and the API description.
PUBLIC_PATHS = frozenset(
    {
        "/fhir/metadata",
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
        "/auth/token",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
    }
)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def _unauthorized(message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "login", "diagnostics": message}],
        }
    )
    headers = [
        (b"content-type", b"application/fhir+json"),
        (b"www-authenticate", b'Bearer realm="rhip"'),
        (b"content-length", str(len(body)).encode()),
    ]
    return 401, headers, body


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
        headers = _headers(scope)
        path = scope.get("path", "")
        client = scope.get("client")
        ctx = RequestContext(
            method=scope.get("method", "GET"),
            path=path,
            client=client[0] if client else None,
            request_id=headers.get("x-request-id") or uuid.uuid4().hex,
            headers={k: v for k, v in headers.items() if k == "x-request-id"},
        )
        ctx.extra["security"] = self.runtime
        auth = headers.get("authorization", "")
        try:
            if auth[:7].lower() == "bearer ":
                principal = decode_token(self.runtime.keys, auth[7:].strip())
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
        await self.app(scope, receive, send)

    async def _refuse(self, ctx: RequestContext, message: str, send: Send) -> None:
        self.runtime.record(
            AuditRecord(
                actor="anonymous",
                role="",
                action="authenticate",
                outcome="4",
                source=ctx.client,
                request_id=ctx.request_id,
                path=ctx.path,
                detail=message,
            )
        )
        status, headers, body = _unauthorized(message)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
