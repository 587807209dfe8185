"""Schemathesis fuzz of a running server's OpenAPI description, run as a child process.

``test_security_fuzz_schemathesis.py`` starts the server and runs this file with the same
interpreter, so hypothesis' and schemathesis' interpreter-wide state (recursion limits, hooks)
never reaches the pytest worker that goes on to run other tests. The result is one JSON object on
stdout: the operations fuzzed and the failures found (operation label, message, curl line).

Usage: ``python schemathesis_fuzz.py ROOT_URL {anonymous|admin} EXAMPLES``; the bearer token for
``admin`` comes from the ``RHIP_FUZZ_TOKEN`` environment variable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from rhip.security.middleware import PUBLIC_PATHS

#: Seeded references whose appearance in an anonymous answer would be a leak.
SEEDED_REFS = ("Patient/pat1", "Patient/pat2", "Patient/pat3", "Condition/", "Observation/")
#: 501 Not Implemented is how the API answers FHIR operations it does not offer.
NOT_IMPLEMENTED = 501
INT64_MAX = 2**63 - 1
HUGE = INT64_MAX * 10**12
#: Integer parameters that once reached SQLite unbounded (500 OverflowError); they are now
#: bounded to int64 and ``test_oversized_integers_are_client_errors`` keeps them so.
UNBOUNDED_INTEGERS = (
    ("POST", "/mpi/review/{review_id}/$accept", "review_id", HUGE),
    ("POST", "/mpi/review/{review_id}/$reject", "review_id", HUGE),
    ("POST", "/mpi/change/{change_id}/$unmerge", "change_id", HUGE),
    ("POST", "/mpi/change/{change_id}/$revert", "change_id", HUGE),
    ("GET", "/mpi/review", "_offset", HUGE),
    ("GET", "/ingest/quarantine/{entry_id}", "entry_id", HUGE),
    ("GET", "/ingest/quarantine", "offset", HUGE),
    ("GET", "/ingest/quarantine", "limit", -HUGE),
    ("GET", "/ingest/batches", "limit", -HUGE),
)
#: SMART discovery must be ``application/json`` (SMART App Launch 2.x), while the OpenAPI
#: description inherits the API's default ``application/fhir+json`` for these routes.
SMART_DISCOVERY = ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration")


def is_public(path: str) -> bool:
    """Whether the security middleware lets this path through without a token."""
    return path in PUBLIC_PATHS or path.startswith("/docs")


def anonymous_probe(root: str) -> Callable[[Any], None]:
    """No token: never 5xx; off the public paths only 401/404/405 and no seeded reference."""

    def probe(case: Any) -> None:
        response = case.call(base_url=root, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        path = response.request.path_url.split("?", 1)[0]
        if is_public(path):
            return
        assert response.status_code in (401, 404, 405), (path, response.status_code)
        for ref in SEEDED_REFS:
            assert ref not in response.text, (path, ref)

    return probe


def admin_probe(root: str, token: str) -> Callable[[Any], None]:
    """A platform_admin token: never 5xx, media types and bodies as the description says."""
    headers = {"Authorization": f"Bearer {token}"}

    def probe(case: Any) -> None:
        response = case.call(base_url=root, headers=headers, timeout=30)
        if response.status_code == NOT_IMPLEMENTED:
            return
        checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
        if case.operation.path in SMART_DISCOVERY:
            checks.remove(content_type_conformance)
            assert response.headers["content-type"][0] == "application/json"
        case.validate_response(response, checks=checks, headers=headers)
        if response.content.lstrip()[:1] in (b"{", b"["):
            content_type = response.headers.get("content-type", [""])[0]
            assert "json" in content_type, (case.formatted_path, content_type)

    return probe


def fuzz_operation(operation: Any, probe: Callable[[Any], None], examples: int) -> str | None:
    """Run ``probe`` on derandomized generated cases of one operation; the failure, or None."""

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        try:
            probe(case)
        except AssertionError as exc:
            curl = case.as_curl_command()
            raise AssertionError(f"{exc}; reproduce (admin run: plus its token): {curl}") from exc

    try:
        run()
    except (AssertionError, Failure, FailureGroup) as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        return f"{operation.label}: {exc}\n{notes}"
    return None


def main(argv: list[str]) -> int:
    """Fuzz every operation (the protected ones only, without a token) and print the result."""
    root, mode, examples = argv[0], argv[1], int(argv[2])
    schema = schemathesis.openapi.from_url(f"{root}/openapi.json", timeout=30)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    invalid = [f"invalid operation in the description: {r.err()}" for r in results if not isinstance(r, Ok)]
    if mode == "anonymous":
        probe = anonymous_probe(root)
        operations = [op for op in operations if not is_public(op.path)]
    else:
        probe = admin_probe(root, os.environ["RHIP_FUZZ_TOKEN"])
    failures = invalid + [text for op in operations if (text := fuzz_operation(op, probe, examples))]
    json.dump({"operations": [op.label for op in operations], "failures": failures}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
