"""HTTP side of security: the OAuth2 token endpoint, SMART discovery, break-the-glass, and
"who read my records" (``GET /fhir/AuditEvent?entity=Patient/<id>``) answered from the audit chain.

``setup(app)`` (called by :func:`rhip.api.create_app`) installs the authentication middleware and
the security runtime when ``settings.auth_enabled`` is true, the default.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response

from rhip.api.http import FhirResponse, base_url
from rhip.api.routing import FhirRoute
from rhip.errors import Forbidden, InvalidRequest, RhipError, Unauthorized
from rhip.fhir.primitives import is_ascii_digits
from rhip.security.audit import AuditRecord
from rhip.security.auditevent import audit_event_bundle
from rhip.security.policy import ROLES
from rhip.security.runtime import SecurityRuntime
from rhip.security.scopes import narrow
from rhip.security.tokens import BREAK_GLASS_TTL, TOKEN_TTL, issue_token
from rhip.security.users import authenticate, get_account
from rhip.store.meta import format_instant

router = APIRouter(route_class=FhirRoute)
_AUDIT_PATH = "/fhir/AuditEvent"


def _runtime(request: Request) -> SecurityRuntime:
    runtime = getattr(request.app.state, "security", None)
    if runtime is None:
        raise InvalidRequest("authentication is disabled on this server (auth_enabled=false)")
    return runtime


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        import orjson

        try:
            data = orjson.loads(body or "{}")
        except orjson.JSONDecodeError:
            raise InvalidRequest("body: not valid JSON") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(body))


def _token_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, secret = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
        except ValueError:
            raise Unauthorized("invalid client credentials") from None
        return user, secret
    return form.get("client_id", ""), form.get("client_secret", "")


@router.post("/auth/token")
async def token(request: Request) -> Response:
    """OAuth2 token endpoint: ``password`` (people) and ``client_credentials`` (systems) grants."""
    runtime = _runtime(request)
    form = await _form(request)
    grant = form.get("grant_type")
    if grant == "password":
        name, secret, kind = form.get("username", ""), form.get("password", ""), "person"
    elif grant == "client_credentials":
        (name, secret), kind = _client_credentials(request, form), "system"
    else:
        return _token_error("unsupported_grant_type", "use password or client_credentials")
    client = request.client.host if request.client else None
    try:
        account = authenticate(runtime.store.engine, name, secret, kind=kind)
    except Unauthorized:
        runtime.record(
            AuditRecord(actor=name[:64] or "anonymous", role="", action="login", outcome="4", source=client)
        )
        return _token_error("invalid_grant", "invalid credentials", 401)
    scope = narrow(form.get("scope"), ROLES[account.role].default_scope)
    access_token = issue_token(runtime.keys, account, scope)
    runtime.record(
        AuditRecord(actor=account.username, role=account.role, action="login", outcome="0", source=client)
    )
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL,
        "scope": scope,
    }
    if account.patient_id:
        body["patient"] = account.patient_id
    return JSONResponse(body, headers={"cache-control": "no-store"})


@router.post("/auth/break-glass")
async def break_glass(request: Request) -> Response:
    """Emergency access to one resident: a practitioner gives a reason and gets a short-lived token."""
    runtime = _runtime(request)
    ctx = request.state.rhip_ctx
    principal = runtime.principal(ctx)
    form = await _form(request)
    patient, reason = form.get("patient", "").strip(), form.get("reason", "").strip()
    if principal.role != "practitioner":
        raise Forbidden("break-the-glass is for practitioners")
    if not patient or len(reason) < 10:
        raise InvalidRequest("break-glass needs 'patient' and a 'reason' of at least 10 characters")
    account = get_account(runtime.store.engine, principal.sub)
    if account is None:
        raise Unauthorized("account no longer exists")
    ttl = min(BREAK_GLASS_TTL, int(form.get("minutes", "60") or 60) * 60)
    grant = {"patient": patient, "reason": reason[:500], "until": time.time() + ttl}
    access_token = issue_token(runtime.keys, account, principal.scope, ttl=ttl, break_glass=grant)
    runtime.record(
        AuditRecord(
            actor=principal.sub,
            role=principal.role,
            action="break-glass",
            outcome="0",
            patients=[patient],
            purpose="ETREAT",
            source=ctx.client,
            break_glass=True,
            detail=reason[:500],
        )
    )
    return JSONResponse(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": principal.scope,
            "break_glass": {**grant, "until": format_instant(grant["until"])},
        },
        headers={"cache-control": "no-store"},
    )


def _smart_configuration(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "issuer": base,
        "token_endpoint": f"{base}/auth/token",
        "grant_types_supported": ["password", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["patient/*.rs", "user/*.cruds", "system/*.cruds", "openid", "fhirUser"],
        "capabilities": ["client-confidential-symmetric", "permission-v2", "context-standalone-patient"],
        "code_challenge_methods_supported": [],
    }


@router.get("/.well-known/smart-configuration", response_class=JSONResponse)
async def smart_configuration(request: Request) -> Response:
    """SMART App Launch discovery document."""
    return JSONResponse(_smart_configuration(request))


@router.get("/fhir/.well-known/smart-configuration", response_class=JSONResponse)
async def smart_configuration_fhir(request: Request) -> Response:
    """SMART discovery under the FHIR base, where SMART clients look first."""
    return JSONResponse(_smart_configuration(request))


@router.get(_AUDIT_PATH)
async def audit_events(request: Request) -> Response:
    """AuditEvent search by ``entity``/``patient``: who accessed a resident's records (newest first)."""
    from rhip.api.deps import begin

    runtime = getattr(request.app.state, "security", None)
    if runtime is None:  # security off: AuditEvent is an ordinary stored type
        import anyio.to_thread

        from rhip.api.http import query_pairs
        from rhip.api.routes_search import run_search

        state = request.app.state
        pairs = query_pairs(request)
        return await anyio.to_thread.run_sync(
            lambda: run_search(request, state.store, state.settings, "AuditEvent", pairs)
        )
    params = list(request.query_params.multi_items())
    patient, count, offset = None, 50, 0
    for name, value in params:
        if name in ("entity", "patient", "entity:Patient"):
            patient = value.rsplit("/", 1)[-1] if value.startswith("Patient/") or name != "entity" else None
        elif name == "_count" and is_ascii_digits(value):
            count = min(int(value), 500)
        elif name == "_offset" and is_ascii_digits(value):
            offset = int(value)
        elif name not in ("_format", "_pretty"):
            raise InvalidRequest(f"{name}: AuditEvent supports entity=Patient/<id>, patient, _count, _offset")
    if not patient:
        raise InvalidRequest(
            "AuditEvent search needs entity=Patient/<id> or patient=<id>", expression=("entity",)
        )
    ctx = begin(request, "search-type", "AuditEvent")
    principal = runtime.principal(ctx)
    records = runtime.relations.own_records(patient)  # the person's records at every facility
    if principal.role not in ("platform_admin",) and principal.patient not in records:
        raise Forbidden("a resident may only see who accessed their own records")
    ctx.extra.setdefault("patients", set()).add(patient)
    runtime.writer.flush()
    from rhip.security.audit import events_for_patient

    total, rows = events_for_patient(runtime.store.engine, records, count=count, offset=offset)
    runtime.audit(ctx, "search-type", "0", [("Patient", patient)])
    return FhirResponse(audit_event_bundle(base_url(request), rows, total))


def setup(app: FastAPI) -> None:
    """Install authentication and the security runtime (no-op when ``auth_enabled`` is false)."""
    from rhip.security.middleware import SecurityMiddleware

    settings = app.state.settings
    if not settings.auth_enabled:
        return
    runtime = SecurityRuntime(app.state.store, settings)
    app.state.security = runtime
    app.add_middleware(SecurityMiddleware, runtime=runtime)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                runtime.close()

    app.router.lifespan_context = lifespan


__all__ = ["RhipError", "router", "setup"]
