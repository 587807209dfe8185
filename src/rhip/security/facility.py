"""A facility's own records: what a ``system`` account bound to an organisation may write.

A facility's HIS, LIS or EMR feeds the platform over FHIR REST with a ``system`` account bound to
its Organization. Such a feed writes (creates, updates, patches, deletes) only records its facility
is responsible for, so that hospital A's feed can never overwrite, take over or delete hospital
B's. A record names organisations in two roles (:func:`rhip.security.parties.parties_of`): the
facilities it **belongs to** (its ``serviceProvider``, ``managingOrganization``, ``performer``,
``requester``, ... and its Encounter's ``serviceProvider``: the result of an outside laboratory in
hospital A's Encounter belongs to both) and the facilities a request is **addressed to** (the
requested performer of a referral, 转诊, the ``owner`` of a Task, an Encounter's discharge
destination, ...). Where those elements name a PractitionerRole, a HealthcareService or a
Location, its ``organization``, ``providedBy`` or ``managingOrganization`` counts in the same role
(read one level, inside the write's transaction like the Encounter).

A facility the record belongs to creates it and updates it, but an update may not drop another
facility the record belongs to; it deletes it when the record belongs to it alone. A facility a
request is addressed to updates it (to accept, decline or complete it) without changing the
organisations it names or its Encounter, and neither creates nor deletes it; the facility an
Encounter's patient is discharged to, and the provider an insurer's response is sent to, only
receive the record (they do not write it at all). Both the version
stored before and the body written are checked, so rewriting the organisation references of
another facility's record does not take it over. Records naming no organisation:

- an Organization is writable when it is the account's own or ``partOf`` it;
- a resident's record (a Patient, or a record naming one) must name a facility: otherwise nobody
  could tell whose it is, and any feed could overwrite it;
- other records (Practitioner, Location or Device without an owner, terminology) are shared
  directory and reference data, writable as before.

Reads are not concerned: sharing records across institutions is what the platform is for (the
same parties decide which records are a reader's own facility's where consent keeps records at
home, see :meth:`rhip.security.relations.Relations.held_at`). Unbound ``system`` accounts (a
regional hub, the device gateway) are not concerned either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rhip.errors import Forbidden
from rhip.security.parties import RECEIVE_ONLY, parties_of, reference_id
from rhip.security.relations import Relations
from rhip.security.tokens import Principal
from rhip.store.guard import WriteCheck

logger = logging.getLogger(__name__)

#: Where a record names its facility (for the refusal message).
_FACILITY_ELEMENTS = (
    "serviceProvider, managingOrganization, requester, performer, ... naming an Organization or a "
    "PractitionerRole or HealthcareService of one, or an Encounter of a facility"
)

_Read = Callable[[str, str], dict[str, Any]]


def bound_facility(principal: Principal) -> str | None:
    """The Organization a ``system`` account writes for; None when it is not bound (or not ``system``)."""
    if principal.role == "system" and principal.organization:
        return principal.organization
    return None


def _organization_allowed(body: dict[str, Any], own: str) -> bool:
    """An Organization a facility may write: itself, or one that is ``partOf`` it (a ward, a lab)."""
    return body.get("id") == own or reference_id(body.get("partOf"), "Organization") == own


def _names(orgs: frozenset[str]) -> str:
    return ", ".join(sorted(orgs))


class _Record:
    """One side of a write (stored version or submitted body) with its parties; its Encounter,
    PractitionerRoles and HealthcareServices resolved lazily."""

    def __init__(self, body: dict[str, Any], what: str, facility: Callable[[str], frozenset[str]]):
        self.body = body
        self.what = what
        self.parties = parties_of(body)
        self._facility = facility

    def owners(self) -> frozenset[str]:
        """Every facility the record belongs to, its Encounter's and its roles' and services' included."""
        found = self.parties.owners
        for ref in self.parties.owner_refs:
            found = found | self._facility(ref)
        return found

    def addressees(self) -> frozenset[str]:
        """Every facility a request is addressed to, its roles' and services' included."""
        found = self.parties.addressees
        for unit in sorted(self.parties.addressee_units):
            found = found | self._facility(unit)
        return found

    def owned_by(self, own: str) -> bool:
        """True when the record belongs to ``own`` (its Encounter, roles, services read only when needed)."""
        return own in self.parties.owners or own in self.owners()

    def addressed_to(self, own: str) -> bool:
        """True when the request is addressed to ``own`` (its roles and services read only when needed)."""
        return own in self.parties.addressees or own in self.addressees()

    def describe(self) -> str:
        """Whose the record is, for a refusal: ``belongs to facility X and is addressed to Y``."""
        owners = self.owners()
        text = f"belongs to facilit{'ies' if len(owners) > 1 else 'y'} {_names(owners)}"
        if not owners:
            text = f"names no facility it belongs to ({_FACILITY_ELEMENTS})"
        addressees = self.addressees()
        if addressees:
            text += f" and is addressed to {_names(addressees)}"
        return text


def _record(
    check: WriteCheck, body: dict[str, Any] | None, stored: bool, facility: Callable[[str], frozenset[str]]
) -> _Record | None:
    if body is None:
        return None
    if stored:
        what = f"{check.res_type}/{check.res_id} (stored version)"
    else:
        what = f"the submitted {check.res_type}" + (f"/{check.res_id}" if check.res_id else "")
    return _Record(body, what, facility)


def _facility_lookup(relations: Relations, read: _Read | None) -> Callable[[str], frozenset[str]]:
    """The facilities of an ``Encounter/id``, ``PractitionerRole/id`` or ``HealthcareService/id``,
    each looked up once per check (in the write's transaction when ``read`` is given, through the
    relationship cache otherwise)."""
    seen: dict[str, frozenset[str]] = {}

    def facility(ref: str) -> frozenset[str]:
        if ref not in seen:
            seen[ref] = relations.facilities_of(ref, read)
        return seen[ref]

    return facility


def _check_directory(relations: Relations, record: _Record, own: str) -> None:
    """Organizations, and records naming no organisation (see the module docstring)."""
    body = record.body
    if body.get("resourceType") == "Organization":
        if not _organization_allowed(body, own):
            theirs = reference_id(body.get("partOf"), "Organization") or body.get("id") or "(new)"
            raise Forbidden(
                f"{record.what} is the directory entry of organisation {theirs}, not facility {own}'s; "
                f"this account writes only Organization/{own} and organisations partOf it"
            )
        return
    resident = body.get("resourceType") == "Patient" or relations.patient_of(body) is not None
    if resident and _unnamed(record):
        raise Forbidden(
            f"{record.what} is a resident's record that names no facility ({_FACILITY_ELEMENTS}); "
            f"this account writes only records of facility {own}"
        )


def _unnamed(record: _Record) -> bool:
    """True when the record names no organisation (directly or through a known Encounter,
    PractitionerRole or HealthcareService)."""
    parties = record.parties
    return not parties.owners and not parties.addressees and not record.owners() and not record.addressees()


def _shared(record: _Record) -> bool:
    """True for directory and reference data naming no organisation (writable by every facility)."""
    return record.body.get("resourceType") == "Organization" or _unnamed(record)


def _check_create(new: _Record, own: str) -> None:
    """A record is created by a facility it belongs to."""
    if new.owned_by(own):
        return
    if new.addressed_to(own):
        raise Forbidden(
            f"{new.what} {new.describe()}; facility {own} is only the one it is addressed to, and a "
            f"record is created by a facility it belongs to"
        )
    raise Forbidden(f"{new.what} {new.describe()}; this account writes for facility {own} only")


def _check_change(stored: _Record, new: _Record | None, own: str) -> None:
    """An update, patch (``new`` given) or delete of a record that names organisations."""
    if stored.owned_by(own):
        if new is None:
            others = stored.owners() - {own}
            if others:
                raise Forbidden(
                    f"{stored.what} {stored.describe()}; a record that also belongs to another "
                    f"facility is not deleted by facility {own} alone (mark it entered-in-error)"
                )
            return
        same = stored.parties.encounter == new.parties.encounter
        if same and stored.parties.owner_units <= new.parties.owner_units:  # resolved on both sides
            dropped = stored.parties.owners - {own} - new.parties.owners
            dropped = dropped - new.owners() if dropped else dropped
        else:
            dropped = stored.owners() - {own} - new.owners()
        if dropped:
            raise Forbidden(
                f"{new.what} drops facility {_names(dropped)}, which {stored.what} belongs to; "
                f"facility {own} may not take a shared record over"
            )
        if not _shared(new) and not new.owned_by(own):
            raise Forbidden(f"{new.what} {new.describe()}; this account writes for facility {own} only")
        return
    if not stored.addressed_to(own):
        raise Forbidden(f"{stored.what} {stored.describe()}; this account writes for facility {own} only")
    if stored.body.get("resourceType") in RECEIVE_ONLY:
        raise Forbidden(
            f"{stored.what} {stored.describe()}; facility {own}, to which it is addressed (a "
            f"discharge destination, or the provider an insurer answers), receives it but does not "
            f"write it"
        )
    if new is None:
        raise Forbidden(
            f"{stored.what} {stored.describe()}; facility {own}, to which it is addressed, may update "
            f"it but not delete it"
        )
    if new.parties != stored.parties:
        raise Forbidden(
            f"{new.what} changes the organisations or the Encounter of {stored.what}, which "
            f"{stored.describe()}; facility {own}, to which it is addressed, may update it but not "
            f"change whose it is or whom it is addressed to"
        )


def check_facility_write(relations: Relations, own: str, check: WriteCheck) -> None:
    """Refuse (Forbidden, naming the facilities) a write facility ``own`` is not responsible for.

    Both the version stored before (update, patch, delete) and the body written (create, update,
    patch) are checked; see the module docstring for the rule and for records naming no
    organisation.
    """
    lookup = _facility_lookup(relations, check.read)
    stored = _record(check, check.stored, True, lookup)
    new = _record(check, check.new, False, lookup)
    for record in (stored, new):
        if record is not None:
            _check_directory(relations, record, own)
    if stored is None or _shared(stored):
        if new is not None and not _shared(new):
            _check_create(new, own)
        return
    _check_change(stored, new, own)


@dataclass
class FacilityGuard:
    """The write guard of one request by a bound ``system`` account (a :data:`WriteGuard`).

    It refuses what :func:`check_facility_write` refuses and reports each refusal to
    ``on_refusal``, so that the request can audit it (a batch answers 200 while some of its
    entries were refused).

    Args:
        relations: the runtime's relationship look-ups (``facilities_of``, ``patient_of``).
        principal: the caller.
        own: the Organization the caller is bound to.
        on_refusal: called with the check and the error before it is raised.
    """

    relations: Relations
    principal: Principal
    own: str
    on_refusal: Callable[[WriteCheck, Forbidden], None] | None = None

    def __call__(self, check: WriteCheck) -> None:
        """Let the write through, or raise Forbidden."""
        try:
            check_facility_write(self.relations, self.own, check)
        except Forbidden as exc:
            logger.info("%s refused: %s", self.principal.sub, exc.diagnostics)
            if self.on_refusal is not None:
                self.on_refusal(check, exc)
            raise
