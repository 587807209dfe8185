"""SQL the policy needs beyond single searches: a resident's MPI-linked records, a practitioner's residents.

A resident has one Patient record per facility that treated them; the MPI links them to one
resident (``mpi_record.resident_id``, also the id of the golden Patient). A care relationship with
any of those records extends to all of them (record sharing, 检验检查结果互认), so the policy asks
for the whole group. A practitioner's restricted search is narrowed in SQL to the Patient ids they
have a relationship with (:func:`care_patients_sql`, expanded over the MPI links). Each function
returns a statement with bound values and is executed by :mod:`rhip.security.relations`.

The MPI tables are read by name through :mod:`rhip.mpi.schema`, imported lazily: the policy works
(with single-record relationships only) on a store where the MPI was never set up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, false, select, union

#: The care relationships of a facility as (type, reference search parameter naming it): read by
#: :func:`care_patients_sql` and, one resident at a time, by :meth:`Relations._compute_care`. A
#: referral counts for the facility that requested it as for the one it is addressed to; a CareTeam
#: for an Organization that is one of its members (``participant.member``) and for the one that
#: manages it (``managingOrganization``, a parameter the platform adds to R4's).
ORG_LINKS = (
    ("Encounter", "service-provider"),
    ("ServiceRequest", "performer"),
    ("ServiceRequest", "requester"),
    ("EpisodeOfCare", "organization"),
    ("CareTeam", "participant"),
    ("CareTeam", "managing-organization"),
)
#: Where an organisation-level relationship may name one of the facility's posts or departments
#: instead of the Organization, as (type, reference search parameter, unit type): a PractitionerRole
#: counts for its ``organization``, a HealthcareService for its ``providedBy`` (one level), as for
#: the records a facility owns. ``Patient`` is the family-doctor contract (``generalPractitioner``);
#: a facility's PractitionerRole taking part in an Encounter (``participant.individual``) or a
#: member of a CareTeam (``participant.member``) gives the facility the relationship a Practitioner
#: named there gives the practitioner.
ORG_UNIT_LINKS = (
    ("ServiceRequest", "performer", "PractitionerRole"),
    ("ServiceRequest", "performer", "HealthcareService"),
    ("ServiceRequest", "requester", "PractitionerRole"),
    ("Patient", "general-practitioner", "PractitionerRole"),
    ("Encounter", "participant", "PractitionerRole"),
    ("CareTeam", "participant", "PractitionerRole"),
)
#: The search parameter naming a unit's facility (PractitionerRole.organization,
#: HealthcareService.providedBy).
UNIT_ORGANIZATION_PARAM = {"PractitionerRole": "organization", "HealthcareService": "organization"}
#: The same for a practitioner.
PRACTITIONER_LINKS = (
    ("Encounter", "participant"),
    ("ServiceRequest", "performer"),
    ("ServiceRequest", "requester"),
    ("CareTeam", "participant"),
)


def resident_of_sql(patient: str) -> Select[Any]:
    """The resident (golden Patient id) a source Patient record is linked to."""
    from rhip.mpi.schema import mpi_record

    return select(mpi_record.c.resident_id).where(mpi_record.c.record_id == patient)


def resident_rows_sql(patients: Iterable[str]) -> Select[Any]:
    """(record_id, resident_id) of these source records, for settling many groups at once."""
    from rhip.mpi.schema import mpi_record

    ids = sorted(set(patients))
    return select(mpi_record.c.record_id, mpi_record.c.resident_id).where(mpi_record.c.record_id.in_(ids))


def merged_into_sql(resident: str) -> Select[Any]:
    """Where a resident was merged to (its records moved there), if it was."""
    from rhip.mpi.schema import mpi_resident

    return select(mpi_resident.c.merged_into).where(mpi_resident.c.resident_id == resident)


def records_of_sql(residents: Iterable[str]) -> Select[Any]:
    """Every source record linked to any of these residents, with its resident."""
    from rhip.mpi.schema import mpi_record

    ids = sorted(set(residents))
    return select(mpi_record.c.record_id, mpi_record.c.resident_id).where(mpi_record.c.resident_id.in_(ids))


def same_person_records_sql(patient: str) -> Select[Any]:
    """Records linked to the same resident as ``patient`` that carry the same citizen ID number.

    A resident's own view follows the MPI only where the citizen ID — the root of trust of the
    resident's identity — agrees, so a wrong probabilistic link cannot show them a stranger's record.
    """
    from rhip.mpi.schema import mpi_record

    own = mpi_record.alias("own")
    return (
        select(mpi_record.c.record_id)
        .join(own, (own.c.resident_id == mpi_record.c.resident_id) & (own.c.cid == mpi_record.c.cid))
        .where(own.c.record_id == patient, own.c.cid.is_not(None), own.c.cid != "")
    )


def residents_of_sql(patients: Iterable[str]) -> Select[Any]:
    """The residents of these source records (for expanding a set of Patient ids over links)."""
    from rhip.mpi.schema import mpi_record

    ids = sorted(set(patients))
    return select(mpi_record.c.resident_id).where(mpi_record.c.record_id.in_(ids)).distinct()


def unit_link_param(link_param: str, unit: str) -> str:
    """The chained search parameter finding records whose ``link_param`` names a ``unit`` of a facility."""
    return f"{link_param}:{unit}.{UNIT_ORGANIZATION_PARAM[unit]}"


def _naming_units(res_type: str, link_param: str, unit: str, target: str, base_url: str) -> Select[Any]:
    """Current ``res_type`` resources whose ``link_param`` names a ``unit`` of facility ``target``.

    The same records as the chained search :func:`unit_link_param`, read the other way round: the
    facility's units first (few, through the index), then the references to them (an index range
    per unit), so a broad search never tests every record's unit on its own.
    """
    from rhip.store.index_schema import idx_reference
    from rhip.store.schema import resource
    from rhip.store.search import where_clauses
    from rhip.store.search_sql import param_clause

    link = idx_reference.alias()
    units = select(resource.c.res_id).where(
        *where_clauses(unit, [(UNIT_ORGANIZATION_PARAM[unit], target)], base_url)
    )
    naming = select(link.c.res_id).where(
        link.c.res_type == res_type,
        param_clause(link, res_type, link_param),
        link.c.target_type == unit,
        link.c.target_id.in_(units),
    )
    return select(resource.c.res_id).where(
        resource.c.res_type == res_type, resource.c.deleted == false(), resource.c.res_id.in_(naming)
    )


def _patients_of(res_type: str, link_param: str, target: str, base_url: str) -> Select[Any]:
    """Patient ids referenced (``patient`` parameter) by current ``res_type`` resources naming ``target``."""
    from rhip.store.schema import resource
    from rhip.store.search import where_clauses

    holders = select(resource.c.res_id).where(*where_clauses(res_type, [(link_param, target)], base_url))
    return _patients_in(res_type, holders)


def _patients_in(res_type: str, holders: Select[Any]) -> Select[Any]:
    """Patient ids referenced (``patient`` parameter) by the ``res_type`` resources ``holders``."""
    from rhip.store.index_schema import idx_reference
    from rhip.store.search_sql import param_clause

    ref = idx_reference.alias()
    return select(ref.c.target_id.label("patient")).where(
        ref.c.res_type == res_type,
        param_clause(ref, res_type, "patient"),
        ref.c.target_type == "Patient",
        ref.c.res_id.in_(holders),
    )


def care_patients_sql(
    practitioner: str | None, organization: str | None, limit: int, base_url: str = ""
) -> Select[Any] | None:
    """Patient ids a practitioner (or their facility) has a direct care relationship with.

    The same relationships as the per-resident check, read in one statement from the reference
    index: Encounters, referrals, EpisodesOfCare and CareTeams naming them, and family-doctor
    contracts; for a facility also the referrals, contracts, Encounters and CareTeams naming one of
    its PractitionerRoles or HealthcareServices (:data:`ORG_UNIT_LINKS`). ``limit`` caps the rows
    (the caller asks for one more than it will use, to learn that the set is too large to pass on).
    None when the principal has no binding at all.
    """
    from rhip.store.schema import resource
    from rhip.store.search import where_clauses

    parts: list[Select[Any]] = []
    for binding, links, rtype in (
        (organization, ORG_LINKS, "Organization"),
        (practitioner, PRACTITIONER_LINKS, "Practitioner"),
    ):
        if not binding:
            continue
        target = f"{rtype}/{binding}"
        parts += [_patients_of(t, p, target, base_url) for t, p in links]
        gp = where_clauses("Patient", [("general-practitioner", target)], base_url)
        parts.append(select(resource.c.res_id.label("patient")).where(*gp))
        if rtype == "Organization":
            for t, p, unit in ORG_UNIT_LINKS:
                holders = _naming_units(t, p, unit, target, base_url)
                parts.append(holders if t == "Patient" else _patients_in(t, holders))
    if not parts:
        return None
    combined = union(*parts).subquery()
    return select(combined.c.patient).order_by(combined.c.patient).limit(limit)
