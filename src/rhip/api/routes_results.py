"""Results sharing for clinicians (检验检查结果共享互认): ``Observation/$lastn`` and ``$prior-results``.

Both run the Observation search as the caller (:func:`rhip.api.access.search`) over every linked
record of the resident (:func:`rhip.api.lastn.resident_ids`), so what the policy hides (an
opted-out resident's records outside their facilities, sensitive categories) is neither shown nor
counted, and both are audited as operations naming the Observations returned. The routes are
literal paths, included before the generic ``/fhir/{type}/{id}`` patterns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rhip.api import access
from rhip.api.bundles import searchset
from rhip.api.deps import begin, check_id, get_settings, get_store, raw_body, store_work
from rhip.api.http import FORM, FhirResponse, base_url, check_format, form_pairs, query_pairs
from rhip.api.lastn import LastnQuery, gather, last_n, parse_lastn, resident_ids
from rhip.api.prior_results import FacilityOf, RequestedTest, parse_tests, prior_results
from rhip.api.recognition import recognition_windows
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


def _visible_observations(
    ctx: access.RequestContext, store: Store, query: LastnQuery
) -> list[dict[str, Any]]:
    """The resident's Observations matching the query that this caller may see."""

    def search(params: list[tuple[str, str]], count: int, offset: int) -> SearchResult:
        return access.search(ctx, store, "Observation", params, count=count, offset=offset)

    ids = resident_ids(store, query.patients, resident=query.resident)
    return gather(search, ids, query.criteria)


def _audited(ctx: access.RequestContext, found: list[dict[str, Any]]) -> None:
    ctx.extra["entities"] = [*ctx.extra["entities"], *(("Observation", str(o["id"])) for o in found)]
    access.audit(ctx, "operation", "0", ctx.extra["entities"])


def lastn_response(request: Request, store: Store, pairs: list[tuple[str, str]]) -> Response:
    """``Observation/$lastn`` as a searchset Bundle (every group in one page; no paging)."""
    check_format(request, pairs)
    query = parse_lastn(pairs, _observation_param)
    ctx = begin(request, "operation", "Observation")
    found = last_n(_visible_observations(ctx, store, query), query.max)
    base = base_url(request)
    self_link = [{"relation": "self", "url": str(request.url)}]
    _audited(ctx, found)
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


def _facility_of(store: Store) -> FacilityOf:
    """The facility of an Observation: its performing Organization, else its Encounter's provider."""

    def facility(observation: dict[str, Any]) -> str | None:
        for performer in observation.get("performer") or []:
            ref = performer.get("reference") if isinstance(performer, dict) else None
            if isinstance(ref, str) and ref.startswith("Organization/"):
                return ref
        ref = (observation.get("encounter") or {}).get("reference")
        if not isinstance(ref, str) or not ref.startswith("Encounter/"):
            return None
        try:
            provider = store.read("Encounter", ref.split("/", 1)[1]).get("serviceProvider") or {}
        except RhipError:
            return None
        found = provider.get("reference")
        return found if isinstance(found, str) else None

    return facility


def _prior_results(
    store: Store,
    settings: Settings,
    ctx: access.RequestContext,
    patient: str,
    tests: list[RequestedTest],
) -> Response:
    query = LastnQuery(patients=[patient], criteria=[("code", ",".join(t.token for t in tests))])
    found = _visible_observations(ctx, store, query)
    windows = recognition_windows(settings.recognition_windows_file)
    answer = prior_results(tests, found, windows, _facility_of(store), datetime.now(UTC))
    cited = [
        p["valueReference"]["reference"]
        for t in answer["parameter"]
        for p in t["part"]
        if p["name"] == "result"
    ]
    _audited(ctx, [{"id": ref.split("/", 1)[1]} for ref in cited])
    return FhirResponse(answer)


def _prior_codes(request: Request, res_id: str, allowed: tuple[str, ...]) -> list[str]:
    """The ``code`` values of a ``$prior-results`` request, after the checks both routes share.

    400 naming any parameter other than ``allowed`` and the format ones; 406 for a non-JSON format.
    """
    pairs = query_pairs(request)
    check_format(request, pairs)
    check_id(res_id)
    for name, _ in pairs:
        if name not in (*allowed, "_format", "_pretty"):
            raise InvalidRequest(f"{name}: unknown $prior-results parameter", expression=(name,))
    return [value for name, value in pairs if name == "code"]


@router.get("/fhir/Patient/{patient_id}/$prior-results")
@store_work("thread")
def patient_prior_results(
    request: Request,
    patient_id: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The resident's latest result of each requested test, with its recognition window."""
    tests = parse_tests(_prior_codes(request, patient_id, ("code",)))
    ctx = begin(request, "operation", "Patient", patient_id)
    store.read("Patient", patient_id)
    return _prior_results(store, settings, ctx, patient_id, tests)


def order_tests(order: dict[str, Any]) -> tuple[str, list[RequestedTest]]:
    """The patient and the coded tests of a ServiceRequest; 400 naming the element when missing."""
    ref = (order.get("subject") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        raise InvalidRequest(
            "ServiceRequest.subject: the order names no Patient", expression=("ServiceRequest.subject",)
        )
    codings = (order.get("code") or {}).get("coding") or []
    tests = [
        RequestedTest(c.get("system"), c["code"]) for c in codings if isinstance(c, dict) and c.get("code")
    ]
    if not tests:
        raise InvalidRequest(
            "ServiceRequest.code: the order names no coded test", expression=("ServiceRequest.code",)
        )
    return ref.split("/", 1)[1], tests


@router.get("/fhir/ServiceRequest/{order_id}/$prior-results")
@store_work("thread")
def order_prior_results(
    request: Request,
    order_id: str,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The latest result of each test an order asks for, for the order's patient."""
    _prior_codes(request, order_id, ())
    ctx = begin(request, "operation", "ServiceRequest", order_id)
    patient, tests = order_tests(store.read("ServiceRequest", order_id))
    return _prior_results(store, settings, ctx, patient, tests)
