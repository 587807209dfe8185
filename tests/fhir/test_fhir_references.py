"""Reference parsing, model-driven iteration over Reference elements, and placeholder rewriting."""

from __future__ import annotations

from typing import Any

import pytest

from rhip.errors import InvalidResource
from rhip.fhir import iter_references, parse_reference, rewrite_references, try_parse_reference


@pytest.mark.parametrize(
    ("value", "kind", "rtype", "rid", "version"),
    [
        ("Patient/123", "relative", "Patient", "123", None),
        ("Observation/o.1/_history/2", "relative", "Observation", "o.1", "2"),
        ("https://fhir.hospital.cn/r4/Patient/9", "absolute", "Patient", "9", None),
        (
            "http://hl7.org/fhir/ValueSet/administrative-gender",
            "absolute",
            "ValueSet",
            "administrative-gender",
            None,
        ),
        (
            "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01",
            "uuid",
            None,
            "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01",
            None,
        ),
        ("urn:oid:1.2.156.112604", "oid", None, "urn:oid:1.2.156.112604", None),
        ("#med1", "contained", None, "med1", None),
        ("#", "contained", None, "", None),
    ],
)
def test_parse_reference(
    value: str, kind: str, rtype: str | None, rid: str | None, version: str | None
) -> None:
    parsed = parse_reference(value)
    assert (parsed.kind, parsed.resource_type, parsed.id, parsed.version) == (kind, rtype, rid, version)


def test_parse_absolute_and_conditional_details() -> None:
    parsed = parse_reference("https://fhir.hospital.cn/r4/Patient/9")
    assert parsed.base == "https://fhir.hospital.cn/r4" and parsed.relative == "Patient/9"
    other = parse_reference("https://example.org/some/page")
    assert other.kind == "absolute" and other.resource_type is None and other.relative is None
    conditional = parse_reference("Patient?identifier=urn:oid:2.16.156.10011.1.3|110105194912310021")
    assert conditional.kind == "conditional" and conditional.resource_type == "Patient"
    assert conditional.query == "identifier=urn:oid:2.16.156.10011.1.3|110105194912310021"


@pytest.mark.parametrize(
    "value", ["", "Patient", "Patient/", "Pat ient/1", "Unknown/1", "urn:uuid:XYZ", "#a b", "a/b/c"]
)
def test_invalid_references(value: str) -> None:
    assert try_parse_reference(value) is None
    with pytest.raises(InvalidResource) as caught:
        parse_reference(value)
    if value:
        assert value not in str(caught.value)


def _encounter() -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01"},
        "participant": [{"individual": {"reference": "Practitioner/d1", "display": "Dr"}}],
        "extension": [{"url": "http://example.org/ref", "valueReference": {"reference": "Organization/o1"}}],
        "contained": [
            {
                "resourceType": "Location",
                "id": "loc",
                "managingOrganization": {"reference": "Organization/o2"},
            }
        ],
        "location": [{"location": {"reference": "#loc"}}],
        "serviceProvider": {"identifier": {"system": "urn:oid:2.16.156.10011.1.5", "value": "H1"}},
    }


def test_iter_references_walks_the_model() -> None:
    found = {path: ref.get("reference") for path, ref in iter_references(_encounter())}
    assert found == {
        "Encounter.subject": "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01",
        "Encounter.participant[0].individual": "Practitioner/d1",
        "Encounter.extension[0].valueReference": "Organization/o1",
        "Encounter.contained[0].managingOrganization": "Organization/o2",
        "Encounter.location[0].location": "#loc",
        "Encounter.serviceProvider": None,
    }


def test_uri_elements_named_reference_are_not_references() -> None:
    """DetectedIssue.reference is a uri, not a Reference: it must not be yielded."""
    issue = {"resourceType": "DetectedIssue", "status": "final", "reference": "http://example.org/doc"}
    assert list(iter_references(issue)) == []


def test_iter_references_into_bundle_entries_and_custom_root() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _encounter()}]}
    paths = [path for path, _ in iter_references(bundle)]
    assert "Bundle.entry[0].resource.participant[0].individual" in paths
    paths = [path for path, _ in iter_references(_encounter(), path="Bundle.entry[4].resource")]
    assert paths[0] == "Bundle.entry[4].resource.subject"


def test_rewrite_references_in_place() -> None:
    encounter = _encounter()
    count = rewrite_references(encounter, {"urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01": "Patient/42"})
    assert count == 1
    assert encounter["subject"] == {"reference": "Patient/42"}
    assert rewrite_references(encounter, {"urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01": "Patient/43"}) == 0


def test_iter_references_ignores_non_resources() -> None:
    assert list(iter_references({"resourceType": "Reference", "reference": "Patient/1"})) == []
    assert list(iter_references({"resourceType": "Nope"})) == []


def test_references_hidden_in_extensions_of_coded_values_are_found() -> None:
    """Coded values are skipped quickly unless an extension inside them holds a valueReference."""
    source = {"url": "http://example.org/source", "valueReference": {"reference": "Device/d1"}}
    concept = {"coding": [{"system": "http://loinc.org", "code": "8867-4", "extension": [source]}]}
    observation = {"resourceType": "Observation", "status": "final", "code": concept}
    found = [(path, ref.get("reference")) for path, ref in iter_references(observation)]
    assert found == [("Observation.code.coding[0].extension[0].valueReference", "Device/d1")]
    concept["coding"][0]["extension"][0] = {"url": "http://example.org/x", "valueString": "Reference"}
    assert list(iter_references(observation)) == []
