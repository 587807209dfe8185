"""Schemathesis fuzz of every operation in the server's own OpenAPI description.

The server runs for real (uvicorn, seeded SQLite store, authentication on). Schemathesis reads
``/openapi.json`` over HTTP and generates requests for each operation (``schemathesis_fuzz.py``,
run as a child process so hypothesis' interpreter-wide state stays out of this worker):

* without a token every non-public operation answers 401 (404/405 for paths the router does not
  know), never a 5xx, and the answer never carries a seeded resource;
* with a ``platform_admin`` token no operation answers 5xx (``not_a_server_error``; 501 is the
  API's answer for an unimplemented FHIR operation) and answers match the description's media
  types and body schemas (``content_type_conformance``, ``response_schema_conformance``).

Generation is derandomized and bounded (``EXAMPLES`` per operation) so runs are repeatable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from schemathesis_fuzz import UNBOUNDED_INTEGERS

if TYPE_CHECKING:
    from conftest import SecuredServer


pytestmark = [pytest.mark.xdist_group("security_fuzz_schemathesis"), pytest.mark.slow]

#: Examples generated per operation and per token (the description has 60-odd operations).
EXAMPLES = 25
RUNNER = Path(__file__).with_name("schemathesis_fuzz.py")
#: Routes whose modules create their tables on first use. That DDL runs in a deferred SQLite
#: transaction and can fail with "database is locked" when another write (the audit trail)
#: commits in between; it is warmed up here, sequentially, so the fuzz measures the routes.
WARM_UP = (
    ("GET", "/mpi/review"),
    ("POST", "/ingest/device/warmup"),
    ("GET", "/ingest/batches"),
    ("GET", "/ingest/quarantine"),
    ("GET", "/surveillance/alerts"),
    ("GET", "/quality/scores"),
    ("GET", "/fhir/ViewDefinition"),
)


def _root(secured: SecuredServer) -> str:
    return secured.base.removesuffix("/fhir")


@pytest.fixture(scope="module")
def warmed(secured: SecuredServer) -> SecuredServer:
    """The server once every lazily created table exists."""
    headers = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    for method, path in WARM_UP:
        for _ in range(10):
            response = httpx.request(method, _root(secured) + path, headers=headers, timeout=30)
            if response.status_code < 500:
                break
            time.sleep(0.2)
        assert response.status_code < 500, (method, path, response.status_code)
    return secured


def _fuzz(secured: SecuredServer, mode: str) -> dict[str, Any]:
    env = {**os.environ, "RHIP_FUZZ_TOKEN": secured.tokens["admin"]}
    done = subprocess.run(
        [sys.executable, str(RUNNER), _root(secured), mode, str(EXAMPLES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_without_token_every_operation_refuses(warmed: SecuredServer) -> None:
    result = _fuzz(warmed, "anonymous")
    assert "GET /fhir/{res_type}/{res_id}" in result["operations"]
    assert "GET /fhir/metadata" not in result["operations"]
    assert len(result["operations"]) > 40
    assert not result["failures"], "\n\n".join(result["failures"])


def test_platform_admin_never_gets_a_server_error(warmed: SecuredServer) -> None:
    result = _fuzz(warmed, "admin")
    assert {"POST /auth/token", "GET /fhir/metadata"} <= set(result["operations"])
    assert not result["failures"], "\n\n".join(result["failures"])


@pytest.mark.parametrize(("method", "template", "name", "value"), UNBOUNDED_INTEGERS)
def test_oversized_integers_are_client_errors(
    secured: SecuredServer, method: str, template: str, name: str, value: int
) -> None:
    path = template.replace("{" + name + "}", str(value))
    params = {} if path != template else {name: str(value)}
    response = httpx.request(
        method,
        _root(secured) + path,
        params=params,
        headers={"Authorization": f"Bearer {secured.tokens['admin']}"},
        timeout=30,
    )
    assert response.status_code < 500, (method, path, response.status_code)
