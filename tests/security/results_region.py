"""A seeded store served with authentication on, for the results-sharing tests over real HTTP.

``tests/security/test_security_results_sharing.py`` (lab results) and
``tests/security/test_security_imaging_results.py`` (imaging) seed different regions but serve
and query them the same way: each file's ``Region`` adds its own readers to :class:`ServedRegion`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhip.config import Settings
from rhip.security.audit import iter_entries
from rhip_testkit import new_pg_database, running_server

#: Both back ends, PostgreSQL marked so that a run without it can leave it out.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass
class ServedRegion:
    """A running server with authentication on over a seeded region."""

    base: str
    app: Any
    tokens: dict[str, str]
    golden: str
    windows_file: Path

    def get(self, who: str | None, path: str, **params: str) -> httpx.Response:
        """GET ``path`` under the FHIR base as ``who`` (None: no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.get(f"{self.base}/{path}", params=params, headers=headers, timeout=60)

    def audit(self) -> list[dict[str, Any]]:
        """Every audit entry so far."""
        self.app.state.security.writer.flush()
        return [entry for _, entry in iter_entries(self.app.state.store.engine)]


@contextmanager
def served(
    backend: str,
    data_dir: Path,
    seed: Callable[[Any], str],
    accounts: dict[str, tuple[str, dict[str, Any]]],
) -> Iterator[tuple[str, Any, dict[str, str], str, Path]]:
    """Seed a store (``seed`` returns the golden Patient id) and serve it with an empty windows
    file of its own; yields what :class:`ServedRegion` holds."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    with ExitStack() as stack:
        url = (
            f"sqlite:///{data_dir / 'rhip.sqlite'}"
            if backend == "sqlite"
            else stack.enter_context(new_pg_database("rhip_results"))
        )
        store = Store(url)
        stack.callback(store.close)
        golden = seed(store)
        windows = data_dir / "windows.csv"
        windows.write_text("code,days,group,group_zh\n", encoding="utf-8")
        settings = Settings(
            data_dir=data_dir, database_url=url, auth_enabled=True, recognition_windows_file=windows
        )
        app = create_app(store, settings)
        tokens = {
            name: issue_token(app, role=role, username=name, **kw) for name, (role, kw) in accounts.items()
        }
        base = stack.enter_context(running_server(app)) + "/fhir"
        yield base, app, tokens, golden, windows
