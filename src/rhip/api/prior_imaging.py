"""``$prior-results`` for imaging examinations (检查结果互认): the latest study per modality and site.

A requested examination is a DICOM modality (``CT``, ``MR``, ``DX``, ...; the codes ImagingStudy
uses in ``modality`` and ``series.modality``) and optionally a body site (a SNOMED CT code, or
whatever coding the studies carry in ``series.bodySite``). The answer is the most recent
ImagingStudy (by ``started``) of the resident that the caller may see, with the DiagnosticReport
that cites it (``DiagnosticReport.imagingStudy``) and whether it falls inside the modality's
recognition window (:mod:`rhip.api.recognition`). The parameters follow the ImagingStudy search
parameters ``modality`` and ``bodysite``; several of each ask for every modality at every site.

Projection radiography is one examination whether the detector was a plate (``CR``) or digital
(``DX``): a request for either accepts a study of the other. A study or report that is
registered only, cancelled or entered in error is not a result. The functions here are pure;
the route gathers the resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rhip.api.lastn import parse_instant
from rhip.api.prior_results import NOT_A_RESULT, FacilityOf, window_parts
from rhip.api.recognition import MODALITIES, Window
from rhip.errors import InvalidRequest
from rhip.fhir import systems

#: Modalities that are the same examination for recognition (CR and DX: projection radiography).
EQUIVALENT: dict[str, tuple[str, ...]] = {"CR": ("CR", "DX"), "DX": ("CR", "DX")}
#: SNOMED CT imaging procedures an order may be coded with, and the modality each means.
SNOMED_PROCEDURES: dict[str, str] = {
    "77477000": "CT",  # Computerized axial tomography
    "113091000": "MR",  # Magnetic resonance imaging
    "16310003": "US",  # Diagnostic ultrasonography
    "168537006": "DX",  # Plain radiography
    "71651007": "MG",  # Mammography
    "371572003": "NM",  # Nuclear medicine imaging procedure
    "82918005": "PT",  # Positron emission tomography
}
#: ServiceRequest.category "Imaging" (SNOMED CT 363679005, FHIR's servicerequest-category).
IMAGING_CATEGORY = "363679005"
_OLDEST = datetime.min.replace(tzinfo=UTC)

#: A body-site coding: (system or None for any, code).
SiteCoding = tuple[str | None, str]


@dataclass(frozen=True)
class RequestedExamination:
    """One requested examination: a modality and the codings that name its body site (empty: any site)."""

    modality: str
    site: tuple[SiteCoding, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """The study modalities that count as this examination."""
        return EQUIVALENT.get(self.modality, (self.modality,))


def parse_modality(item: str, name: str) -> str:
    """A ``[system|]code`` modality value: a DICOM modality code; 400 naming ``name`` otherwise."""
    system, _, code = item.strip().rpartition("|")
    code = code.strip()
    if system.strip() and system.strip() != systems.DICOM_MODALITY:
        raise InvalidRequest(
            f"{name}: modalities are DICOM codes (system {systems.DICOM_MODALITY}), "
            f"got '{item.strip()[:60]}'",
            expression=(name,),
        )
    if code not in MODALITIES:
        raise InvalidRequest(
            f"{name}: '{code[:20]}' is not a DICOM modality code (CT, MR, DX, CR, US, MG, ...)",
            expression=(name,),
        )
    return code


def _parse_site(item: str) -> SiteCoding:
    system, _, code = item.strip().rpartition("|")
    if not code.strip():
        raise InvalidRequest(
            f"bodysite: expected system|code or a code, got '{item.strip()[:40]}'", expression=("bodysite",)
        )
    return (system.strip() or None, code.strip())


def _items(values: Sequence[str]) -> list[str]:
    return [item for value in values for item in value.split(",")]


def parse_examinations(modalities: Sequence[str], sites: Sequence[str]) -> list[RequestedExamination]:
    """The ``modality`` and ``bodysite`` parameters: every modality at every site (any site if none)."""
    codes = list(dict.fromkeys(parse_modality(item, "modality") for item in _items(modalities)))
    parsed: list[tuple[SiteCoding, ...]] = list(dict.fromkeys((_parse_site(i),) for i in _items(sites)))
    if parsed and not codes:
        raise InvalidRequest("bodysite: a body site needs a modality parameter", expression=("bodysite",))
    return [RequestedExamination(m, site) for m in codes for site in (parsed or [()])]


def _coded(concept: Any) -> list[dict[str, Any]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in codings or [] if isinstance(c, dict)]


def order_examinations(order: dict[str, Any]) -> list[RequestedExamination] | None:
    """The examinations an imaging order asks for; None when the order is not for imaging.

    An order is for imaging when its ``category`` is Imaging (SNOMED CT 363679005) or its
    ``code`` has a DICOM modality coding or a SNOMED CT imaging procedure
    (:data:`SNOMED_PROCEDURES`); each ``bodySite`` is one site (any of its codings matches).

    Raises:
        InvalidRequest: an imaging order whose code names no known modality, or a bodySite with
            no coding (400 naming the element).
    """
    codings = _coded(order.get("code"))
    found: list[str] = []
    for coding in codings:
        code, system = str(coding.get("code") or ""), coding.get("system")
        if system == systems.DICOM_MODALITY and code:
            found.append(parse_modality(code, "ServiceRequest.code"))
        elif system == systems.SNOMED and code in SNOMED_PROCEDURES:
            found.append(SNOMED_PROCEDURES[code])
    categories = [c for concept in order.get("category") or [] for c in _coded(concept)]
    imaging = any(c.get("system") == systems.SNOMED and c.get("code") == IMAGING_CATEGORY for c in categories)
    if not found and not imaging:
        return None
    if not found:
        raise InvalidRequest(
            "ServiceRequest.code: an imaging order names no modality (a coding of "
            f"{systems.DICOM_MODALITY} such as CT, or a SNOMED CT imaging procedure)",
            expression=("ServiceRequest.code",),
        )
    sites: list[tuple[SiteCoding, ...]] = []
    for index, concept in enumerate(order.get("bodySite") or []):
        site = tuple((c.get("system"), str(c["code"])) for c in _coded(concept) if c.get("code"))
        if not site:
            where = f"ServiceRequest.bodySite[{index}]"
            raise InvalidRequest(f"{where}: the body site has no coding", expression=(where,))
        sites.append(site)
    modalities = list(dict.fromkeys(found))
    return [RequestedExamination(m, s) for m in modalities for s in (sites or [()])]


def _is_modality(coding: Any, accepted: tuple[str, ...]) -> bool:
    return (
        isinstance(coding, dict)
        and coding.get("code") in accepted
        and coding.get("system") in (None, systems.DICOM_MODALITY)
    )


def _site_matches(coding: Any, site: tuple[SiteCoding, ...]) -> bool:
    """A series bodySite coding names the site: same code (and system when given), or for a coding
    with no code (the DICOM connector's Body Part Examined) the same text as a bare value."""
    if not isinstance(coding, dict):
        return False
    for system, code in site:
        if coding.get("code"):
            if coding["code"] == code and (system is None or coding.get("system") == system):
                return True
        elif system is None and str(coding.get("display", "")).casefold() == code.casefold():
            return True
    return False


def matching_series(study: dict[str, Any], exam: RequestedExamination) -> list[dict[str, Any]]:
    """The series of a study that are this examination (of its modality, at its site if one is asked)."""
    return [
        s
        for s in study.get("series") or []
        if isinstance(s, dict)
        and _is_modality(s.get("modality"), exam.modalities)
        and (not exam.site or _site_matches(s.get("bodySite"), exam.site))
    ]


def is_examination(study: dict[str, Any], exam: RequestedExamination) -> bool:
    """Whether a study is a result of this examination (a void study never is).

    Without a site the study-level ``modality`` counts too (a study may list it without series).
    """
    if study.get("status") in NOT_A_RESULT:
        return False
    if matching_series(study, exam):
        return True
    return not exam.site and any(_is_modality(c, exam.modalities) for c in study.get("modality") or [])


def started(study: dict[str, Any]) -> datetime | None:
    """When a study started (``started``), or None."""
    stamp = study.get("started")
    return parse_instant(stamp) if isinstance(stamp, str) and stamp else None


def _newest(resources: Iterable[dict[str, Any]], when: Any) -> dict[str, Any] | None:
    def key(res: dict[str, Any]) -> tuple[datetime, str, str]:
        updated = str((res.get("meta") or {}).get("lastUpdated", ""))
        return when(res) or _OLDEST, updated, str(res.get("id"))

    ordered = sorted(resources, key=key, reverse=True)
    return ordered[0] if ordered else None


def latest_study(studies: Sequence[dict[str, Any]], exam: RequestedExamination) -> dict[str, Any] | None:
    """The most recent study of this examination (undated last; ties by last update, then id)."""
    return _newest((s for s in studies if is_examination(s, exam)), started)


def _issued(report: dict[str, Any]) -> datetime | None:
    period = report.get("effectivePeriod") or {}
    for stamp in (
        report.get("issued"),
        report.get("effectiveDateTime"),
        period.get("end"),
        period.get("start"),
    ):
        if isinstance(stamp, str) and stamp:
            return parse_instant(stamp)
    return None


def report_of(reports: Sequence[dict[str, Any]], study_id: str) -> dict[str, Any] | None:
    """The latest report (by ``issued``) citing the study in ``imagingStudy``, void ones left out."""
    from rhip.security.parties import reference_id

    citing = (
        r
        for r in reports
        if r.get("status") not in NOT_A_RESULT
        and any(reference_id(ref, "ImagingStudy") == study_id for ref in r.get("imagingStudy") or [])
    )
    return _newest(citing, _issued)


def _requested_parts(exam: RequestedExamination, window: Window | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"name": "modality", "valueCoding": {"system": systems.DICOM_MODALITY, "code": exam.modality}}
    ]
    if exam.site:
        codings = [{"system": s, "code": c} if s else {"code": c} for s, c in exam.site]
        parts.append({"name": "bodySite", "valueCodeableConcept": {"coding": codings}})
    return parts + window_parts(window)


def _study_parts(
    study: dict[str, Any],
    exam: RequestedExamination,
    report: dict[str, Any] | None,
    window: Window | None,
    facility: str | None,
    now: datetime,
) -> list[dict[str, Any]]:
    when = started(study)
    parts: list[dict[str, Any]] = [
        {"name": "study", "valueReference": {"reference": f"ImagingStudy/{study['id']}"}}
    ]
    if facility:
        parts.append({"name": "facility", "valueReference": {"reference": facility}})
    if when is not None:
        parts.append({"name": "date", "valueDateTime": study["started"]})
    series = matching_series(study, exam)
    modalities = [s["modality"] for s in series] or [
        c for c in study.get("modality") or [] if _is_modality(c, exam.modalities)
    ]
    for coding in list({c["code"]: c for c in modalities}.values()):
        parts.append({"name": "studyModality", "valueCoding": coding})
    sites = [s["bodySite"] for s in series if isinstance(s.get("bodySite"), dict)]
    for coding in [c for i, c in enumerate(sites) if c not in sites[:i]]:
        parts.append({"name": "studyBodySite", "valueCoding": coding})
    if isinstance(study.get("description"), str):
        parts.append({"name": "description", "valueString": study["description"]})
    if report is not None:
        parts.append({"name": "report", "valueReference": {"reference": f"DiagnosticReport/{report['id']}"}})
        if isinstance(report.get("conclusion"), str):
            parts.append({"name": "conclusion", "valueString": report["conclusion"]})
    recognised = window is not None and when is not None and now - when <= timedelta(days=window.days)
    parts.append({"name": "recognised", "valueBoolean": recognised})
    return parts


def examination_parameters(
    exams: Sequence[RequestedExamination],
    studies: Sequence[dict[str, Any]],
    reports: Sequence[dict[str, Any]],
    windows: dict[str, Window],
    facility_of: FacilityOf,
    now: datetime,
) -> list[dict[str, Any]]:
    """One ``examination`` parameter per requested examination, in the order asked.

    Args:
        exams: the requested examinations.
        studies: the resident's ImagingStudies the caller may see.
        reports: the resident's DiagnosticReports the caller may see (those citing a study count).
        windows: recognition windows by code (the modality's is used).
        facility_of: the facility of a study.
        now: the moment the windows are measured from (aware).
    """
    params = []
    for exam in exams:
        window = windows.get(exam.modality)
        window = window if window is not None and window.kind == "imaging" else None
        latest = latest_study(studies, exam)
        parts = _requested_parts(exam, window)
        parts.append({"name": "found", "valueBoolean": latest is not None})
        if latest is not None:
            report = report_of(reports, str(latest["id"]))
            parts += _study_parts(latest, exam, report, window, facility_of(latest), now)
        params.append({"name": "examination", "part": parts})
    return params
