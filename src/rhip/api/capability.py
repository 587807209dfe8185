"""The CapabilityStatement, generated from the code rather than written by hand.

Resource types and their search parameters come from the search registry
(:mod:`rhip.fhir.search_params`), so a parameter a region registers appears here, and one the
engine cannot index never does. Interactions and operations are the ones the routes of this
package serve; a test walks the statement and calls every advertised interaction and parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from rhip import __version__
from rhip.api.http import base_url
from rhip.api.shaping import resource_types
from rhip.fhir import systems

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
#: Search controls every type accepts besides its own parameters (the API or the engine answers them).
RESULT_CONTROLS = (
    "_count",
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_has",
    "_format",
)
OPERATIONS = {
    "everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "lastn": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
    "prior-results": systems.PRIOR_RESULTS_OPERATION,
}
#: Operations each resource type serves (Patient's $everything and $prior-results, ...).
TYPE_OPERATIONS = {
    "Patient": ("everything", "prior-results"),
    "Observation": ("lastn",),
    "ServiceRequest": ("prior-results",),
}
_SPEC = "http://hl7.org/fhir/SearchParameter/"


def _search_params(res_type: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(searchParam entries, searchInclude) of one type."""
    from rhip.fhir.search_params import COMMON_PARAMS, search_params_for

    params = [
        {"name": name, "definition": f"{_SPEC}Resource-{name.lstrip('_')}", "type": kind}
        for name, kind in COMMON_PARAMS.items()
    ]
    includes = []
    for name, spec in sorted(search_params_for(res_type).items()):
        entry: dict[str, Any] = {"name": name, "type": spec.type}
        if spec.url:
            entry["definition"] = spec.url
        params.append(entry)
        if spec.type == "reference":
            includes.append(f"{res_type}:{name}")
    return params, includes


def _revincludes(types: list[str]) -> dict[str, list[str]]:
    """For each type, the ``Source:param`` pairs whose references may point at it."""
    from rhip.fhir.search_params import search_params_for

    rev: dict[str, list[str]] = {t: [] for t in types}
    for source in types:
        for name, spec in sorted(search_params_for(source).items()):
            if spec.type != "reference":
                continue
            for target in spec.targets or ():
                if target in rev:
                    rev[target].append(f"{source}:{name}")
    return rev


def _resource_entry(res_type: str, revinclude: list[str]) -> dict[str, Any]:
    params, includes = _search_params(res_type)
    entry: dict[str, Any] = {
        "type": res_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical", "local"],
        "searchInclude": [*includes, "*"] if includes else [],
        "searchRevInclude": revinclude,
        "searchParam": params,
    }
    if not entry["searchInclude"]:
        del entry["searchInclude"]
    if not entry["searchRevInclude"]:
        del entry["searchRevInclude"]
    if res_type in TYPE_OPERATIONS:
        entry["operation"] = [{"name": op, "definition": OPERATIONS[op]} for op in TYPE_OPERATIONS[res_type]]
    return entry


def statement_body() -> dict[str, Any]:
    """The server-independent part of the CapabilityStatement (computed once per registry state)."""
    types = resource_types()
    rev = _revincludes(types)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "experimental": False,
        "date": datetime.now(UTC).date().isoformat(),
        "publisher": "RHIP",
        "kind": "instance",
        "software": {"name": "RHIP", "version": __version__},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "FHIR R4 REST API of the Regional Health Information Platform. "
                "Every type also takes the result controls " + ", ".join(RESULT_CONTROLS) + "; "
                "paging is by _count and _offset; _summary=true|text|data|count.",
                "resource": [_resource_entry(t, rev[t]) for t in types],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "searchParam": [
                    {"name": "_type", "type": "token", "definition": f"{_SPEC}Resource-type"},
                    {"name": "_id", "type": "token", "definition": f"{_SPEC}Resource-id"},
                    {"name": "_lastUpdated", "type": "date", "definition": f"{_SPEC}Resource-lastUpdated"},
                ],
                "operation": [{"name": "validate", "definition": OPERATIONS["validate"]}],
            }
        ],
    }


def capability_statement(request: Request) -> dict[str, Any]:
    """The CapabilityStatement as served to this request (implementation URL = this server's base)."""
    from rhip.fhir.search_params import registry_version

    state = request.app.state
    cached = getattr(state, "rhip_capability", None)
    version = registry_version()
    if cached is None or cached[0] != version:
        cached = (version, statement_body())
        state.rhip_capability = cached
    body = dict(cached[1])
    body["implementation"] = {"description": "RHIP FHIR server", "url": base_url(request)}
    return body
