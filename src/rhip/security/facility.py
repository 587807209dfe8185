"""A facility's own records: what a ``system`` account bound to an organisation may write.

A facility's HIS, LIS or EMR feeds the platform over FHIR REST with a ``system`` account bound to
its Organization. Such a feed writes (creates, updates, patches, deletes) only its own facility's
records, so that hospital A's feed can never overwrite, take over or delete hospital B's. A record's
facility is :meth:`Relations.facility_of` (its ``serviceProvider``, ``managingOrganization``,
``performer``, ... or its Encounter's ``serviceProvider``). The rule applies to the body written
and, for updates, patches and deletes, to the version stored before, so rewriting the organisation
reference of another facility's record does not take it over. Records without a facility:

- an Organization is writable when it is the account's own or ``partOf`` it;
- a resident's record (a Patient, or a record naming one) must name a facility: otherwise nobody
  could tell whose it is, and any feed could overwrite it;
- other records (Practitioner, Location or Device without an owner, terminology) are shared
  directory and reference data, writable as before.

Reads are not concerned: sharing records across institutions is what the platform is for.
Unbound ``system`` accounts (a regional hub, the device gateway) are not concerned either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rhip.errors import Forbidden
from rhip.security.relations import Relations, reference_id
from rhip.security.tokens import Principal
from rhip.store.guard import WriteCheck

logger = logging.getLogger(__name__)

#: Where a record names its facility (for the refusal message).
_FACILITY_ELEMENTS = "serviceProvider, managingOrganization, performer, ... or an Encounter of a facility"


def bound_facility(principal: Principal) -> str | None:
    """The Organization a ``system`` account writes for; None when it is not bound (or not ``system``)."""
    if principal.role == "system" and principal.organization:
        return principal.organization
    return None


def _describe(check: WriteCheck, stored: bool) -> str:
    if stored:
        return f"{check.res_type}/{check.res_id} (stored version)"
    return f"the submitted {check.res_type}" + (f"/{check.res_id}" if check.res_id else "")


def _organization_allowed(body: dict[str, Any], own: str) -> bool:
    """An Organization a facility may write: itself, or one that is ``partOf`` it (a ward, a lab)."""
    return body.get("id") == own or reference_id(body.get("partOf"), "Organization") == own


def check_facility_write(relations: Relations, own: str, check: WriteCheck) -> None:
    """Refuse (Forbidden, naming both facilities) a write that is not facility ``own``'s own.

    Both the version stored before (update, patch, delete) and the body written (create, update,
    patch) must be the facility's; see the module docstring for records without a facility.
    """
    for body, stored in ((check.stored, True), (check.new, False)):
        if body is None:
            continue
        what = _describe(check, stored)
        if body.get("resourceType") == "Organization":
            if not _organization_allowed(body, own):
                theirs = reference_id(body.get("partOf"), "Organization") or body.get("id") or "(new)"
                raise Forbidden(
                    f"{what} is the directory entry of organisation {theirs}, not facility {own}'s; "
                    f"this account writes only Organization/{own} and organisations partOf it"
                )
            continue
        facility = relations.facility_of(body, check.read)
        if facility == own:
            continue
        if facility is not None:
            raise Forbidden(
                f"{what} belongs to facility {facility}; this account writes for facility {own} only"
            )
        if body.get("resourceType") == "Patient" or relations.patient_of(body) is not None:
            raise Forbidden(
                f"{what} is a resident's record that names no facility ({_FACILITY_ELEMENTS}); "
                f"this account writes only records of facility {own}"
            )


@dataclass
class FacilityGuard:
    """The write guard of one request by a bound ``system`` account (a :data:`WriteGuard`).

    It refuses what :func:`check_facility_write` refuses and reports each refusal to
    ``on_refusal``, so that the request can audit it (a batch answers 200 while some of its
    entries were refused).

    Args:
        relations: the runtime's relationship look-ups (``facility_of``, ``patient_of``).
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
