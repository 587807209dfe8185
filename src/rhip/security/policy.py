"""The authorisation policy: roles, relationships, consent, data levels and break-the-glass.

One question is answered here: may this principal perform this interaction on this type, and may
it see this resource? Deny by default. The decision combines, in order: the role's interactions and
types, the token's SMART scopes, the role's highest data level (GB/T 39725), the relationship
between caller and resident (own records, care relationship, area), and the resident's Consent.
A live break-the-glass grant replaces the relationship and consent checks for one resident.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from rhip.errors import Forbidden
from rhip.security.levels import data_level, sensitive_categories, type_level
from rhip.security.relations import Relations
from rhip.security.scopes import INTERACTION_LETTER, parse_scopes, scopes_allow
from rhip.security.tokens import Principal

logger = logging.getLogger(__name__)

READ = frozenset({"read", "vread", "search-type", "history-instance", "history-type", "operation"})
WRITE = frozenset({"create", "update", "patch"})
ALL = READ | WRITE | {"delete", "search-system", "history-system", "batch", "transaction"}


@dataclass(frozen=True)
class Role:
    """What a role may do: interactions, types (None = all), highest data level, how it relates."""

    name: str
    interactions: frozenset[str]
    max_level: int
    relation: str  # all | self | care | area | directory | none
    default_scope: str
    types: frozenset[str] | None = None
    write_types: frozenset[str] | None = None
    consent_applies: bool = True


#: What public-health officers read: clinical records of their area, and the surveillance alerts
#: (``/surveillance``, resource type of :mod:`rhip.surveillance.api`) they are the users of.
_PH_TYPES = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "Encounter",
        "Immunization",
        "Procedure",
        "SurveillanceAlert",
    }
)
_INSURANCE_TYPES = frozenset(
    {"Patient", "Coverage", "Claim", "ClaimResponse", "ExplanationOfBenefit", "Encounter", "Account"}
)
_DIRECTORY = frozenset(
    {"Organization", "Location", "Practitioner", "PractitionerRole", "HealthcareService", "Endpoint"}
)

#: Interactions whose answers cannot be filtered per resource (counts, bundles of writes).
_FULL_ONLY = frozenset({"batch", "transaction", "search-system", "history-system", "history-type"})

#: Every role, by name.
ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "resident",
            READ | WRITE,
            5,
            "self",
            "patient/*.rs patient/Consent.cu",
            write_types=frozenset({"Consent"}),
        ),
        Role("practitioner", READ | WRITE, 5, "care", "user/*.cruds"),
        Role("facility_admin", READ | WRITE | {"delete"}, 2, "directory", "user/*.cruds", types=_DIRECTORY),
        Role(
            "public_health",
            READ | {"update"},
            5,
            "area",
            "user/*.rs user/SurveillanceAlert.u",
            types=_PH_TYPES,
            write_types=frozenset({"SurveillanceAlert"}),  # acknowledge and close alerts, nothing else
            consent_applies=False,
        ),
        Role("insurance_auditor", READ, 3, "all", "user/*.rs", types=_INSURANCE_TYPES, consent_applies=False),
        Role("researcher", frozenset({"read", "search-type"}), 1, "none", "user/*.rs"),
        Role("platform_admin", ALL, 5, "all", "system/*.cruds user/*.cruds", consent_applies=False),
        Role("system", ALL, 5, "all", "system/*.cruds", consent_applies=False),
    )
}

#: Infectious-disease ICD-10 chapters a public-health officer sees (notifiable diseases, 传染病).
NOTIFIABLE_PREFIXES = ("A", "B", "U07")


def role_of(principal: Principal) -> Role:
    """The role of a principal; Forbidden for an unknown role."""
    role = ROLES.get(principal.role)
    if role is None:
        raise Forbidden(f"role '{principal.role[:32]}' is not known to this server")
    return role


def check_interaction(principal: Principal, interaction: str, res_type: str | None) -> None:
    """Role, type, scope and type-level checks done before the store is touched; Forbidden to refuse."""
    if interaction == "capabilities":
        return
    refusal = interaction_refusal(principal.role, principal.scope, interaction, res_type)
    if refusal is not None:
        raise Forbidden(refusal)


@functools.lru_cache(maxsize=4096)
def interaction_refusal(role_name: str, scope: str, interaction: str, res_type: str | None) -> str | None:
    """Why a role holding these scopes may not perform an interaction on a type; None when it may.

    A pure function of its arguments (roles, data levels and scope grammar are fixed in code), so
    each decision is made once per role, scope string, interaction and type rather than once per
    request: the scope string is parsed again only for a new token's scopes. Bounded, so arbitrary
    type names sent by callers cannot grow it without limit.
    """
    role = ROLES.get(role_name)
    if role is None:
        return f"role '{role_name[:32]}' is not known to this server"
    if interaction not in role.interactions:
        return f"role {role.name} may not perform '{interaction}'"
    if (
        res_type is not None
        and role.types is not None
        and res_type not in role.types
        and type_level(res_type) > 1
    ):
        return f"role {role.name} may not access {res_type}"
    if interaction in WRITE and role.write_types is not None and res_type not in role.write_types:
        return f"role {role.name} may not write {res_type}"
    if res_type is not None and type_level(res_type) > role.max_level:
        level = type_level(res_type)
        return f"{res_type} is data level {level}; role {role.name} reads up to {role.max_level}"
    letter = INTERACTION_LETTER.get(interaction)
    if letter and not scopes_allow(parse_scopes(scope), res_type, letter):
        return f"token scope does not grant '{letter}' on {res_type or 'the system'}"
    if interaction in _FULL_ONLY and role.relation != "all":
        return f"role {role.name} may not perform '{interaction}'"
    return None


def _notifiable(resource: dict[str, Any]) -> bool:
    rtype = resource.get("resourceType")
    if rtype in ("Patient", "Encounter", "Immunization"):
        return True
    if rtype == "Condition":
        codes = [
            c.get("code", "") for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)
        ]
        return any(str(code).upper().startswith(NOTIFIABLE_PREFIXES) for code in codes)
    categories = [
        c.get("code")
        for cat in resource.get("category") or []
        if isinstance(cat, dict)
        for c in cat.get("coding") or []
        if isinstance(c, dict)
    ]
    return "laboratory" in categories or (rtype == "DiagnosticReport" and not categories)


class Policy:
    """Decides visibility of resources for one principal, with the store for relationships/consent."""

    def __init__(self, relations: Relations) -> None:
        self.relations = relations

    def can_see(self, principal: Principal, resource: dict[str, Any]) -> bool:
        """True when the principal may see this resource (deny by default)."""
        role = ROLES.get(principal.role)
        if role is None:
            return False
        rtype = resource.get("resourceType")
        if rtype in ("CapabilityStatement", "OperationOutcome", "Bundle") or type_level(rtype) == 1:
            return True
        if role.types is not None and rtype not in role.types:
            return False
        level = data_level(resource)
        patient = self.relations.patient_of(resource)
        if patient is None:
            return level <= min(role.max_level, 2) or (role.relation == "all" and level <= role.max_level)
        if principal.glass_for(patient):
            return True
        if level > role.max_level:
            return False
        if role.relation == "care":
            return self._care_allows(principal, patient, resource)
        if not self._related(principal, role, patient, resource):
            return False
        if not role.consent_applies or (role.relation == "self"):
            return True
        return self._consent_allows(principal, patient, resource)

    def _care_allows(self, principal: Principal, patient: str, resource: dict[str, Any]) -> bool:
        """A practitioner: their own relationship, or one through an MPI-linked record of the resident.

        Through a link, a record travels to another facility only when the resident has not opted
        out of sharing and it is in no sensitive category; otherwise only the facilities that hold
        it see it (:meth:`Relations.held_at`: those it belongs to and, for a request, the one it is
        addressed to), so the linked Patient record of another facility is hidden too.
        """
        kind = self.relations.care(principal, patient)
        if kind is None or not self._consent_allows(principal, patient, resource):
            return False
        if kind == "direct":
            return True
        if self.relations.consent(patient).opt_out_sharing or sensitive_categories(resource):
            return self._kept_at_home_for(principal, resource)
        return True

    def _related(self, principal: Principal, role: Role, patient: str, resource: dict[str, Any]) -> bool:
        if role.relation == "all":
            return True
        if role.relation == "self":
            own = principal.patient
            return own is not None and (patient == own or patient in self.relations.own_records(own))
        if role.relation == "area":
            return _notifiable(resource) and self.relations.in_area(patient, principal.area)
        return False

    def _consent_allows(self, principal: Principal, patient: str, resource: dict[str, Any]) -> bool:
        consent = self.relations.consent(patient)
        if consent.restricted and consent.restricted & sensitive_categories(resource):
            return False
        if consent.opt_out_sharing:
            if resource.get("resourceType") == "Patient":
                return True
            return self._kept_at_home_for(principal, resource)
        return True

    def _kept_at_home_for(self, principal: Principal, resource: dict[str, Any]) -> bool:
        """For a record consent keeps at home: the facilities that hold it, and the practitioners
        it names in person (:meth:`Relations.names_in_person`)."""
        held = self.relations.held_at(resource, principal.organization)
        return held or self.relations.names_in_person(principal, resource)

    def check_write(
        self, principal: Principal, res_type: str | None, resource: dict[str, Any] | None
    ) -> None:
        """Refuse a write whose resident the caller has no relationship with.

        Roles that see everybody pass here; a ``system`` account bound to a facility is held to
        that facility's records by :mod:`rhip.security.facility`, inside the store's write.
        """
        role = role_of(principal)
        if resource is None or role.relation == "all":
            return
        patient = self.relations.patient_of(resource)
        if role.relation == "self":
            if patient is None or patient != principal.patient:
                raise Forbidden("residents may only write their own Consent")
            return
        if role.relation == "directory" or patient is None:
            return
        if role.relation == "care":
            if principal.glass_for(patient) or self.relations.has_care(principal, patient):
                return
            if self.relations.names_caller(principal, resource):
                return
        raise Forbidden(f"no care relationship with the resident of this {res_type}")
