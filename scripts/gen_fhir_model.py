"""Compile the official FHIR R4 StructureDefinitions into the compact model the validator walks.

Developers run this once when the definitions change; the product never reads ../shared at run
time. It reads the R4 4.0.1 snapshots (profiles-resources.json, profiles-types.json) and the value
sets (valuesets.json plus the v2/v3 code systems) and writes src/rhip/fhir/data/r4_model.json:

* ``primitives``: per primitive type, the JSON type and the R4 regex of its value;
* ``types``: for every resource, complex datatype and backbone element (named by its path, e.g.
  ``Patient.contact``), its JSON properties ``[name, type, min, max, choice-group, value-set,
  target-types, flags]`` with choice types expanded (``valueQuantity``) and contentReference
  resolved to the referenced backbone type;
* ``valueSets``: the codes of every required binding on a ``code`` element whose value set can be
  expanded cheaply (explicit concepts or whole complete code systems, at most 2,000 codes).

Usage: ``.venv/bin/python scripts/gen_fhir_model.py [--source ../shared/fhir-r4] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_SOURCE = _ROOT.parent / "shared" / "fhir-r4"
_DEFAULT_OUT = _ROOT / "src" / "rhip" / "fhir" / "data" / "r4_model.json"
_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_MAX_CODES = 2000
_JSON_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "number",
}
#: Elements the Medplum copy of the definitions adds to R4 (its own Meta fields, and R5 elements
#: back-ported into a few resources); dropped with their children. The HL7 JSON Schema cross-check
#: in tests/fhir/test_fhir_model.py keeps this list honest.
_NOT_R4: frozenset[str] = frozenset(
    {
        "Meta.project", "Meta.author", "Meta.onBehalfOf", "Meta.account", "Meta.accounts",
        "Meta.compartment", "Meta.deleted", "Binary.url", "HealthcareService.offeredIn",
        "DeviceDefinition.bodySite", "DeviceDefinition.classification", "ObservationDefinition.publisher",
        "ResearchStudy.associatedParty", "ResearchStudy.classifier", "ResearchStudy.comparisonGroup",
        "ResearchStudy.descriptionSummary", "ResearchStudy.label", "ResearchStudy.name",
        "ResearchStudy.outcomeMeasure", "ResearchStudy.progressStatus", "ResearchStudy.recruitment",
        "ResearchStudy.region", "ResearchStudy.result", "ResearchStudy.studyDesign",
        "ResearchStudy.whyStopped", "ResearchStudy.objective.description",
    }
)  # fmt: skip


def _dropped(path: str) -> bool:
    """True for a non-R4 element or any element below one."""
    parts = path.split(".")
    return any(".".join(parts[:n]) in _NOT_R4 for n in range(2, len(parts) + 1))


#: Flag bits of an element: 1 = no ``_name`` primitive-extension sibling (Element.id, Extension.url).
_NO_EXT_SIBLING = 1


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        bundle = json.load(handle)
    return [entry["resource"] for entry in bundle["entry"]]


def _upper_first(code: str) -> str:
    return code[0].upper() + code[1:]


def _primitives(types: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """JSON type and value regex of every primitive type."""
    out: dict[str, dict[str, str]] = {}
    for sd in types:
        if sd.get("kind") != "primitive-type":
            continue
        regex = ""
        for element in sd["snapshot"]["element"]:
            if element["path"] != f"{sd['id']}.value":
                continue
            for ext in element["type"][0].get("extension", []):
                if ext["url"] == _REGEX_EXT:
                    regex = ext["valueString"]
        out[sd["id"]] = {"json": _JSON_TYPES.get(sd["id"], "string"), "regex": regex}
    return out


def _type_code(element: dict[str, Any], type_entry: dict[str, Any], is_resource: bool) -> tuple[str, int]:
    """FHIR type name of one type entry and its flags (System.* types become their fhir-type)."""
    code: str = type_entry["code"]
    if not code.startswith("http://hl7.org/fhirpath/System."):
        return code, 0
    fhir_type = "string"
    for ext in type_entry.get("extension", []):
        if ext["url"] == _FHIR_TYPE_EXT:
            fhir_type = ext["valueUrl"]
    if is_resource and element["path"].count(".") == 1 and element["path"].endswith(".id"):
        return "id", _NO_EXT_SIBLING  # Resource.id: the id pattern; no _id (as in the JSON schema)
    if element["path"] == "Extension.url":
        return fhir_type, 0  # the R4 JSON schema allows _url
    return fhir_type, _NO_EXT_SIBLING


def _targets(type_entry: dict[str, Any]) -> list[str] | None:
    """Allowed target resource types of a Reference (None = any)."""
    profiles = [p for p in type_entry.get("targetProfile", []) if p.startswith(_SD_PREFIX)]
    names = sorted({p[len(_SD_PREFIX) :] for p in profiles})
    if not names or "Resource" in names:
        return None
    return names


def _binding(element: dict[str, Any]) -> str | None:
    binding = element.get("binding") or {}
    if binding.get("strength") != "required" or "valueSet" not in binding:
        return None
    url: str = binding["valueSet"]
    return url.split("|", 1)[0]


def _elements_of(sd: dict[str, Any], bindings: set[str]) -> dict[str, dict[str, Any]]:
    """All type tables (the root and its backbone elements) of one StructureDefinition."""
    is_resource = sd["kind"] == "resource"
    root = sd["type"]
    tables: dict[str, dict[str, Any]] = {root: {"kind": sd["kind"], "elements": []}}
    for element in sd["snapshot"]["element"]:
        path: str = element["path"]
        max_ = element["max"]
        if "." not in path or max_ == "0" or _dropped(path):
            continue
        parent, name = path.rsplit(".", 1)
        if parent not in tables:
            raise SystemExit(f"{sd['id']}: element {path} has no parent table")
        rows = tables[parent]["elements"]
        if "contentReference" in element:
            ref = element["contentReference"].lstrip("#")
            rows.append([name, ref, element["min"], max_, None, None, None, 0])
            continue
        types = element.get("type", [])
        if (
            len(types) == 1
            and types[0]["code"] in ("BackboneElement", "Element")
            and not name.endswith("[x]")
        ):
            tables[path] = {"kind": "backbone", "elements": []}
            rows.append([name, path, element["min"], max_, None, None, None, 0])
            continue
        binding = _binding(element)
        if name.endswith("[x]"):
            base = name[:-3]
            for type_entry in types:
                if type_entry["code"] == "Meta":
                    continue  # not an R4 open type in HL7's JSON schema (valueMeta, fixedMeta, ...)
                code, flags = _type_code(element, type_entry, is_resource)
                rows.append(
                    [base + _upper_first(code), code, 0, max_, base, None, _targets(type_entry), flags]
                )
            if element["min"] >= 1:
                tables[parent].setdefault("requiredChoices", []).append(base)
            continue
        if len(types) != 1:
            raise SystemExit(f"{sd['id']}: {path} has {len(types)} types but is not a choice")
        code, flags = _type_code(element, types[0], is_resource)
        if code == "xhtml":
            flags |= _NO_EXT_SIBLING  # Narrative.div carries no extensions in JSON
        if binding and code == "code":
            bindings.add(binding)
        else:
            binding = None
        rows.append([name, code, element["min"], max_, None, binding, _targets(types[0]), flags])
    return tables


def _flatten(concepts: list[dict[str, Any]]) -> list[str]:
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_flatten(concept.get("concept", [])))
    return codes


def _expand(
    url: str, valuesets: dict[str, dict[str, Any]], codesystems: dict[str, dict[str, Any]], depth: int = 0
) -> list[str] | None:
    """The codes of a value set, or None when it cannot be enumerated cheaply."""
    vs = valuesets.get(url)
    if vs is None or depth > 5 or "compose" not in vs:
        return None
    codes: list[str] = []
    for include in vs["compose"].get("include", []):
        if "filter" in include:
            return None
        if "valueSet" in include:
            if "system" in include:
                return None
            for inner in include["valueSet"]:
                part = _expand(inner.split("|", 1)[0], valuesets, codesystems, depth + 1)
                if part is None:
                    return None
                codes.extend(part)
        if "concept" in include:
            codes.extend(c["code"] for c in include["concept"])
        elif "system" in include:
            cs = codesystems.get(include["system"])
            if cs is None or cs.get("content") != "complete":
                return None
            codes.extend(_flatten(cs.get("concept", [])))
    for exclude in vs["compose"].get("exclude", []):
        if "concept" not in exclude:
            return None
        dropped = {c["code"] for c in exclude["concept"]}
        codes = [c for c in codes if c not in dropped]
    unique = sorted(set(codes))
    if not unique or len(unique) > _MAX_CODES:
        return None
    return unique


def build_model(source: Path) -> dict[str, Any]:
    """The compact R4 model as a JSON-ready dict."""
    datatypes = _load(source / "profiles-types.json")
    resources = _load(source / "profiles-resources.json")
    terminology = _load(source / "valuesets.json")
    for extra in ("v3-codesystems.json", "v2-tables.json"):
        if (source / extra).exists():
            terminology += _load(source / extra)
    valuesets = {r["url"]: r for r in terminology if r["resourceType"] == "ValueSet"}
    codesystems = {r["url"]: r for r in terminology if r["resourceType"] == "CodeSystem"}
    bindings: set[str] = set()
    types: dict[str, Any] = {}
    # the Medplum copy adds R4B definitions (SubscriptionStatus, 4.3.0): keep R4 4.0.1 only
    datatypes = [sd for sd in datatypes if sd.get("fhirVersion", "4.0.1") == "4.0.1"]
    resources = [sd for sd in resources if sd.get("fhirVersion", "4.0.1") == "4.0.1"]
    for sd in datatypes:
        if sd.get("kind") == "complex-type" and (
            sd.get("derivation") == "specialization" or sd["id"] == "Element"
        ):
            types.update(_elements_of(sd, bindings))
    resource_names: list[str] = []
    for sd in resources:
        if sd["resourceType"] != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("derivation") != "specialization":
            continue  # the abstract root Resource has no derivation; DomainResource is abstract
        types.update(_elements_of(sd, bindings))
        if not sd.get("abstract"):
            resource_names.append(sd["type"])
    expanded: dict[str, list[str]] = {}
    for url in sorted(bindings):
        codes = _expand(url, valuesets, codesystems)
        if codes is not None:
            expanded[url] = codes
    for table in types.values():
        for row in table["elements"]:
            if row[5] is not None and row[5] not in expanded:
                row[5] = None
    return {
        "fhirVersion": "4.0.1",
        "primitives": _primitives(datatypes),
        "resources": sorted(resource_names),
        "types": dict(sorted(types.items())),
        "valueSets": expanded,
        "stats": {"requiredBindings": len(bindings), "expandedValueSets": len(expanded)},
    }


def main() -> None:
    """Command-line entry: build the model and write it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, default=_DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT)
    args = parser.parse_args()
    model = build_model(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model, ensure_ascii=False, separators=(",", ":"))
    args.out.write_text(text + "\n", encoding="utf-8")
    stats = model["stats"]
    print(
        f"wrote {args.out}: {len(model['resources'])} resources, {len(model['types'])} type tables, "
        f"{stats['expandedValueSets']}/{stats['requiredBindings']} required value sets, {len(text):,} bytes"
    )


if __name__ == "__main__":
    main()
