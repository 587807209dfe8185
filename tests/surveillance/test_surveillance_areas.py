"""District attribution, outbreak matching and history-aware signals, on real DuckDB/SQLite/numpy.

The district of a case is decided per resident over all linked records (codes, district names in
address text, golden record as tie-break), alerts are matched to injected outbreaks by district
code, disease code and week window, and a signal with a fallback covers the weeks its own
baseline cannot.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlalchemy as sa

from rhip.surveillance.alerts import AlertEvidence, ensure_schema, list_alerts, record_alarm
from rhip.surveillance.areas import DistrictDirectory, resident_districts
from rhip.surveillance.counting import CountTable
from rhip.surveillance.evaluation import Outbreak, match_alerts
from rhip.surveillance.runner import EARS_SHORT_HISTORY, Signal, detect_signal

DIRECTORY = DistrictDirectory(
    names={"330402": "南湖区", "330424": "海盐县", "330481": "海宁市"},
    facilities={"330424S01": "330424"},
)


def test_directory_codes_names_and_labels() -> None:
    """Codes pass through, names map to codes, address text finds the district, labels show both."""
    assert DIRECTORY.code_of("330481") == "330481"
    assert DIRECTORY.code_of("海盐县") == "330424"
    assert DIRECTORY.code_of("不存在区") is None and DIRECTORY.code_of(None) is None
    assert DIRECTORY.find_in_text("浙江省嘉兴市海宁市许村镇文苑路12号") == "330481"
    assert DIRECTORY.find_in_text("上海市黄浦区") is None
    assert DIRECTORY.label("330402") == "330402 南湖区"
    assert DIRECTORY.label("999999") == "999999"


def test_resident_district_is_a_vote_over_linked_records() -> None:
    """Records without address take the resident's district; the golden record breaks a tie."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE patient_demographics (patient_id VARCHAR, resident_id VARCHAR, "
        "district VARCHAR, address VARCHAR, is_golden BOOLEAN)"
    )
    rows = [
        # R1: code on one record, address text on another, nothing on the HL7 record
        ("p1", "R1", "330402", None, False),
        ("p2", "R1", None, "浙江省嘉兴市南湖区南湖街道双园路98号", False),
        ("p3", "R1", None, None, False),
        # R2: moved; two records say 海宁市, one old record says 海盐县
        ("p4", "R2", None, "浙江省嘉兴市海宁市许村镇文苑路12号", False),
        ("p5", "R2", "330481", None, False),
        ("p6", "R2", None, "浙江省嘉兴市海盐县武原街道广益路604号", False),
        # R3: one vote each, the golden record wins
        ("p7", "R3", "330424", None, True),
        ("p8", "R3", "330402", None, False),
        # unlinked patient without address: not placed here (facility fallback later)
        ("p9", None, None, None, False),
    ]
    con.executemany("INSERT INTO patient_demographics VALUES (?, ?, ?, ?, ?)", rows)
    got = resident_districts(con, DIRECTORY)
    assert got == {"R1": "330402", "R2": "330481", "R3": "330424"}


def _alert_db(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    ensure_schema(engine)
    return engine


def test_alerts_match_outbreaks_by_code_disease_and_window(tmp_path: Path) -> None:
    """An alert matches when district code, disease code and an alarm week in the window agree."""
    engine = _alert_db(tmp_path)
    monday = dt.date(2026, 3, 30)
    ob = Outbreak("1", "other-infectious-diarrhoea", "330402", monday, monday + dt.timedelta(weeks=3), 14)
    alarms = [
        ("other-infectious-diarrhoea", "330402", monday + dt.timedelta(weeks=1)),  # match, delay 1
        ("other-infectious-diarrhoea", "330402", monday + dt.timedelta(weeks=2)),  # extends it
        ("other-infectious-diarrhoea", "330402", monday + dt.timedelta(weeks=12)),  # after window
        ("other-infectious-diarrhoea", "330424", monday + dt.timedelta(weeks=1)),  # other district
        ("influenza", "330402", monday + dt.timedelta(weeks=1)),  # other disease
    ]
    with engine.begin() as conn:
        for disease, area, week in alarms:
            record_alarm(
                conn,
                AlertEvidence(disease, "district", area, "week", "ears_c2", week, 5, 0.2, 1.7, 3.0, []),
            )
    with engine.connect() as conn:
        alerts = list_alerts(conn)
    assert len(alerts) == 4
    findings, matched = match_alerts(alerts, [ob])
    assert len(matched) == 1 and set(matched.values()) == {"1"}
    (finding,) = findings
    assert finding.method == "ears_c2" and finding.delay == 1
    assert finding.first_alarm == monday + dt.timedelta(weeks=1)
    missed, none = match_alerts(alerts, [Outbreak("2", "mumps", "330402", monday, monday, 3)])
    assert missed[0].first_alarm is None and missed[0].delay is None and none == {}
    engine.dispose()


def _table(weeks: int, seed: int = 3) -> CountTable:
    start = dt.date(2020, 1, 6)
    periods = [start + dt.timedelta(weeks=i) for i in range(weeks)]
    counts = np.random.default_rng(seed).poisson(2.0, size=(weeks, 2)).astype(float)
    counts[-2, 0] += 15  # an outbreak at the end of area a
    return CountTable("influenza", "week", periods, ["a", "b"], counts)


@pytest.mark.parametrize("years", [2, 4])
def test_fallback_covers_weeks_before_the_baseline(years: int) -> None:
    """Farrington (b=3) evaluates only after three years; EARS covers every earlier week."""
    table = _table(52 * years + 4)
    signal = Signal("farrington", {"b": 3}, EARS_SHORT_HISTORY)
    res, methods = detect_signal({"influenza": table}, signal)["influenza"]
    ears_rows = [t for t, m in enumerate(methods) if m == "ears_c2"]
    farr_rows = [t for t, m in enumerate(methods) if m == "farrington"]
    first = 7 + 2  # EARS C2: 7-week baseline, 2-week lag
    assert ears_rows[0] == first and methods[:first] == [""] * first
    assert bool(res.evaluated[first:].all()) and not res.evaluated[:first].any()
    if years == 2:
        assert not farr_rows  # three years are not there: EARS only, no shortened Farrington
    else:
        assert farr_rows and farr_rows[0] > 3 * 52 and max(ears_rows) < farr_rows[0]
    assert bool(res.alarm[-2, 0])
    plain = detect_signal({"influenza": table}, EARS_SHORT_HISTORY)["influenza"][0]
    np.testing.assert_array_equal(res.alarm[ears_rows], plain.alarm[ears_rows])
    assert signal.label == "farrington(b=3) > ears_c2(minSigma=0.5)"
