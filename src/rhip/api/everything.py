"""``Patient/[id]/$everything``: the patient, every resource in their compartment, and what those cite.

The compartment comes from HL7's Patient CompartmentDefinition (``data/patient_compartment.json``,
derived by ``scripts/gen_api_data.py``): for each resource type, the search parameters that link
it to the patient. Each is run as an ordinary reference search, so ``$everything`` sees exactly
what search sees, deleted resources excluded. Referenced resources outside the compartment
(practitioners, organisations, medications, locations) are added once each.

A resident has one source Patient per facility, linked by the MPI to one golden Patient
(:mod:`rhip.mpi`). ``$everything`` on a golden Patient gathers the whole resident: the golden
Patient, every linked source Patient, and the compartments of all of them, deduplicated. On a
source Patient it stays that record's own compartment unless ``_mdm=true`` asks for the whole
resident (the parameter HAPI FHIR gives the same expansion); ``_mdm=false`` keeps a golden
Patient to itself. The compartment searches take all the resident's Patient ids at once (one
OR'ed reference per search parameter), so a resident costs about what one record costs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from rhip.errors import InvalidRequest, NotSupported, RhipError

if TYPE_CHECKING:
    from rhip.store import Store

logger = logging.getLogger(__name__)
_PAGE = 500
#: Upper bound on resources one $everything collects before paging is applied.
MAX_RESOURCES = 20_000


@lru_cache(maxsize=1)
def patient_compartment() -> dict[str, list[str]]:
    """Resource type -> search parameters that place it in a Patient's compartment (HL7 R4)."""
    text = resources.files("rhip.api").joinpath("data/patient_compartment.json").read_text("utf-8")
    table: dict[str, list[str]] = json.loads(text)
    return table


def references(node: Any) -> Iterator[str]:
    """Every ``reference`` string anywhere in a resource."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            if isinstance(value, dict | list):
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def _search_all(store: Store, res_type: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        try:
            result = store.search(res_type, params, count=_PAGE, offset=offset)
        except (InvalidRequest, NotSupported) as exc:
            logger.debug("compartment search %s?%s skipped: %s", res_type, params[0][0], exc.diagnostics)
            return
        yield from result.matches
        if not result.has_next or not result.matches:
            return
        offset += _PAGE


#: Narrows a list of resources to those the caller may see (``rhip.api.access.filter_results``).
Visible = Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]


def everything(
    store: Store,
    patient_id: str,
    *,
    since: str | None = None,
    types: set[str] | None = None,
    resident: bool | None = None,
    visible: Visible | None = None,
) -> list[dict[str, Any]]:
    """The patient followed by every compartment resource and the resources they reference.

    Args:
        store: the store to read.
        patient_id: the Patient id (ResourceNotFound/ResourceGone when absent or deleted).
        since: only resources updated at or after this instant (``_since``).
        types: only these resource types (``_type``); the Patients are always included.
        resident: whether to gather the patient's whole MPI resident (golden Patient and every
            linked source record); None (the default) does so for a golden Patient only.
        visible: the caller's access filter; see :func:`everything_of`.
    """
    patient = store.read("Patient", patient_id)
    if resident is None:
        resident = _is_golden(patient)
    patients = [patient, *linked_patients(store, patient_id)] if resident else [patient]
    return everything_of(store, patients, since=since, types=types, visible=visible)


def everything_of(
    store: Store,
    patients: Sequence[dict[str, Any]],
    *,
    since: str | None = None,
    types: set[str] | None = None,
    visible: Visible | None = None,
) -> list[dict[str, Any]]:
    """These Patients (in order), then the compartments of all of them and what those reference.

    Each resource appears once however many of the Patients it names. With ``visible``, only what
    it keeps is returned, and references are followed from kept resources only: a record hidden
    from the caller must not reveal, through the practitioner or facility it cites, that it exists.

    Raises:
        InvalidRequest: (too-costly) more than :data:`MAX_RESOURCES` resources.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for patient in patients:
        found.setdefault(("Patient", str(patient["id"])), patient)
    _add_compartments(store, found, types, since)
    if visible is not None:
        found = {(str(r["resourceType"]), str(r["id"])): r for r in visible(list(found.values()))}
    _add_referenced(store, found, types, since)
    gathered = list(found.values())
    return visible(gathered) if visible is not None else gathered


def _add_compartments(
    store: Store, found: dict[tuple[str, str], dict[str, Any]], types: set[str] | None, since: str | None
) -> None:
    """Every resource in the compartment of any Patient in ``found``, by OR'ed reference searches."""
    extra = [("_lastUpdated", f"ge{since}")] if since else []
    target = ",".join(f"Patient/{pid}" for _, pid in found)
    for res_type, names in patient_compartment().items():
        if types is not None and res_type not in types:
            continue
        for name in names:
            for res in _search_all(store, res_type, [(name, target), *extra]):
                found.setdefault((res_type, str(res.get("id"))), res)
                if len(found) >= MAX_RESOURCES:
                    raise InvalidRequest(
                        f"$everything: more than {MAX_RESOURCES} resources; narrow with _type or _since",
                        code="too-costly",
                    )


def linked_patients(store: Store, patient_id: str) -> list[dict[str, Any]]:
    """The other Patients of the MPI resident ``patient_id`` belongs to: golden first, then sources.

    Empty when the MPI does not know the id. Deleted records are left out.
    """
    from rhip.mpi.service import ready, resident_records

    ready(store.engine)
    with store.engine.connect() as conn:
        group = resident_records(conn, patient_id)
    if group is None:
        return []
    resident, records = group
    out = []
    for pid in [resident, *records]:
        if pid == patient_id:
            continue
        try:
            out.append(store.read("Patient", pid))
        except RhipError:
            continue
    return out


def parse_mdm(value: str) -> bool:
    """The ``_mdm`` parameter of ``$everything``: ``true`` or ``false``."""
    flag = value.strip().lower()
    if flag not in ("true", "false"):
        raise InvalidRequest(f"_mdm: expected true or false, got '{value[:20]}'", expression=("_mdm",))
    return flag == "true"


def _is_golden(patient: dict[str, Any]) -> bool:
    from rhip.mpi.golden import is_golden

    return is_golden(patient)


def _updated_since(resource: dict[str, Any], since: str) -> bool:
    stamp = str((resource.get("meta") or {}).get("lastUpdated", ""))
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return True
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return when >= start


def _add_referenced(
    store: Store, found: dict[tuple[str, str], dict[str, Any]], types: set[str] | None, since: str | None
) -> None:
    compartment = patient_compartment()
    wanted: set[tuple[str, str]] = set()
    for res in found.values():
        for ref in references(res):
            parts = ref.split("/")
            if len(parts) != 2 or parts[0] in compartment or (parts[0], parts[1]) in found:
                continue
            if types is None or parts[0] in types:
                wanted.add((parts[0], parts[1]))
    for res_type, res_id in sorted(wanted):
        try:
            resource = store.read(res_type, res_id)
        except RhipError:
            continue
        if since is None or _updated_since(resource, since):
            found[(res_type, res_id)] = resource
