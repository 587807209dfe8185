"""A real uvicorn server with authentication on, over a seeded store, plus tokens for every role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from security_seed import ACCOUNTS, seed_resources

from rhip.config import Settings
from rhip_testkit import running_server


@dataclass
class SecuredServer:
    """A running server: its FHIR base, the app (for tokens) and a token per matrix account."""

    base: str
    app: Any
    tokens: dict[str, str]

    def get(self, who: str | None, path: str, **kw: Any) -> httpx.Response:
        """GET ``path`` (relative to the FHIR base) as ``who`` (None = no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        headers.update(kw.pop("headers", {}))
        return httpx.get(f"{self.base}/{path}", headers=headers, timeout=30, **kw)

    def post(self, who: str | None, path: str, body: Any, **kw: Any) -> httpx.Response:
        """POST JSON to ``path`` as ``who``."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        headers["content-type"] = "application/fhir+json"
        return httpx.post(f"{self.base}/{path}", headers=headers, json=body, timeout=30, **kw)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServer]:
    """uvicorn on a free port serving a seeded SQLite store with authentication on."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    with ExitStack() as stack:
        data_dir = tmp_path_factory.mktemp("secured")
        url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        store = Store(url)
        stack.callback(store.close)
        for body in seed_resources():
            store.update(body["resourceType"], body["id"], body)
        app = create_app(
            store, Settings(data_dir=data_dir, database_url=url, page_size=50, auth_enabled=True)
        )
        tokens = {
            name: issue_token(app, role=role, username=name, **binding)
            for name, (role, binding) in ACCOUNTS.items()
        }
        base = stack.enter_context(running_server(app)) + "/fhir"
        yield SecuredServer(base, app, tokens)
