"""Small helpers shared by the API tests (imported by name; the tests folder is on sys.path)."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

FHIR_JSON = "application/fhir+json"


def post(client: Any, path: str, resource: Any, headers: dict[str, str] | None = None) -> Any:
    """POST a resource as application/fhir+json."""
    return client.post(
        path, content=json.dumps(resource), headers={"content-type": FHIR_JSON, **(headers or {})}
    )


def put(client: Any, path: str, resource: Any, headers: dict[str, str] | None = None) -> Any:
    """PUT a resource as application/fhir+json."""
    return client.put(
        path, content=json.dumps(resource), headers={"content-type": FHIR_JSON, **(headers or {})}
    )


def patient(family: str = "Wang", given: str = "Fang", **extra: Any) -> dict[str, Any]:
    """A small valid Patient."""
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1980-05-17",
        **extra,
    }


def assert_outcome(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Check that a response is an OperationOutcome with this status (and issue code); return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body


#: The request of the bug: a Chinese family name sent as raw UTF-8 bytes, not percent-encoded.
RAW_NON_ASCII = "GET /fhir/Patient?family=王 HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the server and read the answer until it closes the connection."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body
