"""Case definitions managed as data: built-in notifiable diseases plus a region's own ones.

Definitions stored in ``surveillance_case_definition`` (over the API or CLI) add to or replace
the built-in list by code; a stored definition with ``"active": false`` switches a disease off.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from rhip.errors import ResourceNotFound
from rhip.surveillance.alerts import METADATA
from rhip.surveillance.counting import CaseDefinition, default_definitions

__all__ = ["active_definitions", "delete_definition", "list_definitions", "put_definition"]

definition_table = sa.Table(
    "surveillance_case_definition",
    METADATA,
    sa.Column("code", sa.String(128), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)


def list_definitions(conn: sa.Connection) -> list[dict[str, Any]]:
    """All definitions in force (built-in merged with stored), each with ``source`` and ``active``."""
    out = {d.code: {**d.to_json(), "source": "built-in", "active": True} for d in default_definitions()}
    for row in conn.execute(sa.select(definition_table)).mappings():
        body = orjson.loads(row["body"])
        out[row["code"]] = {**body, "source": "region", "active": bool(body.get("active", True))}
    return sorted(out.values(), key=lambda d: str(d["code"]))


def active_definitions(conn: sa.Connection) -> list[CaseDefinition]:
    """The definitions counting uses."""
    return [CaseDefinition.from_json(d) for d in list_definitions(conn) if d["active"]]


def put_definition(conn: sa.Connection, body: dict[str, Any]) -> dict[str, Any]:
    """Create or replace a region definition (validated; InvalidRequest names the bad field)."""
    d = CaseDefinition.from_json(body)
    stored = {**d.to_json(), "active": bool(body.get("active", True))}
    conn.execute(definition_table.delete().where(definition_table.c.code == d.code))
    conn.execute(definition_table.insert().values(code=d.code, body=orjson.dumps(stored)))
    return {**stored, "source": "region"}


def delete_definition(conn: sa.Connection, code: str) -> None:
    """Remove a region definition (a built-in one comes back); ResourceNotFound if none stored."""
    res = conn.execute(definition_table.delete().where(definition_table.c.code == code))
    if res.rowcount == 0:
        raise ResourceNotFound(f"no region case definition {code!r}")
