"""rhip.api.deps: the request path kept for the audit is Starlette's ``request.url.path``."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from rhip.api.deps import request_path

PATHS = [
    "/fhir/Patient/123",
    "/fhir/Patient/a.b-c_d~e",
    "/fhir/Patient/$everything",
    "/fhir/Observation/x;y=1,z@q:r",
    "/fhir/Patient/%2F",
    "/",
    "//fhir/Patient",
    "/fhir/Pat?ient",
    "/fhir/Pat#ient",
    "/fhir/Pat\\ient",
    "/fhir/Pat\nient",
    "/fhir/Pat\tient",
    "/fhir/Pat ient",
    "/fhir/Patiënt/王",
    "/fhir/Patient/\x00",
    "",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", [b"fhir.example.org", None])
def test_request_path_is_starlettes_url_path(path: str, host: bytes | None) -> None:
    """Plain paths come straight from the scope; anything else goes through Starlette's URL."""
    headers = [(b"host", host)] if host is not None else []
    scope = {"type": "http", "path": path, "headers": headers, "query_string": b"a=1", "server": None}
    request = Request(scope)
    assert request_path(request) == request.url.path
