"""rhip.api.http: the cached FHIR base equals what Starlette builds, for every request shape."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from rhip.api.http import base_url


def _request(scheme: str, server: Any, host: bytes | None, root_path: str = "", **extra: Any) -> Request:
    headers = [(b"accept", b"*/*")] + ([(b"host", host)] if host is not None else [])
    scope = {"type": "http", "scheme": scheme, "server": server, "path": root_path + "/fhir/Patient"}
    scope.update(headers=headers, root_path=root_path, query_string=b"_count=1", method="GET", **extra)
    return Request(scope)


SHAPES = [
    ("http", ("127.0.0.1", 8000), b"127.0.0.1:8000", ""),
    ("http", ("127.0.0.1", 8000), b"fhir.example.org", ""),
    ("https", ("10.0.0.1", 443), b"fhir.example.org:443", ""),
    ("http", ("10.0.0.1", 80), None, ""),
    ("http", ("::1", 8080), None, ""),
    ("http", None, None, ""),
    ("http", ["testserver", 80], b"testserver", "/api"),
    ("http", ("127.0.0.1", 8000), b"bad host:port:x", ""),
    ("https", ("127.0.0.1", 8443), b"[::1]:8443", "/x/y"),
]


@pytest.mark.parametrize(("scheme", "server", "host", "root"), SHAPES)
def test_base_url_is_starlettes_first_and_cached(scheme: str, server: Any, host: Any, root: str) -> None:
    """Same answer as request.base_url on the first (building) call and on the cached one."""
    for _ in range(2):
        request = _request(scheme, server, host, root)
        assert base_url(request) == str(request.base_url).rstrip("/") + "/fhir"


def test_base_url_follows_the_host_of_each_request() -> None:
    """A cached base never answers a request that reached the server under another name."""
    one = base_url(_request("http", ("127.0.0.1", 8000), b"a.example.org"))
    two = base_url(_request("http", ("127.0.0.1", 8000), b"b.example.org"))
    assert (one, two) == ("http://a.example.org/fhir", "http://b.example.org/fhir")
    mounted = _request("http", ("127.0.0.1", 8000), b"a.example.org", "/api", app_root_path="/top")
    assert base_url(mounted) == "http://a.example.org/top/fhir"


def test_http_date_is_the_uncached_text_for_every_instant() -> None:
    """Cached per second, yet equal to format_datetime for instants on and around second edges."""
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from rhip.api.http import http_date

    base = 1_795_000_000
    instants = [
        base + s + f for s in range(-2, 3) for f in (0.0, 0.0000004, 0.0000005, 0.4, 0.9999994, 0.9999996)
    ]
    instants += [0.0, 1.5, 2_000_000_000.999, base + 0.123]
    for _ in range(2):
        for epoch in instants:
            assert http_date(epoch) == format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True), epoch
