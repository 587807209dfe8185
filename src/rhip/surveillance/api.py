"""Surveillance over HTTP (``/surveillance``): alerts with their cases, officer actions, case definitions.

An alert's contributing cases are served as a FHIR ``Group`` of the source Patients (one member
per case, with the case date as the member period), so a client can follow ``member.entity`` to
the records. Reads, acknowledgements and closures go through the API's access and audit hooks;
acknowledge/close are also kept in the alert's own action history (who, when, note).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import HTMLResponse

from rhip.api.access import audit, authorize
from rhip.api.deps import request_context
from rhip.store.engine import write_transaction
from rhip.surveillance.alerts import ensure_schema, get_alert, list_alerts, set_status
from rhip.surveillance.definitions import delete_definition, list_definitions, put_definition
from rhip.surveillance.methods import get_method, method_names
from rhip.surveillance.series import DEFAULT_SERIES_PERIODS, MAX_SERIES_PERIODS

router = APIRouter(prefix="/surveillance", tags=["surveillance"])

ALERT_TYPE = "SurveillanceAlert"
#: Writes of case definitions are checked as this type: officers read them (as alerts) and
#: acknowledge alerts, but what counts as a case is the platform's to change.
DEFINITION_TYPE = "SurveillanceCaseDefinition"


def _engine(request: Request) -> Any:
    engine = request.app.state.store.engine
    if not getattr(request.app.state, "surveillance_schema", False):
        ensure_schema(engine)
        request.app.state.surveillance_schema = True
    return engine


def _check(
    request: Request, interaction: str, alert_id: str | None = None, res_type: str = ALERT_TYPE
) -> Any:
    ctx = request_context(request)
    authorize(ctx, interaction, res_type, alert_id)
    return ctx


@router.get("/methods")
def get_methods(request: Request) -> list[dict[str, Any]]:
    """Registered aberration-detection methods with their default parameters."""
    _check(request, "search-type")
    return [
        {"name": n, "description": get_method(n).description, "params": dict(get_method(n).params)}
        for n in method_names()
    ]


@router.get("/alerts")
def get_alerts(
    request: Request,
    status: str | None = Query(None),
    disease: str | None = Query(None),
    area: str | None = Query(None),
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """Alerts, newest first (filters: status, disease, area)."""
    _check(request, "search-type")
    with _engine(request).connect() as conn:
        return list_alerts(conn, status=status, disease=disease, area=area, limit=limit)


@router.get("/alerts/{alert_id}")
def get_one(request: Request, alert_id: str) -> dict[str, Any]:
    """One alert with evidence, cases and actions."""
    ctx = _check(request, "read", alert_id)
    with _engine(request).connect() as conn:
        out = get_alert(conn, alert_id)
    audit(ctx, "read", "0", [(ALERT_TYPE, alert_id)])
    return out


def _series(request: Request, alert_id: str, periods: int) -> dict[str, Any]:
    """An alert's series recomputed from the lake (read of the alert: authorised and audited)."""
    from rhip.surveillance.series import alert_series

    ctx = _check(request, "read", alert_id)
    engine = _engine(request)
    with engine.connect() as conn:
        alert = get_alert(conn, alert_id)
    out = alert_series(engine, request.app.state.settings.lake_dir, alert, periods)
    audit(ctx, "read", "0", [(ALERT_TYPE, alert_id)])
    return out


_PERIODS = Query(
    DEFAULT_SERIES_PERIODS, ge=1, le=MAX_SERIES_PERIODS, description="Periods up to the alert's last."
)


@router.get("/alerts/{alert_id}/series")
def get_series(request: Request, alert_id: str, periods: int = _PERIODS) -> dict[str, Any]:
    """Observed, expected, upper bound, alarm and method per period before and including the alert."""
    return _series(request, alert_id, periods)


@router.get("/alerts/{alert_id}/chart", response_class=HTMLResponse)
def get_chart(request: Request, alert_id: str, periods: int = _PERIODS) -> HTMLResponse:
    """The alert's series as an HTML page with a plotly chart (plotly.js from ``/static``)."""
    from rhip.charts import CONTENT_SECURITY_POLICY
    from rhip.surveillance.chart import alert_page

    page = alert_page(_series(request, alert_id, periods), static_base=str(request.base_url))
    return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def alert_group(alert: dict[str, Any]) -> dict[str, Any]:
    """The contributing cases of an alert as a FHIR R4 Group of Patients (one member per case)."""
    members = [
        {"entity": {"reference": f"Patient/{c['patient']}"}, "period": {"start": c["day"], "end": c["day"]}}
        for c in alert.get("cases", [])
        if c.get("patient")
    ]
    return {
        "resourceType": "Group",
        "id": f"surveillance-alert-{alert['id']}",
        "type": "person",
        "actual": True,
        "name": (
            f"{alert['disease']} {alert['area']} {alert['first_period']}..{alert['last_period']} "
            f"({alert['method']})"
        ),
        "quantity": len(members),
        "member": members,
    }


@router.get("/alerts/{alert_id}/Group")
def get_group(request: Request, alert_id: str) -> dict[str, Any]:
    """The alert's contributing cases as a FHIR Group."""
    ctx = _check(request, "read", alert_id)
    with _engine(request).connect() as conn:
        alert = get_alert(conn, alert_id)
    audit(
        ctx, "read", "0", [(ALERT_TYPE, alert_id)] + [("Condition", c["condition"]) for c in alert["cases"]]
    )
    return alert_group(alert)


def _transition(request: Request, alert_id: str, status: str, body: dict[str, Any]) -> dict[str, Any]:
    ctx = _check(request, "update", alert_id)
    actor = ctx.principal or str(body.get("by") or "anonymous")
    with write_transaction(_engine(request)) as conn:
        out = set_status(conn, alert_id, status, actor=actor, note=body.get("note"))
    audit(ctx, "update", "0", [(ALERT_TYPE, alert_id)])
    return out


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    request: Request, alert_id: str, body: dict[str, Any] = Body(default_factory=dict)
) -> dict[str, Any]:
    """Acknowledge an open alert (body: optional ``note``, ``by`` when security is off)."""
    return _transition(request, alert_id, "acknowledged", body)


@router.post("/alerts/{alert_id}/close")
def close(
    request: Request, alert_id: str, body: dict[str, Any] = Body(default_factory=dict)
) -> dict[str, Any]:
    """Close an alert (body: optional ``note``, ``by``)."""
    return _transition(request, alert_id, "closed", body)


@router.get("/case-definitions")
def get_definitions(request: Request) -> list[dict[str, Any]]:
    """Case definitions in force (built-in notifiable diseases merged with the region's)."""
    _check(request, "search-type")
    with _engine(request).connect() as conn:
        return list_definitions(conn)


@router.put("/case-definitions/{code}")
def put_def(request: Request, code: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Create or replace a region case definition (``icd10`` list, ``episode_days``, ``active``)."""
    ctx = _check(request, "update", None, DEFINITION_TYPE)
    with write_transaction(_engine(request)) as conn:
        out = put_definition(conn, {**body, "code": code})
    audit(ctx, "update", "0", [(DEFINITION_TYPE, code)])
    return out


@router.delete("/case-definitions/{code}", status_code=204)
def delete_def(request: Request, code: str) -> None:
    """Remove a region case definition (the built-in one, if any, applies again)."""
    ctx = _check(request, "delete", None, DEFINITION_TYPE)
    with write_transaction(_engine(request)) as conn:
        delete_definition(conn, code)
    audit(ctx, "delete", "0", [(DEFINITION_TYPE, code)])
