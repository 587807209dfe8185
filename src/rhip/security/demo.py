"""Demo accounts, one per role, bound to real records of the demo store (for ``make demo``)."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import sqlalchemy as sa

from rhip.security.users import Account, create_account


def _first(conn: sa.Connection, res_type: str, limit: int = 200) -> list[dict[str, Any]]:
    from rhip.store.schema import resource

    stmt = (
        sa.select(resource.c.body)
        .where(resource.c.res_type == res_type, resource.c.deleted.is_(False))
        .order_by(resource.c.res_id)
        .limit(limit)
    )
    return [orjson.loads(row.body) for row in conn.execute(stmt)]


def _ref(value: Any, prefix: str) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    if isinstance(ref, str) and ref.startswith(prefix + "/"):
        return ref.split("/")[1]
    return None


def discover(engine: sa.Engine) -> dict[str, str | None]:
    """A resident with an encounter, that encounter's practitioner and facility, and the area."""
    found: dict[str, str | None] = {"patient": None, "practitioner": None, "organization": None, "area": None}
    with engine.connect() as conn:
        for enc in _first(conn, "Encounter"):
            patient = _ref(enc.get("subject"), "Patient")
            org = _ref(enc.get("serviceProvider"), "Organization")
            pracs = [_ref(p.get("individual"), "Practitioner") for p in enc.get("participant") or []]
            if patient and org:
                found.update(
                    patient=patient, organization=org, practitioner=next((p for p in pracs if p), None)
                )
                break
        if found["patient"]:
            for pat in _first(conn, "Patient", 5000):
                if pat.get("id") == found["patient"]:
                    for addr in pat.get("address") or []:
                        found["area"] = addr.get("district") or addr.get("city")
                        break
    return found


def create_demo_accounts(
    engine: sa.Engine, password: str | None = None
) -> list[tuple[str, str, str, str, str]]:
    """Create (or replace) the demo accounts; returns (username, role, grant, secret, binding) rows."""
    ids = discover(engine)
    plan = [
        Account("demo-resident", "person", "resident", patient_id=ids["patient"]),
        Account(
            "demo-doctor",
            "person",
            "practitioner",
            practitioner_id=ids["practitioner"],
            organization_id=ids["organization"],
        ),
        Account("demo-facility-admin", "person", "facility_admin", organization_id=ids["organization"]),
        Account("demo-public-health", "person", "public_health", area=ids["area"]),
        Account("demo-insurance", "person", "insurance_auditor"),
        Account("demo-researcher", "person", "researcher"),
        Account("demo-admin", "person", "platform_admin"),
        Account("demo-connector", "system", "system", organization_id=ids["organization"]),
    ]
    rows = []
    for account in plan:
        if account.role == "resident" and not account.patient_id:
            continue  # no Patient in the store to bind the resident to: no resident account
        secret = password or secrets.token_urlsafe(9)
        create_account(engine, account, secret, replace=True)
        binding = account.patient_id or account.organization_id or account.area or "-"
        grant = "client_credentials" if account.kind == "system" else "password"
        rows.append((account.username, account.role, grant, secret, f"{binding}"))
    return rows
