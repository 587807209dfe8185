"""One function records every MPI identity change as a FHIR AuditEvent in the store.

Link, unlink, merge, unmerge, accept and reject all go through :func:`record_audit`, so when the
security module's SM3 audit chain arrives it needs to hook a single place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rhip.mpi.golden import StoreLike

AUDIT_EVENT_TYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110110",
    "display": "Patient Record",
}
AUDIT_SUBTYPE_SYSTEM = "http://hl7.org/fhir/restful-interaction"


def audit_event(action: str, actor: str, entities: dict[str, str], change_id: int | None) -> dict[str, Any]:
    """AuditEvent body for one MPI change (``entities``: role label -> reference)."""
    what = [
        {"what": {"reference": ref}, "role": {"code": "1", "display": role}, "description": role}
        for role, ref in sorted(entities.items())
    ]
    body: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": AUDIT_EVENT_TYPE,
        "subtype": [{"system": AUDIT_SUBTYPE_SYSTEM, "code": "update", "display": f"mpi-{action}"}],
        "action": "U",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "agent": [{"who": {"display": actor}, "requestor": True}],
        "source": {"observer": {"display": "rhip-mpi"}},
        "entity": what,
    }
    if change_id is not None:
        body["entity"].append(
            {"what": {"identifier": {"value": f"mpi-change-{change_id}"}}, "description": "change"}
        )
    return body


def record_audit(
    store: StoreLike, action: str, actor: str, entities: dict[str, str], change_id: int | None = None
) -> str:
    """Write the AuditEvent of one MPI change and return its id."""
    result = store.create(audit_event(action, actor, entities, change_id))
    return str(result.resource["id"])
