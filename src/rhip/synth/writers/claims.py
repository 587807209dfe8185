"""Claims as the regional medical-insurance settlement system sends them: FHIR Claim NDJSON.

Claims of every facility (whatever its native system) arrive through the insurer, so they are one
file, ``claims/Claim.ndjson``; the patient is referenced by social-security card number and the
provider by facility code, as a settlement list (医保结算清单) does.
"""

from __future__ import annotations

from typing import Any

import orjson

from rhip.fhir import systems
from rhip.synth.model import Claim, Encounter, Life
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer
from rhip.synth.writers.fhir import ts

_CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"


def claim_resource(enc: Encounter, c: Claim) -> dict[str, Any]:
    """The FHIR Claim of one settlement of ``enc``."""
    inpatient = enc.kind in ("inpatient", "delivery")
    items: list[dict[str, Any]] = [
        {
            "sequence": i + 1,
            "productOrService": {"text": name},
            "net": {"value": amount, "currency": "CNY"},
        }
        for i, (name, amount) in enumerate(c.items)
    ]
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "id": c.id,
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": _CLAIM_TYPE,
                    "code": "institutional" if inpatient else "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {
            "identifier": {
                "system": systems.SOCIAL_SECURITY_CARD,
                "value": enc.patient.resident.social_security,
            }
        },
        "billablePeriod": {"start": ts(enc.start), "end": ts(enc.end)},
        "created": ts(enc.end),
        "provider": {
            "identifier": {
                "system": systems.ORGANIZATION_CODE,
                "value": enc.patient.facility.code,
            }
        },
        "priority": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                    "code": "normal",
                }
            ]
        },
        "insurance": [
            {
                "sequence": 1,
                "focal": True,
                "coverage": {"display": "城乡居民/职工基本医疗保险"},
            }
        ],
        "item": items,
        "total": {"value": c.total, "currency": "CNY"},
    }
    if c.diagnoses:
        claim["diagnosis"] = [
            {
                "sequence": i + 1,
                "diagnosisCodeableConcept": {
                    "coding": [{"system": systems.ICD10_CN, "code": code, "display": name}]
                },
            }
            for i, (code, name) in enumerate(c.diagnoses)
        ]
    enc_ref = {
        "identifier": {
            "system": systems.facility_card_system(enc.patient.facility.code, "encounter"),
            "value": enc.id,
        }
    }
    items[0]["encounter"] = [enc_ref]
    return claim


@register_writer("claims")
class ClaimWriter(Writer):
    """One FHIR Claim per settled encounter (plus injected duplicates)."""

    def render(self, lives: list[Life], chunk: int) -> Appends:
        buf = Buffer()
        for life in lives:
            for enc in life.encounters:
                for c in enc.claims:
                    buf.put("claims/Claim.ndjson", orjson.dumps(claim_resource(enc, c)) + b"\n")
        return buf.result()
