"""OperationDefinitions of the platform's own operations, served where their canonical URLs point.

The CapabilityStatement names each operation's definition by canonical URL
(:data:`rhip.api.capability.OPERATIONS`). The operations FHIR defines (``$everything``,
``$validate``, ``$lastn``) are defined at hl7.org; the platform's own (``$prior-results``) have
their canonical URL under the region's ``identifier_base``
(``{identifier_base}/OperationDefinition/{id}``, :mod:`rhip.fhir.systems`), so a client resolves
one with ``GET [base]/OperationDefinition/{id}`` here. They are generated from the code like the
CapabilityStatement (not stored): the literal routes take precedence over the store's
``OperationDefinition/{id}``, and writes to those ids are refused (405), since the definition
belongs to the server, not to the data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from rhip import __version__
from rhip.api import access
from rhip.api.deps import begin, store_work
from rhip.api.http import FhirResponse, check_format
from rhip.api.routing import FhirRoute
from rhip.errors import NotSupported
from rhip.fhir import systems

router = APIRouter(route_class=FhirRoute)

_SD = "http://hl7.org/fhir/StructureDefinition/"
#: When the definitions below last changed (their ``date``).
DEFINITIONS_DATE = "2026-11-23"

#: (name, min, max, type, documentation) of a part; a type of ``Reference/X`` targets resource X.
_Part = tuple[str, int, str, str, str]

_TEST_PARTS: tuple[_Part, ...] = (
    (
        "code",
        1,
        "1",
        "Coding",
        "The requested test (LOINC display in Chinese when the terminology knows it).",
    ),
    ("window", 0, "1", "Duration", "How long a result of this test is recognised (days); absent: no window."),
    ("group", 0, "1", "string", "The window's test group, Chinese and English."),
    ("found", 1, "1", "boolean", "Whether the caller may see any result of this test."),
    ("result", 0, "1", "Reference/Observation", "The latest result."),
    ("facility", 0, "1", "Reference/Organization", "Its facility (performer, else the Encounter's)."),
    ("date", 0, "1", "dateTime", "Its effective[x]."),
    ("value", 0, "1", "Type", "Its value[x], as stored."),
    ("recognised", 0, "1", "boolean", "True when the result is no older than the window."),
)
_EXAMINATION_PARTS: tuple[_Part, ...] = (
    (
        "modality",
        1,
        "1",
        "Coding",
        "The requested modality (DICOM, http://dicom.nema.org/resources/ontology/DCM).",
    ),
    (
        "bodySite",
        0,
        "1",
        "CodeableConcept",
        "The requested body site (any of its codings), if one was asked.",
    ),
    (
        "window",
        0,
        "1",
        "Duration",
        "How long a study of this modality is recognised (days); absent: no window.",
    ),
    ("group", 0, "1", "string", "The window's examination group, Chinese and English."),
    ("found", 1, "1", "boolean", "Whether the caller may see any study of this examination."),
    ("study", 0, "1", "Reference/ImagingStudy", "The latest study (by ImagingStudy.started)."),
    ("facility", 0, "1", "Reference/Organization", "Its facility (series performer, else the Encounter's)."),
    ("date", 0, "1", "dateTime", "Its ImagingStudy.started."),
    (
        "studyModality",
        0,
        "*",
        "Coding",
        "The modality of its series that matched (CR and DX are one examination).",
    ),
    ("studyBodySite", 0, "*", "Coding", "The body site of its series that matched."),
    ("description", 0, "1", "string", "Its ImagingStudy.description."),
    ("report", 0, "1", "Reference/DiagnosticReport", "The latest report citing the study (imagingStudy)."),
    ("conclusion", 0, "1", "string", "That report's conclusion."),
    ("recognised", 0, "1", "boolean", "True when the study is no older than the window."),
)


def _part(name: str, low: int, high: str, kind: str, doc: str, use: str = "out") -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "use": use, "min": low, "max": high, "documentation": doc}
    if kind.startswith("Reference/"):
        entry["type"], entry["targetProfile"] = "Reference", [_SD + kind.split("/", 1)[1]]
    else:
        entry["type"] = kind
    return entry


def _token(name: str, doc: str) -> dict[str, Any]:
    """An input parameter taking token search values (``[system|]code``, comma-separated)."""
    return {**_part(name, 0, "*", "string", doc, use="in"), "searchType": "token"}


def prior_results_definition() -> dict[str, Any]:
    """The OperationDefinition of ``$prior-results`` (its canonical URL under the identifier base)."""
    return {
        "resourceType": "OperationDefinition",
        "id": "prior-results",
        "url": systems.PRIOR_RESULTS_OPERATION,
        "version": __version__,
        "name": "PriorResults",
        "title": "Prior results for an order (检验检查结果互认)",
        "status": "active",
        "kind": "operation",
        "experimental": False,
        "date": DEFINITIONS_DATE,
        "publisher": "RHIP",
        "description": (
            "Before a test or examination is ordered, the resident's latest result of each across the "
            "region (every record the MPI links, as far as the caller may see them), with its "
            "recognition window and whether the result still falls inside it (检验结果互认 for lab "
            "tests, 检查结果互认 for imaging). On a ServiceRequest the order names what is asked: "
            "its code (LOINC tests, or a DICOM modality or SNOMED CT imaging procedure when it is an "
            "imaging order) and bodySite; it takes no input parameters."
        ),
        "affectsState": False,
        "code": "prior-results",
        "resource": ["Patient", "ServiceRequest"],
        "system": False,
        "type": False,
        "instance": True,
        "parameter": [
            _token("code", "Lab tests: LOINC system|code or bare codes (Patient only)."),
            _token(
                "modality",
                f"Imaging examinations: DICOM modality codes ([{systems.DICOM_MODALITY}|]CT); CR and DX "
                "are one examination (Patient only).",
            ),
            _token(
                "bodysite",
                "Body sites of the examinations ([http://snomed.info/sct|]code, or a bare value the "
                "studies' series.bodySite carries); every modality is asked at every site (Patient only).",
            ),
            {
                "name": "test",
                "use": "out",
                "min": 0,
                "max": "*",
                "documentation": "One per requested lab test, in the order asked.",
                "part": [_part(*p) for p in _TEST_PARTS],
            },
            {
                "name": "examination",
                "use": "out",
                "min": 0,
                "max": "*",
                "documentation": "One per requested examination (modality x body site), in the order asked.",
                "part": [_part(*p) for p in _EXAMINATION_PARTS],
            },
        ],
    }


#: The platform-defined operations by OperationDefinition id.
DEFINITIONS = {"prior-results": prior_results_definition}


def definition_response(request: Request, op_id: str) -> Response:
    """read of a platform OperationDefinition (audited as a read, like a stored resource)."""
    check_format(request)
    ctx = begin(request, "read", "OperationDefinition", op_id)
    access.audit(ctx, "read", "0", ctx.extra["entities"])
    return FhirResponse(DEFINITIONS[op_id]())


def _routes(op_id: str) -> None:
    path = f"/fhir/OperationDefinition/{op_id}"

    @router.get(path, name=f"operation_definition_{op_id}")
    @store_work("thread")
    def read_definition(request: Request) -> Response:
        """The OperationDefinition of a platform operation."""
        return definition_response(request, op_id)

    @router.api_route(path, methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    def refuse_write() -> Response:
        """The definition belongs to the server: it is not written through the API."""
        raise NotSupported(f"OperationDefinition/{op_id} is defined by the server and read-only", status=405)


for _op_id in DEFINITIONS:
    _routes(_op_id)
