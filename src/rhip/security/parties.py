"""The organisations a record names, and in which role: pure functions over a FHIR body.

One reading of a record's organisations serves both sides of the security rules: what a facility's
feed may write (:mod:`rhip.security.facility`) and which records are a reader's own facility's
when a resident's consent or a sensitive category keeps records at home
(:mod:`rhip.security.policy`, through :class:`rhip.security.relations.Relations`). A record names
organisations in two roles (:func:`parties_of`):

- the facilities it **belongs to**: every Organization in its ``serviceProvider``,
  ``managingOrganization``, ``custodian``, ``organization``, ``performer`` (its ``actor`` or
  ``onBehalfOf``), ``author``, ``provider``, ``insurer``, ``recorder``, ``requester``, ``owner``
  or ``providedBy``, and its Encounter's (resolved by the caller, who has the store);
- the facilities a record is **addressed to**: the requested performer of a ServiceRequest,
  MedicationRequest or DeviceRequest, the ``owner`` of a Task, the ``insurer`` a Claim is sent to.
  In FHIR R4 these name who is asked to act, not who made the record. An Encounter is addressed
  to the facility its patient is discharged to (``hospitalization.destination``), an insurer's
  ClaimResponse or CoverageEligibilityResponse to the provider that asked (``requestor``), its
  ExplanationOfBenefit to the claim's ``provider``: they receive the record but do not act on it
  by writing it (:data:`RECEIVE_ONLY`).

In either role an element may name a facility's department or post instead of the Organization
itself: a PractitionerRole (its ``organization``) or a HealthcareService (its ``providedBy``), as a
referral to a department (转诊 to ``HealthcareService/cardiology-B``) does; a discharge destination
may name a Location (its ``managingOrganization``). Those references are
kept apart (:attr:`Parties.owner_units`, :attr:`Parties.addressee_units`) and resolved one level
by the caller, like the Encounter.

Nothing here touches the store, so every module of :mod:`rhip.security` may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Elements that name an Organization a record belongs to (or, for the types and paths of
#: :data:`ADDRESSEE_ELEMENTS`, the one a request is addressed to). ``owner`` is a Device's or an
#: Account's owner (a Task's is its addressee), ``providedBy`` a HealthcareService's provider.
ORGANIZATION_ELEMENTS = (
    "serviceProvider",
    "managingOrganization",
    "custodian",
    "organization",
    "performer",
    "author",
    "provider",
    "insurer",
    "recorder",
    "requester",
    "owner",
    "providedBy",
)

#: Per resource type, the elements (dotted paths) naming the organisation a request is addressed
#: to: FHIR R4's requested performer or filler. The other organisation elements name the
#: facilities the record belongs to.
ADDRESSEE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "ServiceRequest": ("performer",),
    "MedicationRequest": ("performer", "dispenseRequest.performer"),
    "DeviceRequest": ("performer",),
    "Task": ("owner",),
    "Claim": ("insurer",),
    "CoverageEligibilityRequest": ("insurer",),
    "EnrollmentRequest": ("insurer",),
    "Encounter": ("hospitalization.destination",),
    "ClaimResponse": ("requestor",),
    "CoverageEligibilityResponse": ("requestor",),
    "ExplanationOfBenefit": ("provider",),
}

#: The types whose addressee only receives the record: it reads it where consent keeps records at
#: home, but does not update it as a request's addressee does to accept or complete the request.
#: The facility a patient is discharged to continues the care; the Encounter stays the discharging
#: facility's to write. An insurer's response goes to the provider that asked (``requestor``), its
#: ExplanationOfBenefit to the claim's ``provider``; the adjudication stays the insurer's to write.
RECEIVE_ONLY = frozenset(
    {"Encounter", "ClaimResponse", "CoverageEligibilityResponse", "ExplanationOfBenefit"}
)


#: The resource types naming a facility's department, post or place, and the element of each that
#: names the facility (read one level: a PractitionerRole's ``organization``, a HealthcareService's
#: ``providedBy``, a Location's ``managingOrganization``).
UNIT_ORGANIZATION: dict[str, str] = {
    "PractitionerRole": "organization",
    "HealthcareService": "providedBy",
    "Location": "managingOrganization",
}


@dataclass(frozen=True)
class Parties:
    """The organisations a record names, by role (Encounter not yet resolved).

    Attributes:
        owners: Organization ids named in the elements of the facilities the record belongs to.
        addressees: Organization ids named as the facility a request is addressed to.
        encounter: the id of the Encounter the record names, whose facility the record belongs to
            as well.
        owner_units: ``PractitionerRole/id``, ``HealthcareService/id`` and ``Location/id``
            references in the elements of :attr:`owners`: the record belongs to their facility as
            well.
        addressee_units: the same in the elements of :attr:`addressees`: the request is addressed
            to their facility as well.
    """

    owners: frozenset[str]
    addressees: frozenset[str]
    encounter: str | None
    owner_units: frozenset[str] = frozenset()
    addressee_units: frozenset[str] = frozenset()

    @property
    def owner_refs(self) -> list[str]:
        """What a record's owning facilities are looked up through: ``Encounter/id``, then its
        PractitionerRoles and HealthcareServices (sorted, so look-ups run in a stable order)."""
        encounter = [f"Encounter/{self.encounter}"] if self.encounter else []
        return encounter + sorted(self.owner_units)

    @property
    def empty(self) -> bool:
        """True when the record names no organisation, no department or post and no Encounter."""
        named = self.owners or self.addressees or self.owner_units or self.addressee_units
        return not (named or self.encounter)


def reference_id(ref: Any, prefix: str) -> str | None:
    """The id of a ``prefix/id`` reference (relative, absolute or versioned); None for anything else."""
    if isinstance(ref, dict):
        ref = ref.get("reference")
    if isinstance(ref, str):
        tail = ref.split("/_history/")[0]
        marker = f"{prefix}/"
        if tail.startswith(marker) or f"/{marker}" in tail:
            return tail.rsplit("/", 1)[-1]
    return None


def references(value: Any) -> list[Any]:
    """The references an element holds, in order: plain references, or the ``actor`` (and
    ``onBehalfOf``), ``individual`` or ``member`` (a CareTeam's) of performer- and
    participant-style elements."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict) and "actor" in item:
            out.append(item["actor"])
            if "onBehalfOf" in item:  # Procedure.performer: the organisation the actor acted for
                out.append(item["onBehalfOf"])
        elif isinstance(item, dict) and "individual" in item:
            out.append(item["individual"])
        elif isinstance(item, dict) and "member" in item:
            out.append(item["member"])
        else:
            out.append(item)
    return out


def organization_ids(value: Any) -> list[str]:
    """The Organization ids an element names (see :func:`references`); other references are skipped."""
    found = (reference_id(ref, "Organization") for ref in references(value))
    return [org for org in found if org]


def unit_reference(ref: Any) -> str | None:
    """``PractitionerRole/id``, ``HealthcareService/id`` or ``Location/id`` for a reference to one
    (relative, absolute or versioned); None for anything else."""
    for rtype in UNIT_ORGANIZATION:
        rid = reference_id(ref, rtype)
        if rid:
            return f"{rtype}/{rid}"
    return None


def _split(value: Any, orgs: set[str], units: set[str]) -> None:
    """Add the Organization ids an element names to ``orgs``, its department and post references
    to ``units`` (other references are skipped)."""
    for ref in references(value):
        org = reference_id(ref, "Organization")
        if org:
            orgs.add(org)
        elif (unit := unit_reference(ref)) is not None:
            units.add(unit)


def _element(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def parties_of(body: dict[str, Any]) -> Parties:
    """The organisations a record names as its own and as those a request is addressed to."""
    addressed = ADDRESSEE_ELEMENTS.get(str(body.get("resourceType")), ())
    owners: set[str] = set()
    owner_units: set[str] = set()
    for name in ORGANIZATION_ELEMENTS:  # read for every record a restricted search tests: kept lean
        value = body.get(name)
        if value is not None and name not in addressed:
            _split(value, owners, owner_units)
    addressees: set[str] = set()
    addressee_units: set[str] = set()
    for path in addressed:
        _split(_element(body, path), addressees, addressee_units)
    encounter = reference_id(body.get("encounter") or body.get("context"), "Encounter")
    units = (frozenset(owner_units), frozenset(addressee_units))
    return Parties(frozenset(owners), frozenset(addressees), encounter, *units)
