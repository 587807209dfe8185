"""Fixtures of the API tests: an app over a fresh store per test, and one real uvicorn server.

The apps here carry the FHIR routes only (``router_modules=()``): routers other modules contribute
are tested by those modules; ``test_api_hooks`` proves the inclusion mechanism and
``test_api_serve_cli`` runs the full application as ``rhip serve`` builds it.

``client`` runs the app in-process (Starlette's TestClient) over the ``db_url`` store, so one test
body proves SQLite and PostgreSQL. ``live_server`` is a real uvicorn listening on a free
127.0.0.1 port for the tests that must cross a socket (gzip, the fhirclient library).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rhip.config import Settings
from rhip_testkit import new_pg_database, running_server

DATA = Path(__file__).resolve().parent.parent / "data"
FHIR_JSON = "application/fhir+json"


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[Any]:
    """A TestClient for an app over an empty store (SQLite or PostgreSQL)."""
    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.store import Store

    store = Store(db_url)
    settings = Settings(
        data_dir=tmp_path, database_url=db_url, page_size=20, max_page_size=200, auth_enabled=False
    )
    app = create_app(store, settings, router_modules=())
    with TestClient(app, base_url="http://testserver") as test_client:
        test_client.headers["content-type"] = FHIR_JSON
        yield test_client
    store.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def module_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app and store shared by a whole test module (for read-mostly tests over many inputs).

    Its own SQLite file or its own PostgreSQL database, created here and dropped after the module.
    """
    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.store import Store

    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'rhip.sqlite'}"
        else:
            url = stack.enter_context(new_pg_database("rhip_api"))
        store = Store(url)
        stack.callback(store.close)
        settings = Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=url, auth_enabled=False)
        app = create_app(store, settings, router_modules=())
        test_client = stack.enter_context(TestClient(app, base_url="http://testserver"))
        test_client.headers["content-type"] = FHIR_JSON
        yield test_client


@pytest.fixture(scope="session")
def schema_errors() -> Any:
    """A function listing HL7 R4 JSON Schema errors of a resource (tests/data/fhir-r4-schema).

    Each resource is checked against its own type's definition (clearer errors than the schema's
    top-level ``oneOf``). The schema file is the 4.0.0 build, whose ``fhirVersion`` enum stops at
    4.0.0; "4.0.1" (the R4 technical correction this server implements) is the one value accepted
    beyond it.
    """
    from jsonschema import Draft6Validator

    with gzip.open(DATA / "fhir-r4-schema" / "fhir.schema.json.gz", "rt", encoding="utf-8") as fh:
        schema = json.load(fh)
    schema.pop("oneOf", None)
    schema.pop("discriminator", None)
    validators: dict[str, Any] = {}

    def errors(resource: dict[str, Any]) -> list[str]:
        res_type = resource.get("resourceType", "")
        if res_type not in schema["definitions"]:
            return [f"resourceType {res_type!r} is not an R4 resource"]
        if res_type not in validators:
            validators[res_type] = Draft6Validator({**schema, "$ref": f"#/definitions/{res_type}"})
        found = []
        for err in validators[res_type].iter_errors(resource):
            path = "/".join(map(str, err.absolute_path))
            if path == "fhirVersion" and err.instance == "4.0.1":
                continue
            found.append(f"{path}: {err.message[:160]}")
        return found

    return errors


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:port/fhir``) of a real uvicorn serving a fresh store.

    One server per back end: a new SQLite file, or a new PostgreSQL database dropped afterwards.
    """
    from rhip.api import create_app
    from rhip.store import Store

    with ExitStack() as stack:
        data_dir = tmp_path_factory.mktemp("live")
        if request.param == "sqlite":
            url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        else:
            url = stack.enter_context(new_pg_database("rhip_api"))
        store = Store(url)
        stack.callback(store.close)
        settings = Settings(data_dir=data_dir, database_url=url, page_size=10, auth_enabled=False)
        app = create_app(store, settings, router_modules=())
        base = stack.enter_context(running_server(app)) + "/fhir"
        yield base
