"""Quality over HTTP: the rule catalogue and scores per facility, day and rule (JSON), and charts.

Filters are checked before the scores are computed, so an empty list means only that nothing
matches: a facility that has never sent anything is a 404 naming it (as ``rhip quality --facility``
refuses it), a ``from``/``to`` that is not a day (``YYYY-MM-DD``), or a ``from`` after ``to``, a 400.
Errors are OperationOutcomes, as everywhere in the API.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.quality.rules import catalogue
from rhip.quality.scores import facility_known, facility_scores, rule_scores

router = APIRouter(prefix="/quality", tags=["quality"])

_DAY = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")


def _check_filters(engine: Engine, facility: str | None, day_from: str | None, day_to: str | None) -> None:
    """InvalidRequest (400) for a malformed day range, ResourceNotFound (404) for an unknown facility."""
    for name, value in (("from", day_from), ("to", day_to)):
        if value is not None and not _DAY.fullmatch(value):
            raise InvalidRequest(f"{name}: '{value[:40]}' is not a day (YYYY-MM-DD)", expression=(name,))
    if day_from and day_to and day_from > day_to:
        raise InvalidRequest(f"from {day_from} is after to {day_to}", expression=("from",))
    if facility and not facility_known(engine, facility):
        raise ResourceNotFound(
            f"unknown facility '{facility[:64]}': it has sent no batch and has no quality records"
        )


@router.get("/rules")
def get_rules() -> list[dict[str, str]]:
    """The rule catalogue."""
    return catalogue()


@router.get("/scores")
def get_scores(
    request: Request,
    facility: str | None = Query(None),
    day_from: str | None = Query(None, alias="from"),
    day_to: str | None = Query(None, alias="to"),
    by_day: bool = Query(True),
) -> list[dict[str, Any]]:
    """Overall and per-dimension score per facility and day (``by_day=false``: per facility)."""
    engine = request.app.state.store.engine
    _check_filters(engine, facility, day_from, day_to)
    return facility_scores(engine, by_day=by_day, facility=facility, day_from=day_from, day_to=day_to)


@router.get("/scores/rules")
def get_rule_scores(
    request: Request,
    facility: str | None = Query(None),
    day_from: str | None = Query(None, alias="from"),
    day_to: str | None = Query(None, alias="to"),
) -> list[dict[str, Any]]:
    """Checked, failed and score per facility, day and rule."""
    engine = request.app.state.store.engine
    _check_filters(engine, facility, day_from, day_to)
    return rule_scores(engine, facility=facility, day_from=day_from, day_to=day_to)


@router.get("/chart", response_class=HTMLResponse)
def get_chart(
    request: Request,
    facility: str | None = Query(None),
    days: int | None = Query(None, ge=1, le=3660, description="Last days up to the latest with tallies."),
) -> HTMLResponse:
    """Daily score per facility and the latest score per rule as an HTML page with plotly charts."""
    from rhip.charts import CONTENT_SECURITY_POLICY
    from rhip.quality.chart import quality_page

    engine = request.app.state.store.engine
    _check_filters(engine, facility, None, None)
    page = quality_page(engine, facility=facility, days=days, static_base=str(request.base_url))
    return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})
