"""FHIR R4 knowledge shared by every module: systems, identifiers, validation, references, terminology.

The structure model is compiled from the official R4 definitions (``data/r4_model.json``, built by
``scripts/gen_fhir_model.py``) and loaded on first use, so importing this package stays cheap.
"""

from rhip.fhir.identifiers import (
    CitizenIdCheck,
    check_citizen_id,
    check_digit,
    make_citizen_id,
    normalize_citizen_id,
)
from rhip.fhir.model import is_resource_type, resource_types
from rhip.fhir.outcome import has_errors, issues_from_outcome, operation_outcome
from rhip.fhir.references import (
    ParsedReference,
    iter_references,
    parse_reference,
    rewrite_references,
    try_parse_reference,
)
from rhip.fhir.terminology import (
    LabTest,
    NotifiableDisease,
    code_system,
    icd9cm3_display,
    icd10_display,
    lab_test,
    lab_tests,
    lab_tests_value_set,
    notifiable_disease_for_icd10,
    notifiable_diseases,
)
from rhip.fhir.validation import ensure_valid, validate_bundle_references, validate_resource

__all__ = [
    "CitizenIdCheck",
    "LabTest",
    "NotifiableDisease",
    "ParsedReference",
    "check_citizen_id",
    "check_digit",
    "code_system",
    "ensure_valid",
    "has_errors",
    "icd9cm3_display",
    "icd10_display",
    "is_resource_type",
    "issues_from_outcome",
    "iter_references",
    "lab_test",
    "lab_tests",
    "lab_tests_value_set",
    "make_citizen_id",
    "normalize_citizen_id",
    "notifiable_disease_for_icd10",
    "notifiable_diseases",
    "operation_outcome",
    "parse_reference",
    "resource_types",
    "rewrite_references",
    "try_parse_reference",
    "validate_bundle_references",
    "validate_resource",
]
