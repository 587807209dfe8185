"""Schemathesis fuzz of every operation in the server's own OpenAPI description.

The server runs for real (uvicorn, seeded SQLite store, authentication on). The schema is read
from ``/openapi.json`` over HTTP and schemathesis generates requests for each operation:

* without a token every non-public operation answers 401 (404/405 for paths the router does not
  know) and the answer never carries a seeded resource;
* with a ``platform_admin`` token no operation answers 5xx (schemathesis ``not_a_server_error``,
  501 being the API's answer for an unimplemented FHIR operation), and every JSON answer declares
  a JSON content type.

Generation is derandomized and bounded (a few examples per operation) so runs are repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from conftest import SecuredServer
from rhip.security.middleware import PUBLIC_PATHS

pytestmark = [pytest.mark.xdist_group("security_fuzz_schemathesis"), pytest.mark.slow]

#: Examples generated per operation and per token; 60-odd operations in the schema.
EXAMPLES_PER_OPERATION = 25
#: Seeded ids whose appearance in an anonymous answer would be a leak.
SEEDED_REFS = ("Patient/pat1", "Patient/pat2", "Patient/pat3", "Condition/", "Observation/")
#: 501 Not Implemented is how the API answers FHIR operations it does not offer.
NOT_IMPLEMENTED = 501
_INT64_MAX = 2**63 - 1
_HUGE = _INT64_MAX * 10**12
#: Routes of other modules whose integer ids/offsets/limits are not bounded to the database's
#: signed 64-bit range: a larger integer reaches SQLite and the answer is a 500 (OverflowError).
#: ``test_oversized_integers_are_client_errors`` pins each (with a value that passes the route's
#: own bounds); the fuzz tolerates that one cause on these parameters.
UNBOUNDED_INTEGERS = (
    ("POST", "/mpi/review/{review_id}/$accept", "review_id", _HUGE),
    ("POST", "/mpi/review/{review_id}/$reject", "review_id", _HUGE),
    ("POST", "/mpi/change/{change_id}/$unmerge", "change_id", _HUGE),
    ("POST", "/mpi/change/{change_id}/$revert", "change_id", _HUGE),
    ("GET", "/mpi/review", "_offset", _HUGE),
    ("GET", "/ingest/quarantine/{entry_id}", "entry_id", _HUGE),
    ("GET", "/ingest/quarantine", "offset", _HUGE),
    ("GET", "/ingest/quarantine", "limit", -_HUGE),
    ("GET", "/ingest/batches", "limit", -_HUGE),
)
#: SMART discovery must be ``application/json`` (SMART App Launch 2.x), while the OpenAPI
#: description inherits the API's default ``application/fhir+json`` for these routes.
SMART_DISCOVERY = ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration")
_FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _root(secured: SecuredServer) -> str:
    return secured.base.removesuffix("/fhir")


@pytest.fixture(scope="module")
def api_schema(secured: SecuredServer) -> Any:
    """The OpenAPI description as the running server publishes it, loaded by schemathesis."""
    schema = schemathesis.openapi.from_url(f"{_root(secured)}/openapi.json", timeout=30)
    return schema


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, probe: Callable[[Any], None]) -> str | None:
    """Run ``probe`` on generated cases of one operation; the failure text, or None."""

    @_FUZZ
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        probe(case)

    try:
        run()
    except (AssertionError, Failure) as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        return f"{operation.label}: {exc}\n{notes}"
    return None


def _oversized_integer(case: Any) -> bool:
    """Whether the case sends, where a route is known not to bound it, an integer beyond int64."""
    route = (case.operation.method.upper(), case.operation.path)
    sent = {**(case.path_parameters or {}), **(case.query or {})}
    for method, template, name, _ in UNBOUNDED_INTEGERS:
        if (method, template) == route and name in sent:
            try:
                if abs(int(sent[name])) > _INT64_MAX:
                    return True
            except (TypeError, ValueError):
                continue
    return False


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/docs")


def test_schema_lists_the_operations(api_schema: Any) -> None:
    labels = {op.label for op in _operations(api_schema)}
    assert "GET /fhir/{res_type}/{res_id}" in labels
    assert "POST /auth/token" in labels
    assert len(labels) > 40


def test_without_token_every_operation_refuses(secured: SecuredServer, api_schema: Any) -> None:
    root = _root(secured)

    def probe(case: Any) -> None:
        response = case.call(base_url=root, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        path = response.request.path_url.split("?", 1)[0]
        if _is_public(path):
            return
        assert response.status_code in (401, 404, 405), (path, response.status_code)
        for ref in SEEDED_REFS:
            assert ref not in response.text, (path, ref)

    protected = [op for op in _operations(api_schema) if not _is_public(op.path)]
    failures = [text for op in protected if (text := _fuzz(op, probe)) is not None]
    assert not failures, "\n\n".join(failures)


def test_platform_admin_never_gets_a_server_error(secured: SecuredServer, api_schema: Any) -> None:
    root = _root(secured)
    headers = {"Authorization": f"Bearer {secured.tokens['admin']}"}

    def probe(case: Any) -> None:
        response = case.call(base_url=root, headers=headers, timeout=30)
        if response.status_code == NOT_IMPLEMENTED:
            return
        if response.status_code == 500 and _oversized_integer(case):
            return
        checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
        if case.operation.path in SMART_DISCOVERY:
            checks.remove(content_type_conformance)
            assert response.headers["content-type"][0] == "application/json"
        case.validate_response(response, checks=checks, headers=headers)
        body = response.content.lstrip()[:1]
        if body in (b"{", b"["):
            content_type = response.headers.get("content-type", [""])[0]
            assert "json" in content_type, (case.formatted_path, content_type)

    failures = [text for op in _operations(api_schema) if (text := _fuzz(op, probe)) is not None]
    assert not failures, "\n\n".join(failures)


@pytest.mark.xfail(
    reason="integer path/query parameters of rhip.mpi and rhip.ingest routes are not bounded "
    "(e.g. Path(ge=0, le=2**63 - 1)); an oversized value answers 500",
    strict=True,
)
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
