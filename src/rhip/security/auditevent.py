"""Audit-chain entries rendered as FHIR AuditEvent resources (searchset Bundle)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_ACTION = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D"}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def to_audit_event(seq: int, entry: dict[str, Any]) -> dict[str, Any]:
    """One chain entry as an AuditEvent (id ``chain-<seq>``)."""
    action = str(entry.get("action", ""))
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"chain-{seq}",
        "type": {"system": _DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": action}],
        "action": _ACTION.get(action, "E"),
        "recorded": _instant(float(entry.get("recorded", 0))),
        "outcome": str(entry.get("outcome", "0")),
        "purposeOfEvent": [{"coding": [{"system": _PURPOSE, "code": entry.get("purpose", "TREAT")}]}],
        "agent": [
            {
                "who": {"identifier": {"value": entry.get("actor", "anonymous")}},
                "role": [{"text": entry.get("role", "")}],
                "requestor": True,
                "network": {"address": entry.get("source") or "", "type": "2"},
            }
        ],
        "source": {"observer": {"display": "rhip"}},
        "entity": [{"what": {"reference": e}} for e in entry.get("entities", [])[:50]]
        + [{"what": {"reference": f"Patient/{p}"}, "role": {"code": "1"}} for p in entry.get("patients", [])],
    }
    if entry.get("break_glass"):
        event["meta"] = {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "BTG"}]
        }
    return event


def audit_event_bundle(base: str, rows: list[tuple[int, dict[str, Any]]], total: int) -> dict[str, Any]:
    """A searchset Bundle of AuditEvents."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "entry": [
            {
                "fullUrl": f"{base}/AuditEvent/chain-{seq}",
                "resource": to_audit_event(seq, entry),
                "search": {"mode": "match"},
            }
            for seq, entry in rows
        ],
    }
