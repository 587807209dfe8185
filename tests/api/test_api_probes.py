"""``GET /health`` and ``GET /ready`` over real HTTP: public, not audited, 503 naming what fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from rhip.config import Settings
from rhip_testkit import free_port, running_server


@contextmanager
def serving(
    url: str, data_dir: Path, *, migrate: bool = True, auth: bool = False
) -> Iterator[tuple[str, Any]]:
    """A real uvicorn over the store at ``url``: the whole app with authentication, or the FHIR routes."""
    from rhip.api import create_app
    from rhip.store import Store

    with Store(url, migrate=migrate) as store:
        settings = Settings(data_dir=data_dir, database_url=url, auth_enabled=auth)
        app = create_app(store, settings) if auth else create_app(store, settings, router_modules=())
        with running_server(app) as base:
            yield base, app


def probe(base: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}{path}", timeout=30)


def audit_entries(app: Any) -> int:
    from rhip.security.audit import verify_chain

    app.state.security.writer.flush()
    return verify_chain(app.state.store.engine).checked


def test_probes_answer_without_a_token_and_leave_no_audit_entry(db_url: str, tmp_path: Path) -> None:
    with serving(db_url, tmp_path, auth=True) as (base, app):
        assert probe(base, "/fhir/Patient").status_code == 401  # the API itself still needs a token
        before = audit_entries(app)
        health = probe(base, "/health")
        assert (health.status_code, health.json()) == (200, {"status": "pass"})
        ready = probe(base, "/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert [(c["name"], c["status"]) for c in body["checks"]] == [
            ("database", "pass"),
            ("schema", "pass"),
            ("keys", "pass"),
            ("audit", "pass"),
        ]
        assert str(tmp_path) not in ready.text
        assert audit_entries(app) == before


def test_ready_names_a_schema_behind_the_code(db_url: str, tmp_path: Path) -> None:
    """A database left at an older migration is not ready: 503 naming the schema and the way out."""
    from rhip.store import Store
    from rhip.store.migrations import downgrade, head_revision

    with Store(db_url) as store:
        downgrade(store.engine, "0005")
    with serving(db_url, tmp_path, migrate=False) as (base, _):
        assert probe(base, "/health").status_code == 200
        ready = probe(base, "/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert (body["status"], body["failing"]) == ("not ready", ["schema"])
    schema = next(c for c in body["checks"] if c["name"] == "schema")
    assert schema["detail"] == f"at 0005, this version needs {head_revision()}: run rhip db upgrade"
    audit = next(c for c in body["checks"] if c["name"] == "audit")
    assert audit["status"] == "skip"


def test_ready_when_postgresql_cannot_be_reached(tmp_path: Path) -> None:
    """Nothing listens on the store's port: 503 naming the database, and no URL in the answer."""
    port = free_port()
    url = f"postgresql+psycopg://rhip:secret@127.0.0.1:{port}/rhip"
    with serving(url, tmp_path, migrate=False) as (base, _):
        assert probe(base, "/health").status_code == 200
        ready = probe(base, "/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["database", "schema"]
    assert str(port) not in ready.text and "secret" not in ready.text


def test_ready_when_a_key_file_is_damaged(tmp_path: Path) -> None:
    with serving(f"sqlite:///{tmp_path / 'rhip.sqlite'}", tmp_path, auth=True) as (base, _):
        assert probe(base, "/ready").status_code == 200
        (tmp_path / "keys" / "jwt" / "v1.key").write_text("not a key", "ascii")
        ready = probe(base, "/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["keys"]
    keys = next(c for c in ready.json()["checks"] if c["name"] == "keys")
    assert keys["detail"] == "jwt key v1 cannot be read"


def test_ready_when_the_audit_writer_thread_is_gone(tmp_path: Path) -> None:
    with serving(f"sqlite:///{tmp_path / 'rhip.sqlite'}", tmp_path, auth=True) as (base, app):
        writer = app.state.security.writer
        writer._queue.put(None)  # the writer's own stop signal: its thread ends as after a crash
        writer._thread.join(timeout=10)
        ready = probe(base, "/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["audit"]


def test_probes_are_in_the_openapi_description(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/ready"]["get"]["responses"]) == {"200", "503"}
    assert "/health" in paths
