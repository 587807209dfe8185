"""Helpers of the MPI tests: source Patients as a facility would send them."""

from __future__ import annotations

from typing import Any

from rhip.fhir import systems


def patient(
    record_id: str,
    name: tuple[str, str],
    born: str,
    sex: str,
    *,
    cid: str | None = None,
    phone: str | None = None,
    address: str | None = None,
    cards: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A source Patient as a facility would send it."""
    identifiers = [{"system": s, "value": v} for s, v in cards or []]
    if cid:
        identifiers.insert(0, {"system": systems.CITIZEN_ID, "value": cid})
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": record_id,
        "identifier": identifiers,
        "name": [{"use": "official", "family": name[0], "given": [name[1]]}],
        "gender": sex,
        "birthDate": born,
    }
    if phone:
        body["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        body["address"] = [{"use": "home", "text": address, "district": "历下区"}]
    return body
