"""Data levels (GB/T 39725-2020, 健康医疗数据安全指南) and sensitive categories of resources.

Each resource type carries a level from 1 (public) to 5 (highly sensitive); a resource that falls
in a sensitive category (mental health, HIV/STD, reproductive health) is level 5 whatever its type.
Roles carry the highest level they may read (see :mod:`rhip.security.policy`).
"""

from __future__ import annotations

from typing import Any

V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: Level 1: published terminology and conformance resources.
LEVEL_1 = frozenset(
    {
        "CapabilityStatement",
        "CodeSystem",
        "ValueSet",
        "ConceptMap",
        "StructureDefinition",
        "SearchParameter",
        "NamingSystem",
        "OperationDefinition",
        "Questionnaire",
        "ImplementationGuide",
    }
)
#: Level 2: directory data about facilities and staff (not about residents).
LEVEL_2 = frozenset(
    {
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "HealthcareService",
        "Endpoint",
        "Device",
        "Medication",
        "Substance",
        "Library",
        "Measure",
        "PlanDefinition",
        "ActivityDefinition",
    }
)
#: Level 3: identifying and administrative data about residents.
LEVEL_3 = frozenset(
    {
        "Patient",
        "RelatedPerson",
        "Person",
        "Encounter",
        "EpisodeOfCare",
        "Coverage",
        "Claim",
        "ClaimResponse",
        "ExplanationOfBenefit",
        "Appointment",
        "Immunization",
        "Consent",
        "AuditEvent",
        "Provenance",
        "ServiceRequest",
        "CareTeam",
        "Account",
        "Invoice",
        "ChargeItem",
    }
)

#: Sensitive categories: their v3-ActCode security label, and ICD-10 code prefixes that imply them.
CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mental": ("PSY", ("F",)),
    "hiv": ("HIV", ("B20", "B21", "B22", "B23", "B24", "Z21")),
    "std": ("STD", tuple(f"A{n}" for n in range(50, 65))),
    "reproductive": ("SEX", ("O", "Z30", "Z31", "Z32", "Z33", "Z34", "Z35", "Z36", "Z37", "Z39")),
}
LABEL_TO_CATEGORY = {label: name for name, (label, _) in CATEGORIES.items()}
_CODED_FIELDS = ("code", "valueCodeableConcept", "reasonCode", "category")


def type_level(res_type: str | None) -> int:
    """The base level of a resource type (clinical types not listed are level 4)."""
    if res_type in LEVEL_1:
        return 1
    if res_type in LEVEL_2:
        return 2
    if res_type in LEVEL_3:
        return 3
    return 4


def _codes(resource: dict[str, Any]) -> list[str]:
    found = []
    for name in _CODED_FIELDS:
        value = resource.get(name)
        for concept in value if isinstance(value, list) else [value]:
            if isinstance(concept, dict):
                for coding in concept.get("coding") or []:
                    if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                        system = str(coding.get("system", "")).lower()
                        if "icd" in system:
                            found.append(coding["code"].upper())
    return found


def sensitive_categories(resource: dict[str, Any]) -> set[str]:
    """The sensitive categories a resource falls into (from meta.security labels and ICD-10 codes)."""
    found: set[str] = set()
    for label in (resource.get("meta") or {}).get("security") or []:
        if isinstance(label, dict) and label.get("code") in LABEL_TO_CATEGORY:
            found.add(LABEL_TO_CATEGORY[label["code"]])
    for code in _codes(resource):
        for name, (_, prefixes) in CATEGORIES.items():
            if code.startswith(prefixes):
                found.add(name)
    return found


def data_level(resource: dict[str, Any]) -> int:
    """The level of one resource: 5 when sensitive, else its type's level."""
    if sensitive_categories(resource):
        return 5
    return type_level(resource.get("resourceType"))
