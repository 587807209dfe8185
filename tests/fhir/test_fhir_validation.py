"""Each validation rule on small hand-made resources, with the exact issue code and element path."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhip.errors import InvalidResource
from rhip.fhir import ensure_valid, validate_bundle_references, validate_resource, validation
from rhip.fhir.model import MODE_DECIMAL, MODE_TEXT, MODE_TEXT_ARRAY, load_model

PATIENT_UUID = "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01"
OBS_UUID = "urn:uuid:1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"


def _issues(resource: Any, **kwargs: Any) -> list[tuple[str, str, str]]:
    return [(i.severity, i.code, i.expression[0]) for i in validate_resource(resource, **kwargs)]


def _observation(**extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "bp-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:30:00+08:00",
        "component": [
            {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "unit": "mmHg"}},
            {"code": {"text": "diastolic"}, "valueQuantity": {"value": 80.5, "unit": "mmHg"}},
        ],
    }
    resource.update(extra)
    return resource


def test_valid_resource_has_no_issues() -> None:
    assert _issues(_observation()) == []
    ensure_valid(_observation())


def test_nested_wrong_type_path() -> None:
    resource = _observation()
    resource["component"][1]["valueQuantity"]["value"] = "80"
    assert _issues(resource) == [("error", "structure", "Observation.component[1].valueQuantity.value")]


@pytest.mark.parametrize(
    ("element", "value", "code"),
    [
        ("birthDate", "2024-02-30", "value"),
        ("birthDate", "2023-02-29", "value"),
        ("birthDate", "1990-1-5", "value"),
        ("birthDate", 19900105, "structure"),
        ("active", "true", "structure"),
        ("gender", "M", "code-invalid"),
        ("gender", "", "value"),
        ("multipleBirthInteger", 2**31, "value"),
        ("multipleBirthInteger", 1.5, "structure"),
        ("id", "has space", "value"),
        ("id", "x" * 65, "value"),
        ("implicitRules", "has space", "value"),
    ],
)
def test_bad_primitive(element: str, value: Any, code: str) -> None:
    assert _issues({"resourceType": "Patient", element: value}) == [("error", code, f"Patient.{element}")]


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("birthDate", "2024-02-29"),
        ("birthDate", "1990"),
        ("birthDate", "1990-07"),
        ("deceasedDateTime", "2020-01-31T23:59:60Z"),
        ("active", False),
        ("multipleBirthInteger", -3),
        ("id", "a-B.9"),
    ],
)
def test_good_primitive(element: str, value: Any) -> None:
    assert _issues({"resourceType": "Patient", element: value}) == []


def test_strings_allow_cjk_and_ideographic_space_but_not_form_feed() -> None:
    name = {"text": "张　三", "family": "张", "given": ["三"]}
    assert _issues({"resourceType": "Patient", "name": [name]}) == []
    name["text"] = "张\x0c三"
    assert _issues({"resourceType": "Patient", "name": [name]}) == [
        ("error", "value", "Patient.name[0].text")
    ]


def test_decimal_accepts_int_and_float_not_bool() -> None:
    assert _issues(_observation(valueQuantity={"value": 1})) == []
    assert _issues(_observation(valueQuantity={"value": True})) == [
        ("error", "structure", "Observation.valueQuantity.value")
    ]


def test_unknown_elements_anywhere() -> None:
    resource = _observation(foo=1)
    resource["code"]["coding"][0]["bar"] = 2
    assert _issues(resource) == [
        ("error", "structure", "Observation.code.coding[0].bar"),
        ("error", "structure", "Observation.foo"),
    ]


def test_resource_type_must_be_known() -> None:
    assert _issues({"resourceType": "Patients"}) == [("error", "structure", "Patients")]
    assert _issues({"resourceType": "DomainResource"}) == [("error", "structure", "DomainResource")]
    assert _issues({"id": "x"}) == [("error", "structure", "Resource")]
    assert _issues(["not", "an", "object"]) == [("error", "structure", "Resource")]


def test_required_elements() -> None:
    resource = _observation()
    del resource["status"]
    del resource["component"][0]["code"]
    assert _issues(resource) == [
        ("error", "required", "Observation.component[0].code"),
        ("error", "required", "Observation.status"),
    ]


def test_required_primitive_satisfied_by_extension_only() -> None:
    absent = {
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
        ]
    }
    resource = _observation(_status=absent)
    del resource["status"]
    assert _issues(resource) == []


def test_required_choice() -> None:
    """Questionnaire.item.enableWhen.answer[x] is 1..1: one variant must be present."""
    condition: dict[str, Any] = {"question": "0", "operator": "exists"}
    item = {"linkId": "1", "type": "boolean", "enableWhen": [condition]}
    resource = {"resourceType": "Questionnaire", "status": "active", "item": [item]}
    assert _issues(resource) == [("error", "required", "Questionnaire.item[0].enableWhen[0].answer[x]")]
    condition["answerBoolean"] = True
    assert _issues(resource) == []


def test_one_choice_variant_only() -> None:
    resource = _observation(effectivePeriod={"start": "2024-03-01"})
    assert _issues(resource) == [("error", "structure", "Observation.effectivePeriod")]


def test_arrays_and_singletons() -> None:
    assert _issues({"resourceType": "Patient", "name": {"family": "王"}}) == [
        ("error", "structure", "Patient.name")
    ]
    assert _issues({"resourceType": "Patient", "gender": ["male"]}) == [
        ("error", "structure", "Patient.gender")
    ]
    assert _issues({"resourceType": "Patient", "name": []}) == [("error", "structure", "Patient.name")]
    assert _issues({"resourceType": "Patient", "name": [{}]}) == [("error", "structure", "Patient.name[0]")]
    assert _issues({"resourceType": "Patient", "maritalStatus": "M"}) == [
        ("error", "structure", "Patient.maritalStatus")
    ]


def test_primitive_extension_siblings() -> None:
    ext = {"extension": [{"url": "http://example.org/ext", "valueString": "x"}]}
    resource = {"resourceType": "Patient", "birthDate": "1970", "_birthDate": ext}
    assert _issues(resource) == []
    resource["_birthDate"] = {"extension": [{"valueString": "x"}]}
    assert _issues(resource) == [("error", "required", "Patient.birthDate.extension[0].url")]
    resource["_birthDate"] = "x"
    assert _issues(resource) == [("error", "structure", "Patient._birthDate")]
    resource = {"resourceType": "Patient", "_gender": ext}
    assert _issues(resource) == []
    assert _issues({"resourceType": "Patient", "_name": ext}) == [("error", "structure", "Patient._name")]


def test_primitive_arrays_with_nulls_need_parallel_extensions() -> None:
    ext = {"extension": [{"url": "http://example.org/ext", "valueString": "x"}]}
    name = {"given": ["建", None], "_given": [None, ext]}
    assert _issues({"resourceType": "Patient", "name": [name]}) == []
    name["_given"] = [None, None]
    assert _issues({"resourceType": "Patient", "name": [name]}) == [
        ("error", "structure", "Patient.name[0].given[1]"),
        ("error", "structure", "Patient.name[0].given[1]"),
    ]
    name = {"given": ["建", None]}
    assert _issues({"resourceType": "Patient", "name": [name]}) == [
        ("error", "structure", "Patient.name[0].given[1]")
    ]


def test_extension_needs_url_and_checks_value_type() -> None:
    resource = {
        "resourceType": "Patient",
        "extension": [{"url": "http://example.org/x", "valueInteger": "5"}],
    }
    assert _issues(resource) == [("error", "structure", "Patient.extension[0].valueInteger")]


def test_extension_value_or_children_not_both() -> None:
    """ext-1: an extension carries a value or nested extensions, exactly one of the two."""
    nested = {"url": "http://example.org/a", "extension": [{"url": "b", "valueCode": "x"}]}
    assert _issues({"resourceType": "Patient", "extension": [nested]}) == []
    both = dict(nested, valueString="y")
    assert _issues({"resourceType": "Patient", "extension": [both]}) == [
        ("error", "invariant", "Patient.extension[0]")
    ]
    neither = {"url": "http://example.org/a"}
    assert _issues({"resourceType": "Patient", "modifierExtension": [neither]}) == [
        ("error", "invariant", "Patient.modifierExtension[0]")
    ]
    ext = {"extension": [{"url": "http://example.org/a"}]}
    assert _issues({"resourceType": "Patient", "birthDate": "1970", "_birthDate": ext}) == [
        ("error", "invariant", "Patient.birthDate.extension[0]")
    ]


def test_reference_formats() -> None:
    good = [
        "Patient/p1",
        "Patient/p1/_history/3",
        "http://hospital.example.cn/fhir/Patient/123",
        "urn:uuid:7f2a4e1c-0b7d-4c55-9d7e-3c1f2a9b8e01",
        "urn:oid:2.16.156.10011.1.3",
        "Patient?identifier=urn:oid:2.16.156.10011.1.3|11010519491231002X",
    ]
    for value in good:
        assert _issues(_observation(subject={"reference": value})) == [], value
    for value in ["Patient/", "patient/1", "Foo/1", "Patient/a b", "urn:uuid:not-a-uuid", "1234", ""]:
        issues = _issues(_observation(subject={"reference": value}))
        assert issues == [("error", "value", "Observation.subject.reference")], value


def test_reference_target_type_is_a_warning() -> None:
    resource = _observation(subject={"reference": "Practitioner/d1"})
    assert _issues(resource) == [("warning", "value", "Observation.subject.reference")]
    ensure_valid(resource)
    resource = _observation(subject={"type": "Medication", "identifier": {"value": "x"}})
    assert _issues(resource) == [("warning", "value", "Observation.subject.type")]


def test_contained_resources_and_local_references() -> None:
    contained: dict[str, Any] = {"resourceType": "Patient", "id": "pat", "gender": "female"}
    resource = _observation(contained=[contained], subject={"reference": "#pat"})
    assert _issues(resource) == []
    resource["subject"]["reference"] = "#other"
    assert _issues(resource) == [("error", "value", "Observation.subject.reference")]
    resource["subject"]["reference"] = "#pat"
    contained["gender"] = "F"
    assert _issues(resource) == [("error", "code-invalid", "Observation.contained[0].gender")]
    contained["gender"] = "female"
    contained["contained"] = [{"resourceType": "Organization", "id": "o"}]
    assert _issues(resource) == [("error", "structure", "Observation.contained[0].contained")]


def _transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    method = {"method": "POST", "url": resource["resourceType"]}
    return {"fullUrl": full_url, "resource": resource, "request": method}


def test_bundle_entries_validated_with_paths() -> None:
    bad = _observation(subject={"reference": PATIENT_UUID})
    bad["status"] = "finished"
    bundle = _transaction([_entry(PATIENT_UUID, {"resourceType": "Patient"}), _entry(OBS_UUID, bad)])
    assert _issues(bundle) == [("error", "code-invalid", "Bundle.entry[1].resource.status")]
    del bundle["entry"][0]["request"]
    assert ("error", "required", "Bundle.entry[0].request") in _issues(bundle)


def test_bundle_references_must_resolve_to_full_urls() -> None:
    obs = _observation(subject={"reference": PATIENT_UUID})
    bundle = _transaction([_entry(PATIENT_UUID, {"resourceType": "Patient"}), _entry(OBS_UUID, obs)])
    assert validate_bundle_references(bundle) == []
    obs["subject"]["reference"] = "urn:uuid:00000000-0000-4000-8000-000000000000"
    obs["performer"] = [{"reference": "Practitioner/known-on-server"}]
    issues = validate_bundle_references(bundle)
    assert [(i.code, i.expression) for i in issues] == [
        ("not-found", ("Bundle.entry[1].resource.subject.reference",))
    ]
    bundle["entry"].append(_entry(PATIENT_UUID, {"resourceType": "Patient"}))
    codes = [(i.code, i.expression[0]) for i in validate_bundle_references(bundle)]
    assert ("duplicate", "Bundle.entry[2].fullUrl") in codes


def test_path_prefix_replaces_the_root() -> None:
    resource = _observation(status="x")
    assert _issues(resource, path_prefix="Bundle.entry[7].resource") == [
        ("error", "code-invalid", "Bundle.entry[7].resource.status")
    ]


def test_ensure_valid_raises_with_all_issues_and_no_values() -> None:
    secret = "11010519491231002X"
    resource = {"resourceType": "Patient", "birthDate": secret, "gender": secret, "foo": secret}
    with pytest.raises(InvalidResource) as caught:
        ensure_valid(resource)
    error = caught.value
    assert error.status == 422
    assert {i.expression[0] for i in error.issues} == {"Patient.birthDate", "Patient.gender", "Patient.foo"}
    assert secret not in str(error) and all(secret not in i.diagnostics for i in error.issues)


def test_validation_caches_do_not_hide_errors_on_repeat() -> None:
    """A coded value that failed once must fail again (only valid values are memoised)."""
    coding = {"system": "http://loinc.org", "code": "85354-9", "userSelected": "yes"}
    for _ in range(3):
        resource = _observation(code={"coding": [dict(coding)]})
        assert _issues(resource) == [("error", "structure", "Observation.code.coding[0].userSelected")]


def test_cached_coded_value_still_checks_contained_references() -> None:
    """A CodeableConcept found valid in one resource must not skip the #id check in another."""
    ext = [{"url": "http://example.org/source", "valueReference": {"reference": "#src"}}]
    concept = {"text": "bp", "extension": ext}
    with_contained = _observation(code=concept, contained=[{"resourceType": "Device", "id": "src"}])
    assert _issues(with_contained) == []
    assert _issues(_observation(code=concept)) == [
        ("error", "value", "Observation.code.extension[0].valueReference.reference")
    ]


def test_absurdly_deep_nesting_is_an_issue_not_a_crash() -> None:
    """Nested extensions deeper than the interpreter's recursion limit must not raise."""
    ext: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(1000):
        ext = {"url": "http://example.org/n", "extension": [ext]}
    issues = validate_resource({"resourceType": "Patient", "extension": [ext]})
    assert [(i.code, i.expression) for i in issues] == [("too-long", ("Patient",))]


@given(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32))
@settings(max_examples=300, deadline=None)
def test_dates_accepted_exactly_when_they_exist(year: int, month: int, day: int) -> None:
    """The R4 date regex plus the calendar check agree with the Gregorian calendar."""
    text = f"{year:04d}-{month:02d}-{day:02d}"
    try:
        real = date(year, month, day) is not None
    except ValueError:
        real = False
    assert (_issues({"resourceType": "Patient", "birthDate": text}) == []) == real
    stamp = f"{text}T23:59:59+08:00"
    assert (_issues({"resourceType": "Patient", "deceasedDateTime": stamp}) == []) == real


_JSON_SCALARS = (
    st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from("\t\n\x0b\x0c\u3000"), max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        _JSON_SCALARS,
        st.lists(_JSON_SCALARS, max_size=3),
        st.dictionaries(st.text(max_size=3), _JSON_SCALARS, max_size=2),
    )
)
def test_inline_text_and_decimal_checks_report_what_the_general_path_does(value: Any) -> None:
    """The hot loop's inline checks (string/markdown values and arrays, decimals) equal the general path's."""
    model = load_model()
    for table_name, key, mode in (
        ("HumanName", "family", MODE_TEXT),
        ("Annotation", "text", MODE_TEXT),
        ("HumanName", "given", MODE_TEXT_ARRAY),
        ("Quantity", "value", MODE_DECIMAL),
    ):
        table = model.types[table_name]
        prop = table.props[key]
        assert prop.mode == mode
        inline, general = validation._Context(), validation._Context()
        validation._walk({key: value}, table, table_name, inline)
        validation._general(prop, key, value, {key: value}, table_name, general)
        assert inline.issues == general.issues


@pytest.mark.parametrize(
    ("element", "value", "path"),
    [
        ("id", "a\x00b", "Patient.id"),
        ("gender", "ma\x00le", "Patient.gender"),
        ("birthDate", "1970\x00", "Patient.birthDate"),
        ("name", [{"given": ["Lan", "x\x00"]}], "Patient.name[0].given[1]"),
        ("identifier", [{"system": "urn:oid:1.2\x00", "value": "1"}], "Patient.identifier[0].system"),
        ("text", {"status": "generated", "div": "<div>\x00</div>"}, "Patient.text.div"),
    ],
)
def test_a_nul_character_is_refused_in_every_kind_of_string(element: str, value: object, path: str) -> None:
    """U+0000 is refused in strings, codes, ids, uris, dates and xhtml, with the element's path."""
    issues = validate_resource({"resourceType": "Patient", element: value})
    assert [i.expression for i in issues] == [(path,)]
    if element != "birthDate":  # a date with a NUL is simply not a date
        assert "NUL" in issues[0].diagnostics
