"""Alert de-duplication and officer actions on SQLite and PostgreSQL; the method registry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.surveillance import DetectionResult, detect, method_names, methods, register_method
from rhip.surveillance.alerts import (
    AlertEvidence,
    ensure_schema,
    get_alert,
    list_alerts,
    record_alarm,
    set_status,
)


def _ev(period: dt.date, area: str = "南湖区", n: float = 9.0) -> AlertEvidence:
    case = {"condition": f"c-{period}", "resident": "r1", "patient": "p1", "day": period.isoformat()}
    return AlertEvidence(
        "influenza", "district", area, "week", "farrington", period, n, 2.0, 6.5, 1.8, [case]
    )


def test_consecutive_weeks_make_one_alert_and_actions_are_kept(db_url: str) -> None:
    """Alarms in weeks 1, 2, 3 form one alert; week 6 opens another; re-recording adds nothing."""
    engine = sa.create_engine(db_url)
    ensure_schema(engine)
    w1 = dt.date(2025, 1, 6)
    with engine.begin() as conn:
        ids = [record_alarm(conn, _ev(w1 + dt.timedelta(weeks=i))) for i in (0, 1, 2, 5)]
        again = record_alarm(conn, _ev(w1 + dt.timedelta(weeks=1)))
        other = record_alarm(conn, _ev(w1, area="秀洲区"))
    assert [created for _, created in ids] == [True, False, False, True]
    assert ids[0][0] == ids[1][0] == ids[2][0] != ids[3][0]
    assert again == (ids[0][0], False) and other[1]
    with engine.begin() as conn:
        alert = get_alert(conn, ids[0][0])
        assert (alert["first_period"], alert["last_period"]) == ("2025-01-06", "2025-01-20")
        assert alert["case_count"] == 3 and len(alert["evidence"]) == 3
        set_status(conn, ids[0][0], "acknowledged", actor="officer-li", note="school cluster")
        with pytest.raises(InvalidRequest):
            set_status(conn, ids[0][0], "acknowledged", actor="officer-li")
        closed = set_status(conn, ids[0][0], "closed", actor="officer-wang")
        assert [(a["action"], a["actor"]) for a in closed["actions"]] == [
            ("acknowledged", "officer-li"),
            ("closed", "officer-wang"),
        ]
        reopened, created = record_alarm(conn, _ev(w1 + dt.timedelta(weeks=3)))
        assert created and reopened != ids[0][0]  # a closed alert is not extended
        assert {a["status"] for a in list_alerts(conn)} == {"open", "closed"}
        with pytest.raises(ResourceNotFound):
            get_alert(conn, "missing")
    engine.dispose()


def test_registry_accepts_a_region_method() -> None:
    """A method registered by a region runs through detect() with its defaults and overrides."""

    def threshold(observed: Any, *, freq: int, dates: Any, timepoints: Any, limit: float) -> DetectionResult:
        obs = np.asarray(observed, dtype=np.float64).reshape(len(observed), -1)
        res = DetectionResult.empty("fixed", obs)
        res.upperbound[:] = limit
        res.alarm[:] = obs > limit
        res.evaluated[:] = True
        return res.squeeze(np.ndim(observed))

    register_method("fixed_threshold", threshold, params={"limit": 3.0})
    request_cleanup = methods._REGISTRY.pop  # leave the registry as found
    assert "fixed_threshold" in method_names()
    out = detect("fixed_threshold", np.array([1.0, 5.0, 2.0]))
    assert out.alarm.tolist() == [False, True, False] and out.method == "fixed_threshold"
    assert detect("fixed_threshold", np.array([1.0, 5.0]), limit=6.0).alarm.tolist() == [False, False]
    with pytest.raises(InvalidRequest, match="unknown aberration-detection method"):
        detect("nope", np.zeros(3))
    with pytest.raises(InvalidRequest, match="unknown farringtonFlexible parameter"):
        detect("farrington", np.zeros(400), bogus=1)
    request_cleanup("fixed_threshold")


def test_alerts_are_counted_per_status(db_url: str) -> None:
    """``rhip status`` reads the open alerts from ``count_by_status``; every status is present."""
    from rhip.surveillance.alerts import count_by_status

    engine = sa.create_engine(db_url)
    ensure_schema(engine)
    w1 = dt.date(2025, 1, 6)
    with engine.begin() as conn:
        assert count_by_status(conn) == {"open": 0, "acknowledged": 0, "closed": 0}
        first, _ = record_alarm(conn, _ev(w1))
        record_alarm(conn, _ev(w1, area="秀洲区"))
        record_alarm(conn, _ev(w1, area="嘉善县"))
        set_status(conn, first, "acknowledged", actor="officer-li")
        assert count_by_status(conn) == {"open": 2, "acknowledged": 1, "closed": 0}
    engine.dispose()
