"""The compiled R4 model against HL7's R4 JSON Schema: same resource types, element names, arrays.

The model comes from StructureDefinitions (scripts/gen_fhir_model.py); the schema is an
independent HL7 rendering of the same release, so agreement here catches generator mistakes and
non-R4 additions in the definition files. Known, deliberate differences are listed and pinned.
"""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rhip.fhir.model import (
    COMPLEX,
    STRING_REGEX,
    TypeTable,
    fullmatcher,
    is_resource_type,
    load_model,
    resource_types,
)

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "fhir-r4-schema" / "fhir.schema.json.gz"

#: Nested elements of type Element (not BackboneElement) have no modifierExtension in the
#: StructureDefinitions; the schema generator gave every nested object one.
SCHEMA_ONLY_MODIFIER_EXTENSION = {
    "Timing.repeat", "DataRequirement.codeFilter", "DataRequirement.dateFilter", "DataRequirement.sort",
    "Dosage.doseAndRate", "SubstanceAmount.referenceRange", "ElementDefinition.slicing",
    "ElementDefinition.slicing.discriminator", "ElementDefinition.base", "ElementDefinition.type",
    "ElementDefinition.example", "ElementDefinition.constraint", "ElementDefinition.binding",
    "ElementDefinition.mapping",
}  # fmt: skip
#: The definition files carry an R5-style EvidenceVariable.characteristic (see docs/validation.md).
DIVERGENT_TABLES = {"EvidenceVariable.characteristic"}


@cache
def _definitions() -> dict[str, Any]:
    with gzip.open(SCHEMA, "rb") as handle:
        schema = json.load(handle)
    return {"definitions": schema["definitions"], "resources": set(schema["discriminator"]["mapping"])}


def _ref(spec: dict[str, Any]) -> str | None:
    spec = spec.get("items", spec)
    ref = spec.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _compare(table: TypeTable, name: str, seen: set[str], problems: list[str]) -> None:
    if table.name in seen:
        return
    seen.add(table.name)
    definition = _definitions()["definitions"][name]
    props = definition.get("properties", {})
    ours = set(table.props) - {"resourceType"}
    theirs = {k for k in props if not k.startswith("_") and k != "resourceType"}
    if table.name in SCHEMA_ONLY_MODIFIER_EXTENSION:
        theirs.discard("modifierExtension")
    if table.name not in DIVERGENT_TABLES and ours != theirs:
        problems.append(
            f"{table.name}: only ours {sorted(ours - theirs)}, only schema {sorted(theirs - ours)}"
        )
    siblings = {k[1:] for k in props if k.startswith("_")}
    for key, prop in table.props.items():
        if key not in props:
            continue
        if prop.is_array != (props[key].get("type") == "array"):
            problems.append(f"{table.name}.{key}: array {prop.is_array}")
        if prop.ext_sibling != (key in siblings) and prop.type_name != "canonical":
            problems.append(f"{table.name}._{key}: primitive extension {prop.ext_sibling}")
        if prop.kind == COMPLEX and prop.min >= 1 and key not in definition.get("required", ()):
            problems.append(f"{table.name}.{key}: required")
        if prop.kind == COMPLEX and prop.table is not None:
            target = _ref(props[key])
            if target is None:
                problems.append(f"{table.name}.{key}: no schema type")
            else:
                _compare(prop.table, target, seen, problems)


def test_resource_types_match_schema() -> None:
    assert resource_types() == _definitions()["resources"]
    assert len(resource_types()) == 146
    assert is_resource_type("Patient") and not is_resource_type("DomainResource")
    assert not is_resource_type("SubscriptionStatus")  # R4B, in the definition files by mistake


def test_every_reachable_type_matches_schema() -> None:
    model = load_model()
    seen: set[str] = set()
    problems: list[str] = []
    for name in sorted(model.resource_types):
        _compare(model.types[name], name, seen, problems)
    assert len(seen) > 600
    assert problems == []


def test_canonical_primitive_extensions_allowed() -> None:
    """R4 JSON lets every primitive carry `_name`; the schema forgot it for canonical only."""
    prop = load_model().types["ElementDefinition.type"].props["profile"]
    assert prop.type_name == "canonical" and prop.ext_sibling


def test_choice_types_expanded_and_bindings_compiled() -> None:
    model = load_model()
    observation = model.types["Observation"].props
    assert observation["valueQuantity"].choice == "value"
    assert observation["valueQuantity"].table is model.types["Quantity"]
    assert observation["effectiveDateTime"].type_name == "dateTime"
    assert observation["status"].codes is not None and "final" in observation["status"].codes
    gender = model.types["Patient"].props["gender"].codes
    assert gender == frozenset({"male", "female", "other", "unknown"})
    assert model.types["Questionnaire.item"].props["item"].table is model.types["Questionnaire.item"]
    assert ("linkId", "_linkId") in model.types["Questionnaire.item"].required
    assert model.types["Extension"].props["url"].min == 1
    assert "valueMeta" not in model.types["Extension"].props


def test_model_file_is_small() -> None:
    path = Path(__file__).resolve().parents[2] / "src" / "rhip" / "fhir" / "data" / "r4_model.json"
    assert path.stat().st_size < 3_000_000


_STRING_CHARS = st.characters(blacklist_categories=("Cs",)) | st.sampled_from(
    " \t\r\n\x0b\x0c\x1c\x85\xa0\u3000"
)


@settings(max_examples=500, deadline=None)
@given(st.text(_STRING_CHARS, max_size=60))
def test_string_matcher_equals_the_r4_regex(text: str) -> None:
    """The substring test that stands in for the string/markdown regex accepts exactly what it does,
    but for the NUL character, which every matcher refuses."""
    regex = re.compile(STRING_REGEX, re.ASCII).fullmatch
    assert bool(fullmatcher(STRING_REGEX)(text)) == (bool(regex(text)) and "\x00" not in text)
    assert fullmatcher(r"\S*")("a b") is None  # other regexes are compiled as they are
    assert fullmatcher(r"\S*")("ab") and fullmatcher(r"\S*")("a\x00b") is None
