"""OperationOutcome built from errors and issues: R4 shape, severity order, valid by our own validator."""

from __future__ import annotations

from rhip.errors import InvalidResource, Issue, ResourceNotFound
from rhip.fhir import has_errors, issues_from_outcome, operation_outcome, validate_resource


def test_outcome_from_issues_is_valid_and_sorted() -> None:
    issues = [
        Issue("warning", "value", "reference to X is not allowed here", ("Observation.subject.reference",)),
        Issue("error", "required", "required element is missing", ("Observation.status",)),
    ]
    outcome = operation_outcome(issues)
    assert outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "required",
                "diagnostics": "required element is missing",
                "expression": ["Observation.status"],
            },
            {
                "severity": "warning",
                "code": "value",
                "diagnostics": "reference to X is not allowed here",
                "expression": ["Observation.subject.reference"],
            },
        ],
    }
    assert validate_resource(outcome) == []
    assert has_errors(issues_from_outcome(outcome))


def test_outcome_from_errors() -> None:
    outcome = operation_outcome(ResourceNotFound("Patient/9 not found"), outcome_id="q-1")
    assert outcome["id"] == "q-1"
    assert outcome["issue"] == [
        {"severity": "error", "code": "not-found", "diagnostics": "Patient/9 not found"}
    ]
    invalid = InvalidResource("bad", [Issue("error", "structure", "unknown element", ("Patient.foo",))])
    assert operation_outcome(invalid)["issue"][0]["expression"] == ["Patient.foo"]
    assert validate_resource(operation_outcome(invalid)) == []


def test_empty_outcome_and_unknown_codes() -> None:
    ok = operation_outcome([])
    assert ok["issue"] == [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    assert validate_resource(ok) == []
    odd = operation_outcome([Issue("bad-severity", "made-up", "x")])
    assert odd["issue"][0]["severity"] == "error" and odd["issue"][0]["code"] == "processing"
    assert not has_errors([Issue("warning", "value", "x")])
