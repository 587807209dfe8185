"""Facts the policy needs from the store: whose record a resource is, care relationships, consent.

A practitioner has a care relationship with a resident when any of these exist: an Encounter at
the practitioner's facility or with the practitioner as participant, a referral or consultation
(ServiceRequest addressed to or requested by them or their facility), a CareTeam naming them, an
EpisodeOfCare at their facility, or a family-doctor contract (Patient.generalPractitioner); a
referral or contract naming a PractitionerRole or HealthcareService of the facility, and an
Encounter or CareTeam naming one of its PractitionerRoles as participant, count for the facility
(one level, :data:`linkage.ORG_UNIT_LINKS`). A
relationship with any of a resident's records extends over every record the MPI links to the same
resident (:meth:`Relations.care` answers ``"linked"``; the policy then withholds what the
resident's consent or a sensitive category keeps at the facilities that hold it,
:meth:`Relations.held_at`). Answers are cached for a minute (consent answers for 5 s) so that a
page of search results costs at most one lookup per resident, not per resource; an MPI correction
made through this process clears the cache at once, a link made elsewhere (ingest, another node)
shows within the minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import inspect

from rhip.errors import RhipError
from rhip.security import linkage
from rhip.security.parties import (
    UNIT_ORGANIZATION,
    Parties,
    organization_ids,
    parties_of,
    reference_id,
    references,
)

if TYPE_CHECKING:
    from rhip.security.tokens import Principal
    from rhip.store import Store

logger = logging.getLogger(__name__)
_PATIENT_FIELDS = ("subject", "patient", "beneficiary", "individual", "for")
#: Seconds a consent answer is reused (a Consent written through this process clears it at once).
CONSENT_TTL = 5.0
#: Seconds a care-relationship, area or record-facility answer is reused.
RELATION_TTL = 60.0
#: Largest set of Patient ids kept in memory per practitioner (one query answers every resident);
#: above it, each resident is looked up on its own.
CARE_SET_MAX = 200_000
#: Longest chain of merged residents followed to the survivor.
_MAX_MERGE_HOPS = 5
#: How a practitioner relates to a record's resident: their own relationship, or through an MPI link.
CareKind = Literal["direct", "linked"]


@dataclass(frozen=True)
class ConsentState:
    """A resident's active choices: opt out of cross-institution sharing, restricted categories."""

    opt_out_sharing: bool = False
    restricted: frozenset[str] = field(default_factory=frozenset)


def parse_consent(consents: list[dict[str, Any]]) -> ConsentState:
    """Combine a resident's active Consent resources into one state (any deny wins)."""
    from rhip.security.levels import LABEL_TO_CATEGORY

    opt_out, restricted = False, set()
    for consent in consents:
        if consent.get("status") != "active":
            continue
        provision = consent.get("provision") or {}
        nested = [p for p in provision.get("provision") or [] if isinstance(p, dict)]
        labels = [p for p in [provision, *nested] if p.get("type") == "deny" and p.get("securityLabel")]
        for part in labels:
            for label in part.get("securityLabel") or []:
                if isinstance(label, dict) and label.get("code") in LABEL_TO_CATEGORY:
                    restricted.add(LABEL_TO_CATEGORY[label["code"]])
        if provision.get("type") == "deny" and not provision.get("securityLabel"):
            opt_out = True
    return ConsentState(opt_out, frozenset(restricted))


class Relations:
    """Store-backed relationship and consent lookups with a short cache."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple[Any, ...], compute: Any, ttl: float = RELATION_TTL) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        value = compute()
        self._keep(key, value, ttl)
        return value

    def _keep(self, key: tuple[Any, ...], value: Any, ttl: float) -> None:
        with self._lock:
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + ttl, value)

    def _missing(self, keys: dict[str, tuple[Any, ...]]) -> list[str]:
        """The patients whose cache entry (``keys[patient]``) is absent or stale."""
        now = time.monotonic()
        return sorted(p for p, k in keys.items() if (hit := self._cache.get(k)) is None or hit[0] <= now)

    def forget_patient(self, patient: str) -> None:
        """Drop cached answers about one resident (after their Consent changed)."""
        with self._lock:
            for key in [k for k in self._cache if patient in k]:
                self._cache.pop(key, None)

    def forget_all(self) -> None:
        """Drop every cached answer (a Consent was written, or the MPI moved records between residents)."""
        with self._lock:
            self._cache.clear()

    def patient_of(self, resource: dict[str, Any]) -> str | None:
        """The resident a resource is about (None for directory data)."""
        if resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            return str(rid) if rid else None
        for name in _PATIENT_FIELDS:
            for ref in references(resource.get(name)):
                found = reference_id(ref, "Patient")
                if found:
                    return found
        return None

    def _exists(self, res_type: str, params: list[tuple[str, str]]) -> bool:
        try:
            return bool(self.store.search(res_type, params, count=1).matches)
        except RhipError as exc:
            logger.debug("relationship search %s skipped: %s", res_type, exc.diagnostics)
            return False

    def has_care(self, principal: Principal, patient: str) -> bool:
        """True when the practitioner (or their facility) cares for this very Patient record."""
        key = ("care", principal.practitioner, principal.organization, patient)
        return bool(self._cached(key, lambda: self._compute_care(principal, [patient])))

    def care(self, principal: Principal, patient: str) -> CareKind | None:
        """How the practitioner relates to the record's resident: ``direct``, ``linked`` or None.

        ``linked`` means a relationship with another record the MPI links to the same resident
        (one look-up per resident, cached like the direct answer).
        """
        sets = self._care_sets(principal)
        if sets is not None:  # one query per practitioner instead of several per resident
            direct, reachable = sets
            return "direct" if patient in direct else "linked" if patient in reachable else None
        if self.has_care(principal, patient):
            return "direct"
        resident, group = self.linked(patient)
        if len(group) < 2:
            return None
        key = ("care-resident", principal.practitioner, principal.organization, resident)
        others = sorted(group - {patient})
        return "linked" if self._cached(key, lambda: self._compute_care(principal, others)) else None

    def _compute_care(self, principal: Principal, patients: Sequence[str]) -> bool:
        prac = f"Practitioner/{principal.practitioner}" if principal.practitioner else None
        org = f"Organization/{principal.organization}" if principal.organization else None
        pats = ",".join(f"Patient/{p}" for p in patients)
        ids = ",".join(patients)
        checks: list[tuple[str, list[tuple[str, str]]]] = []
        for target, links in ((org, linkage.ORG_LINKS), (prac, linkage.PRACTITIONER_LINKS)):
            if target:
                checks += [(rtype, [("patient", pats), (param, target)]) for rtype, param in links]
                checks.append(("Patient", [("_id", ids), ("general-practitioner", target)]))
        if org:  # a referral or contract naming one of the facility's posts or departments
            for rtype, param, unit in linkage.ORG_UNIT_LINKS:
                chained = (linkage.unit_link_param(param, unit), org)
                checks.append(
                    (rtype, [("_id", ids), chained] if rtype == "Patient" else [("patient", pats), chained])
                )
        return any(self._exists(rtype, params) for rtype, params in checks)

    # -- MPI links ---------------------------------------------------------------------------
    def linked(self, patient: str) -> tuple[str, frozenset[str]]:
        """The resident of a Patient record and every record linked to it (the record itself included).

        The golden Patient (id = resident id) belongs to the group. Without MPI tables, or for a
        record the MPI has not linked, the group is the record alone.
        """
        return self._cached(("linked", patient), lambda: self._compute_linked(patient))

    def _mpi_ready(self) -> bool:
        def probe() -> bool:
            return bool(inspect(self.store.engine).has_table("mpi_record"))

        return bool(self._cached(("mpi-ready",), probe))

    def _compute_linked(self, patient: str) -> tuple[str, frozenset[str]]:
        if not self._mpi_ready():
            return patient, frozenset({patient})
        with self.store.engine.connect() as conn:
            resident = conn.execute(linkage.resident_of_sql(patient)).scalar() or patient
            for _ in range(_MAX_MERGE_HOPS):  # a merged-away golden Patient: its records moved on
                survivor = conn.execute(linkage.merged_into_sql(resident)).scalar()
                if not survivor:
                    break
                resident = str(survivor)
            records = {str(r.record_id) for r in conn.execute(linkage.records_of_sql([resident]))}
        if not records:
            return patient, frozenset({patient})
        return resident, frozenset(records | {patient, resident})

    def own_records(self, patient: str) -> frozenset[str]:
        """The Patient records a resident signed in as ``patient`` may see as their own.

        Their record, the golden Patient of their resident, and every record the MPI linked to it
        that carries the same citizen ID (see :func:`linkage.same_person_records_sql`).
        """
        return frozenset(self._cached(("own", patient), lambda: self._compute_own(patient)))

    def _compute_own(self, patient: str) -> frozenset[str]:
        resident, group = self.linked(patient)
        if len(group) == 1:
            return group
        with self.store.engine.connect() as conn:
            same = {str(r[0]) for r in conn.execute(linkage.same_person_records_sql(patient))}
        return frozenset(same | {patient, resident})

    def expand_linked(self, patients: set[str], limit: int) -> set[str] | None:
        """``patients`` with every record linked to them by the MPI; None when more than ``limit``."""
        if not patients or not self._mpi_ready():
            return patients
        out = set(patients)
        ordered = sorted(patients)
        with self.store.engine.connect() as conn:
            for start in range(0, len(ordered), 500):
                chunk_sql = linkage.residents_of_sql(ordered[start : start + 500])
                residents = [str(r[0]) for r in conn.execute(chunk_sql)]
                for rstart in range(0, len(residents), 500):
                    chunk = residents[rstart : rstart + 500]
                    out.update(chunk)
                    out.update(str(r.record_id) for r in conn.execute(linkage.records_of_sql(chunk)))
                if len(out) > limit:
                    return None
        return out

    def care_patients(self, principal: Principal) -> frozenset[str] | None:
        """Every Patient id the practitioner may relate to (direct or MPI-linked); None above CARE_SET_MAX.

        A superset of what :meth:`care` allows, for narrowing a search in SQL before the policy
        filter; cached per practitioner and facility like the per-resident answers.
        """
        sets = self._care_sets(principal)
        return sets[1] if sets is not None else None

    def _care_sets(self, principal: Principal) -> tuple[frozenset[str], frozenset[str]] | None:
        """(direct, direct + linked) Patient ids of a practitioner, or None when there are too many."""
        limit = CARE_SET_MAX
        key = ("care-set", principal.practitioner, principal.organization, limit)
        return self._cached(key, lambda: self._compute_care_sets(principal, limit))

    def _compute_care_sets(
        self, principal: Principal, limit: int
    ) -> tuple[frozenset[str], frozenset[str]] | None:
        from rhip.config import get_settings

        stmt = linkage.care_patients_sql(
            principal.practitioner, principal.organization, limit + 1, get_settings().base_url
        )
        if stmt is None:
            return frozenset(), frozenset()
        with self.store.engine.connect() as conn:
            direct = {str(r[0]) for r in conn.execute(stmt)}
        if len(direct) > limit:
            return None
        expanded = self.expand_linked(direct, limit)
        return (frozenset(direct), frozenset(expanded)) if expanded is not None else None

    def in_area(self, patient: str, area: str | None) -> bool:
        """True when the resident's address lies in the area (district/city code or name)."""
        if not area:
            return False
        return bool(self._cached(("area", area, patient), lambda: self._compute_area(patient, area)))

    def _compute_area(self, patient: str, area: str) -> bool:
        try:
            body = self.store.read("Patient", patient)
        except RhipError:
            return False
        return _address_in(body, area)

    # -- batch look-ups for a window of search results -------------------------------------
    def prefetch(self, patients: set[str], *, consent: bool, area: str | None) -> None:
        """Fill the cache for many residents at once: links, then consent or area, in a few queries.

        A restricted search tests thousands of records of hundreds of residents; answering each
        resident on its own would cost a query or two per resident whenever the short consent
        cache expires. Residents a batch does not settle are looked up one by one as before.
        """
        patients = {p for p in patients if p}
        if not patients:
            return
        if consent:
            self._prefetch_linked(patients)
            self._prefetch_consent(patients)
        if area:
            self._prefetch_area(patients, area)

    def _prefetch_linked(self, patients: set[str]) -> None:
        missing = self._missing({p: ("linked", p) for p in patients})
        if not missing or not self._mpi_ready():
            return
        resident_of: dict[str, str] = {}
        groups: dict[str, set[str]] = {}
        with self.store.engine.connect() as conn:
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                for row in conn.execute(linkage.resident_rows_sql(chunk)):
                    resident_of[str(row.record_id)] = str(row.resident_id)
            residents = sorted(set(resident_of.values()))
            for start in range(0, len(residents), 500):
                for row in conn.execute(linkage.records_of_sql(residents[start : start + 500])):
                    groups.setdefault(str(row.resident_id), set()).add(str(row.record_id))
        for patient, resident in resident_of.items():
            group = frozenset(groups.get(resident, set()) | {patient, resident})
            self._keep(("linked", patient), (resident, group), RELATION_TTL)

    def _prefetch_consent(self, patients: set[str]) -> None:
        missing = self._missing({p: ("consent", p) for p in patients})
        if len(missing) < 2:
            return
        groups = {p: self.linked(p)[1] for p in missing}
        ids = sorted(set().union(*groups.values()))
        by_patient: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ",".join(ids[start : start + 500])
            try:
                found = self.store.search("Consent", [("patient", chunk), ("_total", "none")], count=5000)
            except RhipError:
                return
            if found.has_next:
                return  # unusually many Consents: leave these residents to the one-by-one path
            for consent in found.matches:
                owner = self.patient_of(consent)
                if owner:
                    by_patient.setdefault(owner, []).append(consent)
        for patient, group in groups.items():
            mine = [c for member in sorted(group) for c in by_patient.get(member, [])]
            self._keep(("consent", patient), parse_consent(mine), CONSENT_TTL)

    def _prefetch_area(self, patients: set[str], area: str) -> None:
        missing = self._missing({p: ("area", area, p) for p in patients})
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            try:
                found = self.store.search(
                    "Patient", [("_id", ",".join(chunk)), ("_total", "none")], count=500
                )
            except RhipError:
                return
            bodies = {str(b.get("id")): b for b in found.matches}
            for patient in chunk:
                body = bodies.get(patient)
                self._keep(
                    ("area", area, patient), body is not None and _address_in(body, area), RELATION_TTL
                )

    def consent(self, patient: str) -> ConsentState:
        """The resident's active consent choices, from the Consents of all their linked records."""
        return self._cached(("consent", patient), lambda: self._compute_consent(patient), CONSENT_TTL)

    def _compute_consent(self, patient: str) -> ConsentState:
        _, group = self.linked(patient)
        refs = ",".join(f"Patient/{p}" for p in sorted(group))
        try:
            found = self.store.search("Consent", [("patient", refs)], count=200).matches
        except RhipError:
            found = []
        return parse_consent(found)

    def held_at(self, resource: dict[str, Any], organization: str | None) -> bool:
        """True when a record is facility ``organization``'s own, for the reads consent keeps at home.

        That is when ``organization`` is a facility the record belongs to (its ``serviceProvider``,
        ``performer``, ``requester``, ... or its Encounter's facility) or one it is addressed to (a
        referral's requested performer, an Encounter's discharge destination): the parties of
        :func:`rhip.security.parties.parties_of`, as for a facility's writes. A PractitionerRole,
        HealthcareService or Location named in those elements counts for its facility. The
        Encounter, roles and services are looked up (through the relationship cache) only when the
        record does not name ``organization`` itself.
        """
        if not organization:
            return False
        parties = parties_of(resource)
        if organization in parties.addressees or self._belongs(parties, organization):
            return True
        return any(organization in self.facilities_of(unit) for unit in sorted(parties.addressee_units))

    def belongs_to(self, resource: dict[str, Any], organization: str | None) -> bool:
        """True when a record belongs to facility ``organization`` (directly, through its Encounter
        or through a PractitionerRole or HealthcareService it names); the facility a request is
        only addressed to does not count."""
        return bool(organization) and self._belongs(parties_of(resource), str(organization))

    def _belongs(self, parties: Parties, organization: str) -> bool:
        if organization in parties.owners:
            return True
        return any(organization in self.facilities_of(ref) for ref in parties.owner_refs)

    def facilities_of(
        self, ref: str, read: Callable[[str, str], dict[str, Any]] | None = None
    ) -> frozenset[str]:
        """The facilities of ``Encounter/id``, ``PractitionerRole/id``, ``HealthcareService/id`` or
        ``Location/id`` (see :meth:`encounter_facilities` and :meth:`unit_facilities`; ``read`` as
        there)."""
        rtype, _, rid = ref.partition("/")
        if rtype == "Encounter":
            return self.encounter_facilities(rid, read)
        return self.unit_facilities(ref, read)

    def encounter_facilities(
        self, encounter: str, read: Callable[[str, str], dict[str, Any]] | None = None
    ) -> frozenset[str]:
        """The facilities Encounter ``encounter`` belongs to (its ``serviceProvider``); empty when unknown.

        ``read``, when given, looks the Encounter up with it, uncached: a write check reads inside
        its own transaction, where an Encounter written earlier in the same bundle is visible and
        a stale answer must not decide. Without it the answer comes through the relationship cache.
        """

        def lookup(read_with: Callable[[str, str], dict[str, Any]]) -> frozenset[str]:
            return parties_of(read_with("Encounter", encounter)).owners

        return self._resolved(("enc-org", encounter), lookup, read)

    def unit_facilities(
        self, unit: str, read: Callable[[str, str], dict[str, Any]] | None = None
    ) -> frozenset[str]:
        """The facility of ``PractitionerRole/id`` (its ``organization``), ``HealthcareService/id``
        (its ``providedBy``) or ``Location/id`` (its ``managingOrganization``), one level; empty when
        unknown. ``read`` as for :meth:`encounter_facilities`.
        """
        rtype, _, rid = unit.partition("/")
        element = UNIT_ORGANIZATION.get(rtype)
        if element is None or not rid:
            return frozenset()

        def lookup(read_with: Callable[[str, str], dict[str, Any]]) -> frozenset[str]:
            return frozenset(organization_ids(read_with(rtype, rid).get(element)))

        return self._resolved(("unit-org", rtype, rid), lookup, read)

    def _resolved(
        self,
        key: tuple[str, ...],
        lookup: Callable[[Callable[[str, str], dict[str, Any]]], frozenset[str]],
        read: Callable[[str, str], dict[str, Any]] | None,
    ) -> frozenset[str]:
        """``lookup`` with ``read`` (uncached, in a write's transaction) or through the relationship
        cache under ``key``; empty when the record it reads is not there."""

        def safe(read_with: Callable[[str, str], dict[str, Any]]) -> frozenset[str]:
            try:
                return lookup(read_with)
            except RhipError:
                return frozenset()

        if read is not None:
            return safe(read)
        return frozenset(self._cached(key, lambda: safe(self.store.read)))

    def names_caller(self, principal: Principal, resource: dict[str, Any]) -> bool:
        """True when a submitted resource belongs to the caller's facility or names the caller as
        performer (a practitioner's write without a care relationship).

        The facility a request is addressed to does not count: as for a facility's feed, a record
        is created by a facility it belongs to, so B's practitioner does not write A's referral to
        B in A's name (B updates it through the care relationship the referral gives it).
        """
        if self.belongs_to(resource, principal.organization):
            return True
        me = principal.practitioner
        return bool(me) and any(reference_id(ref, "Practitioner") == me for ref in _people_named(resource))

    def names_in_person(self, principal: Principal, resource: dict[str, Any]) -> bool:
        """True when a record names the calling practitioner personally, as the Practitioner or
        through a PractitionerRole of theirs, in one of :data:`PERSON_ELEMENTS`.

        Consent keeps an opted-out resident's records at the facilities that hold them; a
        practitioner of another facility who took part in one (a consultant in A's Encounter, the
        doctor who performed a result) wrote or witnessed it and reads that record, not the rest
        of the facility's. A PractitionerRole is looked up one level, through the relationship
        cache, only when the record names one.
        """
        me = principal.practitioner
        if not me:
            return False
        for ref in _people_named(resource):
            if reference_id(ref, "Practitioner") == me:
                return True
            role = reference_id(ref, "PractitionerRole")
            if role and me in self.role_practitioners(role):
                return True
        return False

    def role_practitioners(self, role: str) -> frozenset[str]:
        """The Practitioner ids PractitionerRole ``role`` names (``practitioner``); empty when unknown."""

        def lookup(read_with: Callable[[str, str], dict[str, Any]]) -> frozenset[str]:
            named = references(read_with("PractitionerRole", role).get("practitioner"))
            return frozenset(filter(None, (reference_id(ref, "Practitioner") for ref in named)))

        return self._resolved(("role-practitioner", role), lookup, None)


#: Elements that name the people who took part in a record (an Encounter's or CareTeam's
#: ``participant``, a result's ``performer``, a condition's ``recorder`` and ``asserter``, ...).
PERSON_ELEMENTS = ("participant", "performer", "recorder", "asserter", "requester", "author")


def _people_named(resource: dict[str, Any]) -> list[Any]:
    """The references of :data:`PERSON_ELEMENTS` (``individual``, ``member``, ``actor`` unwrapped)."""
    return [ref for name in PERSON_ELEMENTS for ref in references(resource.get(name))]


def _address_in(body: dict[str, Any], area: str) -> bool:
    """True when a Patient's address lies in the area (district, city, province, postal code or a
    coded extension starting with the area's code or name)."""
    for address in body.get("address") or []:
        if not isinstance(address, dict):
            continue
        values = [
            address.get("district"),
            address.get("city"),
            address.get("state"),
            address.get("postalCode"),
        ]
        for ext in address.get("extension") or []:
            if isinstance(ext, dict):
                values.append(ext.get("valueString") or (ext.get("valueCode")))
        if any(isinstance(v, str) and (v == area or v.startswith(area)) for v in values):
            return True
    return False
