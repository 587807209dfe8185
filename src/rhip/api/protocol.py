"""The HTTP protocol ``rhip serve`` gives uvicorn: uvicorn's own, with a FHIR answer to unparsable requests.

A request line or header block the HTTP parser rejects (a raw non-ASCII byte in the URL, such as
``GET /fhir/Patient?family=王`` sent without percent-encoding) never reaches the application:
uvicorn answers it with a plain-text 400 before any route runs. A FHIR client expects an
OperationOutcome on every error, so these classes override only that answer; parsing, keep-alive
and everything else stay uvicorn's. :data:`FhirHttpProtocol` follows uvicorn's ``auto`` choice
(httptools when installed, else h11).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from rhip.api.http import FhirResponse, outcome
from rhip.errors import Issue

#: What the client is told: the request line (or a header) is not HTTP, and how to send it right.
MALFORMED_REQUEST = (
    "malformed HTTP request line or headers: the server could not parse the request; "
    "URLs must be percent-encoded (RFC 3986), e.g. family=%E7%8E%8B for family=王"
)


def malformed_request_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole HTTP/1.1 400 response (status line, headers, OperationOutcome body), as bytes."""
    body = orjson.dumps(outcome([Issue("error", "structure", MALFORMED_REQUEST)]))
    headers = [
        *default_headers,
        (b"content-type", str(FhirResponse.media_type).encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
    ]
    lines = [b"HTTP/1.1 400 Bad Request"] + [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _OutcomeOn400:
    """Replaces uvicorn's plain-text answer to an unparsable request; the connection closes after it."""

    transport: asyncio.Transport
    server_state: ServerState

    def send_400_response(self, msg: str) -> None:
        """Answer with an OperationOutcome (``msg`` is uvicorn's text, already logged by uvicorn)."""
        self.transport.write(malformed_request_response(self.server_state.default_headers))
        self.transport.close()


class FhirH11Protocol(_OutcomeOn400, H11Protocol):
    """uvicorn's h11 protocol, answering unparsable requests with an OperationOutcome."""


FhirHttpProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class FhirHttpToolsProtocol(_OutcomeOn400, HttpToolsProtocol):
        """uvicorn's httptools protocol, answering unparsable requests with an OperationOutcome."""

    FhirHttpProtocol = FhirHttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn; its auto choice is then h11
    FhirHttpProtocol = FhirH11Protocol

__all__ = ["MALFORMED_REQUEST", "FhirH11Protocol", "FhirHttpProtocol", "malformed_request_response"]
