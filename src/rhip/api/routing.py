"""Turning every failure into an OperationOutcome, never a bare 500.

``FhirRoute`` wraps each FHIR route so that platform errors, FastAPI's request-validation errors
and anything unexpected leave as an OperationOutcome with the right status, and the audit hook
hears about failures too. ``install_handlers`` covers what happens before a route is found:
unknown paths (404) and wrong methods (405).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response

from rhip.api import access
from rhip.api.http import error_response, plain_error
from rhip.errors import RhipError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    415: "not-supported",
    413: "too-costly",
}


def _audit_failure(request: Request, status: int) -> None:
    ctx = getattr(request.state, "rhip_ctx", None)
    if ctx is None:
        return
    outcome = "4" if status < 500 else "8"
    try:
        access.audit(ctx, ctx.extra.get("interaction", "unknown"), outcome, ctx.extra.get("entities", []))
    except Exception:
        logger.exception("audit hook failed")


def validation_response(exc: RequestValidationError) -> Response:
    """400 OperationOutcome for a request FastAPI could not bind (names the parameter)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return plain_error(400, "invalid", "; ".join(parts) or "invalid request")


def http_response(exc: HTTPException) -> Response:
    """OperationOutcome for Starlette's protocol errors (unknown route, method not allowed)."""
    code = _HTTP_CODES.get(exc.status_code, "processing")
    detail = str(exc.detail) if exc.detail else "error"
    if exc.status_code == 404:
        detail = "no such FHIR endpoint; see /fhir/metadata"
    elif exc.status_code == 405:
        detail = "method not allowed on this FHIR endpoint; see /fhir/metadata"
    response = plain_error(exc.status_code, code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


class FhirRoute(APIRoute):
    """An APIRoute whose handler answers every failure with an OperationOutcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the platform's error translation."""
        handler = super().get_route_handler()

        async def fhir_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RhipError as exc:
                _audit_failure(request, exc.status)
                return error_response(exc)
            except RequestValidationError as exc:
                _audit_failure(request, 400)
                return validation_response(exc)
            except HTTPException as exc:
                _audit_failure(request, exc.status_code)
                return http_response(exc)
            except Exception:
                logger.exception("unhandled error in %s %s", request.method, request.url.path)
                _audit_failure(request, 500)
                return plain_error(500, "exception", "internal server error; the incident was logged")

        return fhir_handler


def install_handlers(app: FastAPI) -> None:
    """Exception handlers for errors raised outside FHIR routes (routing, other modules' routers)."""

    async def on_rhip(request: Request, exc: Exception) -> Response:
        return error_response(cast(RhipError, exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        return http_response(cast(HTTPException, exc))

    async def on_validation(request: Request, exc: Exception) -> Response:
        return validation_response(cast(RequestValidationError, exc))

    async def on_error(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return plain_error(500, "exception", "internal server error; the incident was logged")

    app.add_exception_handler(RhipError, on_rhip)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_error)
