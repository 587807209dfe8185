"""``Patient/[id]/$everything``: the patient, every resource in their compartment, and what those cite.

The compartment comes from HL7's Patient CompartmentDefinition (``data/patient_compartment.json``,
derived by ``scripts/gen_api_data.py``): for each resource type, the search parameters that link
it to the patient. Each is run as an ordinary reference search, so ``$everything`` sees exactly
what search sees, deleted resources excluded. Referenced resources outside the compartment
(practitioners, organisations, medications, locations) are added once each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
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


def everything(
    store: Store, patient_id: str, *, since: str | None = None, types: set[str] | None = None
) -> list[dict[str, Any]]:
    """The patient followed by every compartment resource and the resources they reference.

    Args:
        store: the store to read.
        patient_id: the Patient id (ResourceNotFound/ResourceGone when absent or deleted).
        since: only resources updated at or after this instant (``_since``).
        types: only these resource types (``_type``); the patient is always included.
    """
    patient = store.read("Patient", patient_id)
    found: dict[tuple[str, str], dict[str, Any]] = {("Patient", patient_id): patient}
    extra = [("_lastUpdated", f"ge{since}")] if since else []
    target = f"Patient/{patient_id}"
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
    _add_referenced(store, found, types, since)
    return list(found.values())


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
