"""Path gates on included routers (rhip.api.dispatch): the same route answers every request.

The full application (every contributed router) is built twice over two stores holding the same
resource, once as ``create_app`` builds it (gated) and once with the gates removed; every request
of a list covering each router, the literal-versus-pattern clashes, 404 and 405 gets the same
status on both, and the same body unless it is a success that carries timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from rhip.api import create_app
from rhip.api.dispatch import PathGate, gate_for, gate_included_routers, route_path
from rhip.config import Settings
from rhip.store import Store

FHIR_JSON = "application/fhir+json"

REQUESTS: list[tuple[str, str]] = [
    ("GET", "/fhir/metadata"),
    ("GET", "/fhir/metadata%0A"),
    ("GET", "/fhir"),
    ("GET", "/fhir/"),
    ("POST", "/fhir"),
    ("GET", "/fhir/_history"),
    ("POST", "/fhir/_search"),
    ("GET", "/fhir/Patient"),
    ("POST", "/fhir/Patient"),
    ("PUT", "/fhir/Patient"),
    ("DELETE", "/fhir/Patient"),
    ("GET", "/fhir/Patient/p1"),
    ("GET", "/fhir/Patient/p1/_history"),
    ("GET", "/fhir/Patient/p1/_history/1"),
    ("GET", "/fhir/Patient/p1/$everything"),
    ("GET", "/fhir/Patient/_history"),
    ("POST", "/fhir/Patient/_search"),
    ("GET", "/fhir/Patient/$export"),
    ("POST", "/fhir/Patient/$export"),
    ("GET", "/fhir/$export"),
    ("DELETE", "/fhir/$export-status/nope"),
    ("GET", "/fhir/Group/g1/$export"),
    ("GET", "/fhir/ViewDefinition"),
    ("GET", "/fhir/ViewDefinition/v1"),
    ("PATCH", "/fhir/ViewDefinition/v1"),
    ("GET", "/fhir/AuditEvent"),
    ("GET", "/fhir/.well-known/smart-configuration"),
    ("GET", "/.well-known/smart-configuration"),
    ("GET", "/auth/token"),
    ("GET", "/mpi/resident"),
    ("GET", "/mpi"),
    ("POST", "/mpi/resident"),
    ("GET", "/quality/rules"),
    ("GET", "/surveillance/methods"),
    ("POST", "/surveillance/methods"),
    ("GET", "/ingest/batches"),
    ("GET", "/ingest/quarantine/q1"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/path"),
    ("PATCH", "/fhir/Patient/p1"),
    ("DELETE", "/fhir/Nope/p1"),
]


def _app(tmp_path: Path, gated: bool) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store = Store(url)
    app = create_app(store, Settings(data_dir=tmp_path, database_url=url, auth_enabled=False))
    if not gated:
        for route in app.router.routes:
            vars(route).pop("matches", None)
    with TestClient(app, base_url="http://testserver") as client:
        client.headers["content-type"] = FHIR_JSON
        seeded = client.put("/fhir/Patient/p1", content=json.dumps({"resourceType": "Patient", "id": "p1"}))
        assert seeded.status_code == 201, seeded.text
        yield client
    store.close()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[TestClient]:
    """The application as create_app builds it."""
    yield from _app(tmp_path / "gated", gated=True)


@pytest.fixture
def ungated(tmp_path: Path) -> Iterator[TestClient]:
    """The same application with every gate removed (FastAPI's own dispatch)."""
    yield from _app(tmp_path / "ungated", gated=False)


def test_every_top_level_router_of_the_full_app_is_gated(tmp_path: Path) -> None:
    """A FastAPI change that defeats the gates shows up here, not as a silent slowdown."""
    app = create_app(Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}"), Settings(data_dir=tmp_path))
    included = [r for r in app.router.routes if hasattr(r, "original_router")]
    assert len(included) >= 8
    assert all("matches" in vars(r) for r in included)


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_gated_dispatch_answers_as_fastapi_does(
    gated: TestClient, ungated: TestClient, method: str, path: str
) -> None:
    """Same status, and the same body unless a success (timestamps and ids differ between stores)."""
    body = b"" if method in ("GET", "DELETE") else b"{}"
    ours = gated.request(method, path, content=body)
    theirs = ungated.request(method, path, content=body)
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    if ours.status_code >= 300 or path == "/openapi.json":
        assert ours.content == theirs.content


def test_gate_admits_exact_paths_prefixes_and_nothing_else() -> None:
    """A router of /mpi routes is skipped for FHIR paths and tried for its own."""
    router = APIRouter(prefix="/mpi")
    router.add_api_route("/resident", lambda: {}, methods=["GET"])
    router.add_api_route("/resident/{rid}", lambda rid: {}, methods=["GET"])
    app = FastAPI()
    app.include_router(router)
    gate = gate_for(app.router.routes[-1])
    assert gate == PathGate(frozenset({"/mpi/resident", "/mpi/resident\n"}), ("/mpi/resident/",))
    assert gate.may_match("/mpi/resident/7")
    assert not gate.may_match("/fhir/Patient")
    assert not gate.may_match("/mpi/residents")


def test_a_route_added_after_gating_is_still_found() -> None:
    """The gate stands aside once its router changes, so a late route is never shadowed."""
    router = APIRouter()
    router.add_api_route("/a", lambda: {"a": 1}, methods=["GET"])
    app = FastAPI()
    app.include_router(router)
    assert gate_included_routers(app) == 1
    router.add_api_route("/late/{x}", lambda x: {"late": x}, methods=["GET"])
    with TestClient(app) as client:
        assert client.get("/late/7").json() == {"late": "7"}
        assert client.get("/a").json() == {"a": 1}


def test_route_path_strips_the_root_path_as_starlette_does() -> None:
    """The gate sees the same path the routes match against."""
    assert route_path({"path": "/api/fhir/Patient", "root_path": "/api"}) == "/fhir/Patient"
    assert route_path({"path": "/apix/fhir", "root_path": "/api"}) == "/apix/fhir"
    assert route_path({"path": "/api", "root_path": "/api"}) == ""
    assert route_path({"path": "/fhir", "root_path": ""}) == "/fhir"


def test_gates_of_the_full_app_do_not_change_on_a_second_call(gated: TestClient) -> None:
    """Installing twice leaves the first gates alone (no gate wrapped in a gate)."""
    app: Any = gated.app
    assert gate_included_routers(app) == 0
