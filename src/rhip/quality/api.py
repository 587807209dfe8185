"""Quality over HTTP: the rule catalogue and scores per facility, day and rule (JSON)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

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
