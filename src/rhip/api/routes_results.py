"""Results sharing for clinicians (检验检查结果共享互认): ``Observation/$lastn`` and ``$prior-results``.

``$prior-results`` answers lab tests (Observations) and imaging examinations (ImagingStudies and
the DiagnosticReports citing them). Both search as the caller (:func:`rhip.api.access.search`)
over every linked record of the resident (:func:`rhip.api.lastn.resident_ids`), so what the policy hides (an
opted-out resident's records outside their facilities, sensitive categories) is neither shown nor
counted, and both are audited as operations naming the resources returned. The routes are
literal paths, included before the generic ``/fhir/{type}/{id}`` patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.bundles import searchset
from rhip.api.deps import begin, check_id, get_settings, get_store, raw_body, store_work
from rhip.api.http import FORM, FhirResponse, base_url, check_format, form_pairs, query_pairs
from rhip.api.lastn import LastnQuery, gather, last_n, parse_lastn, resident_ids
from rhip.api.prior_imaging import (
    RequestedExamination,
    examination_parameters,
    is_examination,
    order_examinations,
    parse_examinations,
)
from rhip.api.prior_results import FacilityOf, RequestedTest, parse_tests, prior_results
from rhip.api.recognition import Window, recognition_windows
from rhip.api.routes_search import params_from_body
from rhip.api.routing import FhirRoute
from rhip.config import Settings
from rhip.errors import InvalidRequest, RhipError

if TYPE_CHECKING:
    from rhip.store import Store
    from rhip.store.search import SearchResult

router = APIRouter(route_class=FhirRoute)


def _observation_param(name: str) -> bool:
    from rhip.fhir.search_params import COMMON_PARAMS, search_params_for

    return name in COMMON_PARAMS or name in search_params_for("Observation")


def _visible(
    ctx: access.RequestContext,
    store: Store,
    res_type: str,
    patient_ids: list[str],
    criteria: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    """These Patients' resources of ``res_type`` matching ``criteria`` that this caller may see."""

    def search(params: list[tuple[str, str]], count: int, offset: int) -> SearchResult:
        return access.search(ctx, store, res_type, params, count=count, offset=offset)

    return gather(search, patient_ids, criteria, res_type=res_type)


def _visible_observations(
    ctx: access.RequestContext, store: Store, query: LastnQuery
) -> list[dict[str, Any]]:
    """The resident's Observations matching the query that this caller may see."""
    ids = resident_ids(store, query.patients, resident=query.resident)
    return _visible(ctx, store, "Observation", ids, query.criteria)


def _audited(ctx: access.RequestContext, found: list[tuple[str, str]]) -> None:
    """Audit the operation as naming the resources (type, id) it returned."""
    ctx.extra["entities"] = [*ctx.extra["entities"], *found]
    access.audit(ctx, "operation", "0", ctx.extra["entities"])


def lastn_response(request: Request, store: Store, pairs: list[tuple[str, str]]) -> Response:
    """``Observation/$lastn`` as a searchset Bundle (every group in one page; no paging)."""
    check_format(request, pairs)
    query = parse_lastn(pairs, _observation_param)
    ctx = begin(request, "operation", "Observation")
    found = last_n(_visible_observations(ctx, store, query), query.max)
    base = base_url(request)
    self_link = [{"relation": "self", "url": str(request.url)}]
    _audited(ctx, [("Observation", str(o["id"])) for o in found])
    return FhirResponse(searchset(base, found, [], total=len(found), links=self_link))


@router.get("/fhir/Observation/$lastn")
@store_work("thread")
def lastn_get(request: Request, store: Store = Depends(get_store)) -> Response:
    """``Observation/$lastn`` by GET."""
    return lastn_response(request, store, query_pairs(request))


@router.post("/fhir/Observation/$lastn")
@store_work("thread")
def lastn_post(
    request: Request, body: bytes = Depends(raw_body), store: Store = Depends(get_store)
) -> Response:
    """``Observation/$lastn`` by POST: a Parameters body, or a form like ``_search``."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM:
        extra = form_pairs(request, body)
    else:
        extra = params_from_body(request, body)
    return lastn_response(request, store, query_pairs(request) + extra)


def _performers(resource: dict[str, Any]) -> list[Any]:
    """The performers of an Observation (``performer``) or ImagingStudy (``series.performer.actor``)."""
    refs = [p.get("reference") for p in resource.get("performer") or [] if isinstance(p, dict)]
    for series in resource.get("series") or []:
        for performer in (series.get("performer") or []) if isinstance(series, dict) else []:
            refs.append(
                ((performer.get("actor") or {}) if isinstance(performer, dict) else {}).get("reference")
            )
    return refs


def _facility_of(store: Store) -> FacilityOf:
    """The facility of a result: its performing Organization, else its Encounter's provider."""

    def facility(resource: dict[str, Any]) -> str | None:
        for ref in _performers(resource):
            if isinstance(ref, str) and ref.startswith("Organization/"):
                return ref
        ref = (resource.get("encounter") or {}).get("reference")
        if not isinstance(ref, str) or not ref.startswith("Encounter/"):
            return None
        try:
            provider = store.read("Encounter", ref.split("/", 1)[1]).get("serviceProvider") or {}
        except RhipError:
            return None
        found = provider.get("reference")
        return found if isinstance(found, str) else None

    return facility


@dataclass(frozen=True)
class PriorRequest:
    """What a ``$prior-results`` call asks for: lab tests and imaging examinations (at least one)."""

    tests: list[RequestedTest]
    exams: list[RequestedExamination]


def _imaging_parameters(
    store: Store,
    ctx: access.RequestContext,
    ids: list[str],
    exams: list[RequestedExamination],
    windows: dict[str, Window],
    now: datetime,
) -> list[dict[str, Any]]:
    """The ``examination`` parameters; the resident's reports are read only when a study is found.

    Every study of the resident is read, not only those the ``modality`` search parameter finds:
    that parameter indexes ``series.modality``, and a study may name its modality only in
    ``ImagingStudy.modality`` (one without series yet).
    """
    studies = _visible(ctx, store, "ImagingStudy", ids, [])
    found = [s for s in studies if any(is_examination(s, exam) for exam in exams)]
    reports = _visible(ctx, store, "DiagnosticReport", ids, []) if found else []
    return examination_parameters(exams, found, reports, windows, _facility_of(store), now)


def _prior_results(
    store: Store,
    settings: Settings,
    ctx: access.RequestContext,
    patient: str,
    asked: PriorRequest,
) -> Response:
    ids = resident_ids(store, [patient], resident=True)
    windows = recognition_windows(settings.recognition_windows_file)
    now = datetime.now(UTC)
    answer: dict[str, Any] = {"resourceType": "Parameters", "parameter": []}
    if asked.tests:
        criteria = [("code", ",".join(t.token for t in asked.tests))]
        found = _visible(ctx, store, "Observation", ids, criteria)
        answer = prior_results(asked.tests, found, windows, _facility_of(store), now)
    if asked.exams:
        answer["parameter"] += _imaging_parameters(store, ctx, ids, asked.exams, windows, now)
    cited = [
        p["valueReference"]["reference"].split("/", 1)
        for t in answer["parameter"]
        for p in t["part"]
        if p["name"] in ("result", "study", "report")
    ]
    _audited(ctx, [(res_type, rid) for res_type, rid in cited])
    return FhirResponse(answer)


def _prior_pairs(request: Request, res_id: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """The parameters of a ``$prior-results`` request, after the checks both routes share.

    400 naming any parameter other than ``allowed`` and the format ones; 406 for a non-JSON format.
    """
    pairs = query_pairs(request)
    check_format(request, pairs)
    check_id(res_id)
    for name, _ in pairs:
        if name not in (*allowed, "_format", "_pretty"):
            raise InvalidRequest(f"{name}: unknown $prior-results parameter", expression=(name,))
    return pairs


def parse_prior_request(pairs: list[tuple[str, str]]) -> PriorRequest:
    """The lab tests (``code``) and examinations (``modality``, ``bodysite``) asked for; 400 when none."""
    tests = parse_tests([v for n, v in pairs if n == "code"])
    exams = parse_examinations(
        [v for n, v in pairs if n == "modality"], [v for n, v in pairs if n == "bodysite"]
    )
    if not tests and not exams:
        raise InvalidRequest(
            "code: $prior-results needs at least one test code or a modality", expression=("code",)
        )
    return PriorRequest(tests, exams)


@router.get("/fhir/Patient/{patient_id}/$prior-results")
@store_work("thread")
def patient_prior_results(
    request: Request,
    patient_id: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The resident's latest result of each requested test and examination, with its recognition window."""
    asked = parse_prior_request(_prior_pairs(request, patient_id, ("code", "modality", "bodysite")))
    ctx = begin(request, "operation", "Patient", patient_id)
    store.read("Patient", patient_id)
    return _prior_results(store, settings, ctx, patient_id, asked)


def order_request(order: dict[str, Any]) -> tuple[str, PriorRequest]:
    """The patient and what a ServiceRequest orders: its imaging examinations, else its coded tests.

    400 naming the element when the subject or the code is missing or names nothing usable.
    """
    ref = (order.get("subject") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        raise InvalidRequest(
            "ServiceRequest.subject: the order names no Patient", expression=("ServiceRequest.subject",)
        )
    patient = ref.split("/", 1)[1]
    exams = order_examinations(order)
    if exams is not None:
        return patient, PriorRequest([], exams)
    codings = (order.get("code") or {}).get("coding") or []
    tests = [
        RequestedTest(c.get("system"), c["code"]) for c in codings if isinstance(c, dict) and c.get("code")
    ]
    if not tests:
        raise InvalidRequest(
            "ServiceRequest.code: the order names no coded test", expression=("ServiceRequest.code",)
        )
    return patient, PriorRequest(tests, [])


@router.get("/fhir/ServiceRequest/{order_id}/$prior-results")
@store_work("thread")
def order_prior_results(
    request: Request,
    order_id: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The latest result of each test or examination an order asks for, for the order's patient."""
    _prior_pairs(request, order_id, ())
    ctx = begin(request, "operation", "ServiceRequest", order_id)
    patient, asked = order_request(store.read("ServiceRequest", order_id))
    return _prior_results(store, settings, ctx, patient, asked)
