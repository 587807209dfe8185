"""Helpers every test folder shares: a fresh PostgreSQL database, a real uvicorn server, chart pages.

Importable from any test module (``from rhip_testkit import ...``) because the root conftest puts
``tests/`` on ``sys.path``; it is not a conftest, so the name is unambiguous across folders.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("RHIP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_available() -> bool:
    """Whether the PostgreSQL server of the test suite answers."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextmanager
def new_pg_database(prefix: str = "rhip_t") -> Iterator[str]:
    """A brand-new PostgreSQL database as a SQLAlchemy psycopg URL, dropped on exit.

    Skips when the server is unreachable, except on CI where PostgreSQL is required.
    """
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 but CI requires it")
        pytest.skip("PostgreSQL not reachable")
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    app: Any, *, lifespan: str = "on", timeout: float = 60, http: Any = "auto"
) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free 127.0.0.1 port; yields ``http://127.0.0.1:port``.

    ``http`` is uvicorn's protocol: its name or a class (``rhip serve`` gives
    :data:`rhip.api.protocol.FhirHttpProtocol`).
    """
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chart_figures(page: str) -> list[dict[str, Any]]:
    """The plotly figures of a chart page (``rhip.charts``), each checked against plotly's schema."""
    import json
    import re

    import plotly.graph_objects as go

    blocks = re.findall(
        r'<script type="application/json" class="rhip-figure"[^>]*>(.*?)</script>', page, re.S
    )
    figures = [json.loads(b) for b in blocks]
    for figure in figures:
        go.Figure(figure)  # raises on a property plotly does not know
    return figures
