"""The policy on PostgreSQL: the same relationship, consent and count rules as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from security_seed import ACCOUNTS, EXPECTED, consent, linked_resident_records, seed_resources

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


def test_linked_records_shared_on_postgresql(fresh_pg_url: str, tmp_path: Path) -> None:
    """The MPI-link extension of care relationships, and its opt-out, on PostgreSQL."""
    from rhip.api import create_app
    from rhip.mpi.schema import ensure_schema
    from rhip.mpi.service import match_and_link
    from rhip.security.testing import issue_token
    from rhip.store import Store

    store = Store(fresh_pg_url)
    ensure_schema(store.engine)
    residents = {}
    for body in linked_resident_records():
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            residents[body["id"]] = match_and_link(store, store.read("Patient", body["id"])).resident_id
    app = create_app(store, Settings(data_dir=tmp_path, database_url=fresh_pg_url))
    with TestClient(app) as client:
        doc = {"Authorization": f"Bearer {issue_token(app, role='practitioner', **ACCOUNTS['docA'][1])}"}
        admin = {"Authorization": f"Bearer {issue_token(app, role='platform_admin')}"}

        def seen() -> set[str]:
            found = client.get("/fhir/Observation", params={"patient": "lp2"}, headers=doc).json()
            return {e["resource"]["id"] for e in found.get("entry", [])}

        assert seen() == set()
        link = {"record": "Patient/lp2", "resident": f"Patient/{residents['lp1']}"}
        assert client.post("/mpi/link", json=link, headers=admin).status_code == 200
        assert seen() == {"obsL2"}
        assert client.get("/fhir/Condition/condL2", headers=doc).status_code == 404  # sensitive: held at B
        opt_out = client.post("/fhir/Consent", json=consent("consentL", "lp2", opt_out=True), headers=admin)
        assert opt_out.status_code == 201, opt_out.text
        assert seen() == set()
    store.close()
