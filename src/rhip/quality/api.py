"""Quality over HTTP: the rule catalogue and scores per facility, day and rule (JSON), and charts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from rhip.quality.rules import catalogue
from rhip.quality.scores import facility_scores, rule_scores

router = APIRouter(prefix="/quality", tags=["quality"])


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
    return facility_scores(
        request.app.state.store.engine, by_day=by_day, facility=facility, day_from=day_from, day_to=day_to
    )


@router.get("/scores/rules")
def get_rule_scores(
    request: Request,
    facility: str | None = Query(None),
    day_from: str | None = Query(None, alias="from"),
    day_to: str | None = Query(None, alias="to"),
) -> list[dict[str, Any]]:
    """Checked, failed and score per facility, day and rule."""
    return rule_scores(request.app.state.store.engine, facility=facility, day_from=day_from, day_to=day_to)


@router.get("/chart", response_class=HTMLResponse)
def get_chart(
    request: Request,
    facility: str | None = Query(None),
    days: int | None = Query(None, ge=1, le=3660, description="Last days up to the latest with tallies."),
) -> HTMLResponse:
    """Daily score per facility and the latest score per rule as an HTML page with plotly charts."""
    from rhip.charts import CONTENT_SECURITY_POLICY
    from rhip.quality.chart import quality_page

    page = quality_page(
        request.app.state.store.engine, facility=facility, days=days, static_base=str(request.base_url)
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})
