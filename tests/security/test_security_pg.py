"""The policy on PostgreSQL: the same relationship, consent and count rules as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from security_seed import ACCOUNTS, EXPECTED, seed_resources

from rhip.config import Settings

pytestmark = pytest.mark.postgres
_TYPE_OF = {r["id"]: r["resourceType"] for r in seed_resources()}


def test_search_matrix_on_postgresql(fresh_pg_url: str, tmp_path: Path) -> None:
    from rhip.api import create_app
    from rhip.security.audit import verify_chain
    from rhip.security.testing import issue_token
    from rhip.store import Store

    store = Store(fresh_pg_url)
    for body in seed_resources():
        store.update(body["resourceType"], body["id"], body)
    app = create_app(store, Settings(data_dir=tmp_path, database_url=fresh_pg_url))
    with TestClient(app) as client:
        for who in ("resident1", "docA", "docB", "ph"):
            role, binding = ACCOUNTS[who]
            headers = {"Authorization": f"Bearer {issue_token(app, role=role, username=who, **binding)}"}
            for rtype in ("Patient", "Encounter", "Observation", "Condition"):
                expected = {rid for rid in EXPECTED[who] if _TYPE_OF[rid] == rtype}
                response = client.get(f"/fhir/{rtype}", params={"_count": "100"}, headers=headers)
                if response.status_code == 403:
                    assert not expected
                    continue
                assert {e["resource"]["id"] for e in response.json().get("entry", [])} == expected, (
                    who,
                    rtype,
                )
                assert response.json()["total"] == len(expected)
    assert verify_chain(store.engine).ok
    store.close()
