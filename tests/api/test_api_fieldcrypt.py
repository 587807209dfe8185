"""Citizen IDs and phones sent to the API are stored encrypted and come back in clear."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from rhip.fhir.systems import CITIZEN_ID
from rhip.store import Store
from rhip.store.fieldcrypt import PLAIN

CIDS = ["110105198005170121", "11010519850517016X", "110105199005170193"]
PHONES = ["13800138000", "13800138001", "13800138002"]


def _patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CITIZEN_ID, "value": CIDS[i]}],
        "telecom": [{"system": "phone", "value": PHONES[i]}],
    }


def _raw(db_url: str) -> str:
    """Every row of every table, read without keys."""
    parts: list[str] = []
    with Store(db_url, fields=PLAIN, migrate=False) as store, store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in inspector.get_table_names():
            columns = [sa.column(c["name"]) for c in inspector.get_columns(table)]
            for row in conn.execute(sa.select(*columns).select_from(sa.table(table))):
                parts.extend(bytes(v).decode() if isinstance(v, bytes | memoryview) else str(v) for v in row)
    return "\n".join(parts)


def test_api_writes_are_encrypted_at_rest_and_read_in_clear(client: Any, db_url: str) -> None:
    created = client.post("/fhir/Patient", json=_patient(0))
    assert created.status_code == 201 and created.json()["identifier"][0]["value"] == CIDS[0]
    assert client.put("/fhir/Patient/p1", json={**_patient(1), "id": "p1"}).status_code == 201
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _patient(2), "request": {"method": "POST", "url": "Patient"}}],
    }
    assert client.post("/fhir", json=bundle).status_code == 200
    found = client.get("/fhir/Patient", params={"identifier": f"{CITIZEN_ID}|{CIDS[1]}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p1"]
    assert found["entry"][0]["resource"]["telecom"][0]["value"] == PHONES[1]
    by_phone = client.get("/fhir/Patient", params={"phone": PHONES[2]}).json()
    assert by_phone["entry"][0]["resource"]["identifier"][0]["value"] == CIDS[2]
    text = _raw(db_url)
    assert "sm4:v" in text
    assert not [v for v in [*CIDS, *PHONES] if v in text]
