"""``_summary`` and ``_elements``: returning part of a resource, marked as SUBSETTED.

The summary elements come from the R4 StructureDefinitions (``isSummary``), compiled by
``scripts/gen_api_data.py`` into ``data/resource_elements.json`` so no definition file is read
at run time. Subsetting only ever removes top-level elements, which keeps it cheap and obviously
correct; the mandatory elements, ``id`` and ``meta`` always stay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

from rhip.errors import InvalidRequest

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
SUMMARY_MODES = ("true", "false", "text", "data", "count")
_ALWAYS = ("resourceType", "id", "meta")


@lru_cache(maxsize=1)
def resource_elements() -> dict[str, dict[str, list[str]]]:
    """Per resource type: all, summary and mandatory top-level element names (R4)."""
    text = resources.files("rhip.api").joinpath("data/resource_elements.json").read_text("utf-8")
    table: dict[str, dict[str, list[str]]] = json.loads(text)
    return table


def resource_types() -> list[str]:
    """Every concrete R4 resource type name."""
    return sorted(resource_elements())


def _matches(key: str, names: Iterable[str]) -> bool:
    for name in names:
        if name == key:
            return True
        if (
            name.endswith("[x]")
            and key.startswith(name[:-3])
            and key[len(name) - 3 : len(name) - 2].isupper()
        ):
            return True
    return False


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags if isinstance(t, dict)):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    resource["meta"] = meta
    return resource


def _keep(resource: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    keep = list(names)
    out = {k: v for k, v in resource.items() if k in _ALWAYS or _matches(k.lstrip("_"), keep)}
    return _tag(out)


def check_summary(value: str) -> str:
    """Validate a ``_summary`` value, naming the parameter when it is not one FHIR defines."""
    if value not in SUMMARY_MODES:
        raise InvalidRequest(
            f"_summary: unknown mode '{value[:20]}' (true|false|text|data|count)", expression=("_summary",)
        )
    return value


def parse_elements(value: str) -> list[str]:
    """The element names of an ``_elements`` value (``name,gender`` or ``Patient.name``)."""
    names = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        part = part.split(".", 1)[1] if "." in part and part[0].isupper() else part
        if not part.replace("[x]", "").replace("_", "").isalnum():
            raise InvalidRequest(
                f"_elements: '{part[:40]}' is not an element name", expression=("_elements",)
            )
        names.append(part.split(".", 1)[0])
    return names


def shape(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply ``_summary``/``_elements`` to one resource (returns a new dict when it subsets)."""
    res_type = resource.get("resourceType", "")
    info = resource_elements().get(res_type, {"all": [], "summary": [], "mandatory": []})
    if elements:
        return _keep(resource, [*elements, *info["mandatory"]])
    if summary in (None, "false", "count"):
        return resource
    if summary == "true":
        return _keep(resource, [*info["summary"], *info["mandatory"]])
    if summary == "text":
        return _keep(resource, ["text", *info["mandatory"]])
    if summary == "data":
        return _tag({k: v for k, v in resource.items() if k != "text"})
    return resource
