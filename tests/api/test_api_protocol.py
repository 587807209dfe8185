"""A request uvicorn cannot parse is answered with a FHIR OperationOutcome, over a raw socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_testkit import RAW_NON_ASCII, exchange

from rhip.config import Settings
from rhip_testkit import running_server


def http_protocols() -> list[object]:
    from rhip.api.protocol import FhirH11Protocol, FhirHttpProtocol

    return [FhirHttpProtocol, FhirH11Protocol]


@pytest.fixture(params=http_protocols(), ids=lambda cls: getattr(cls, "__name__", str(cls)))
def fhir_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn with one of the FHIR protocols, over an empty SQLite store."""
    from rhip.api import create_app
    from rhip.store import Store

    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    with Store(url) as store:
        settings = Settings(data_dir=tmp_path, database_url=url, auth_enabled=False)
        app = create_app(store, settings, router_modules=())
        with running_server(app, http=request.param) as base:
            yield base


def test_unencoded_url_gets_an_operation_outcome(fhir_server: str) -> None:
    """uvicorn answered a raw non-ASCII byte in the URL with plain text 'Invalid HTTP request received.'"""
    status, headers, body = exchange(fhir_server, RAW_NON_ASCII)
    assert status == 400
    assert headers["content-type"].startswith("application/fhir+json")
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    issue = json.loads(body)["issue"][0]
    assert json.loads(body)["resourceType"] == "OperationOutcome"
    assert (issue["severity"], issue["code"]) == ("error", "structure")
    assert "malformed HTTP request line" in issue["diagnostics"]
    assert "percent-encoded" in issue["diagnostics"]


def test_encoded_url_is_served_as_before(fhir_server: str) -> None:
    """Only the unparsable request changes: the same search percent-encoded is answered by the app."""
    request = b"GET /fhir/Patient?family=%E7%8E%8B HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, body = exchange(fhir_server, request)
    assert status == 200
    assert json.loads(body)["resourceType"] == "Bundle"
