"""Small helpers shared by the API tests (imported by name; the tests folder is on sys.path)."""

from __future__ import annotations

import json
from typing import Any

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
