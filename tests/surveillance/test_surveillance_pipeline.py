"""From a generated region to alerts: lake counting, de-duplication, alerts, API, CLI, evaluation.

One small region (3,000 residents, 4 years, FHIR facilities) is generated, loaded into a SQLite
store, exported to a Parquet lake and materialised once per module.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from surveillance_region import build_region
from typer.testing import CliRunner

from rhip.fhir.terminology import notifiable_disease_for_icd10
from rhip.surveillance.counting import count_cases, default_definitions, lake_cases
from rhip.surveillance.evaluation import evaluate_region
from rhip.surveillance.runner import Signal, run_surveillance

pytestmark = pytest.mark.xdist_group("surveillance_region")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    built = build_region(tmp_path_factory.mktemp("surv"))
    yield built
    built["store"].close()


def _truth_cases(gen: Path) -> list[dict[str, str]]:
    with (gen / "truth/notifiable_cases.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _district_names(gen: Path) -> dict[str, str]:
    with (gen / "region/facilities.csv").open(encoding="utf-8") as fh:
        return {r["district_code"]: r["district"] for r in csv.DictReader(fh)}


def test_counted_cases_are_the_generated_notifiable_cases(region: dict[str, Any]) -> None:
    """Every counted case is a true notifiable case with the right disease and resident district
    (GB/T 2260 code, decided per resident over all linked records)."""
    cases = lake_cases(region["lake"], default_definitions(), dt.date(2000, 1, 1), dt.date(2100, 1, 1))
    truth = {r["encounter_id"]: r for r in _truth_cases(region["gen"])}
    assert len(cases) >= 20
    assert not [c for c in cases if c.district == "unknown"]
    moved = 0
    for c in cases:
        enc = c.condition_id.rsplit("-c", 1)[0]
        assert enc in truth, c.condition_id
        row = truth[enc]
        disease = notifiable_disease_for_icd10(row["icd10"])
        assert disease is not None and disease.code == c.disease
        moved += row["district_code"] != c.district
        assert c.day.isoformat() == row["date"]
    # No identity linking in this fixture: a record that carries a household's earlier address
    # (generator noise "old-address") places its case there; linked records vote it away.
    assert moved <= 0.12 * len(cases), moved


def test_counts_are_dense_and_match_cases(region: dict[str, Any]) -> None:
    """count_cases keeps zero weeks, sums to the cases and keeps the cases of each cell."""
    cases = lake_cases(region["lake"], default_definitions(), dt.date(2000, 1, 1), dt.date(2100, 1, 1))
    start, end = min(c.day for c in cases), max(c.day for c in cases)
    tables = count_cases(cases, start=start, end=end)
    total = sum(t.counts.sum() for t in tables.values())
    assert total == len(cases)
    for t in tables.values():
        assert all((b - a).days == 7 for a, b in zip(t.periods, t.periods[1:], strict=False))
        assert sum(len(v) for v in t.cases.values()) == t.counts.sum()


def test_run_records_deduplicated_alerts_and_api_serves_them(region: dict[str, Any], tmp_path: Path) -> None:
    """Alarms in consecutive weeks form one alert; the API lists it, serves its Group and audits actions."""
    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.config import Settings

    store = region["store"]
    report = run_surveillance(
        store.engine,
        region["lake"],
        end=dt.date(2026, 12, 31),
        report_periods=0,
        signals=[Signal("ears_c1")],
        history_years=5,
    )
    assert report.alarms
    assert report.alerts_created + report.alerts_extended == len(report.alarms)
    again = run_surveillance(
        store.engine,
        region["lake"],
        end=dt.date(2026, 12, 31),
        report_periods=0,
        signals=[Signal("ears_c1")],
        history_years=5,
    )
    assert again.alerts_created == 0  # a re-run adds nothing new
    settings = Settings(data_dir=tmp_path, database_url=region["url"], auth_enabled=False)
    app = create_app(store, settings, router_modules=("rhip.surveillance.api",))
    with TestClient(app) as client:
        alerts = client.get("/surveillance/alerts").json()
        assert len(alerts) == report.alerts_created
        multi = [a for a in alerts if len(a["evidence"]) > 1]
        for a in multi:
            weeks = sorted(dt.date.fromisoformat(e["period"]) for e in a["evidence"])
            assert all((y - x).days == 7 for x, y in itertools.pairwise(weeks))
        first = alerts[0]
        group = client.get(f"/surveillance/alerts/{first['id']}/Group").json()
        assert group["resourceType"] == "Group" and group["quantity"] == first["case_count"] > 0
        ref = group["member"][0]["entity"]["reference"]
        assert store.read("Patient", ref.split("/")[1])["resourceType"] == "Patient"
        r = client.post(
            f"/surveillance/alerts/{first['id']}/acknowledge", json={"by": "officer-li", "note": "seen"}
        )
        assert r.status_code == 200 and r.json()["status"] == "acknowledged"
        assert client.post(f"/surveillance/alerts/{first['id']}/acknowledge", json={}).status_code == 400
        closed = client.post(f"/surveillance/alerts/{first['id']}/close", json={"by": "officer-li"}).json()
        assert [a["action"] for a in closed["actions"]] == ["acknowledged", "closed"]
        # times are instants with an offset, as in the rest of the API (they were epoch seconds)
        instant = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
        times = [closed["created"], closed["updated"], *(a["at"] for a in closed["actions"])]
        assert all(isinstance(t, str) and instant.fullmatch(t) for t in times), times
        assert client.get("/surveillance/alerts/nope").status_code == 404
        assert client.get("/surveillance/alerts", params={"status": "closed"}).json()[0]["id"] == first["id"]


def test_case_definitions_over_api(region: dict[str, Any], tmp_path: Path) -> None:
    """A region definition is added, validated, used in the list and removed again."""
    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.config import Settings

    settings = Settings(data_dir=tmp_path, database_url=region["url"], auth_enabled=False)
    app = create_app(region["store"], settings, router_modules=("rhip.surveillance.api",))
    with TestClient(app) as client:
        builtin = client.get("/surveillance/case-definitions").json()
        assert len([d for d in builtin if d["source"] == "built-in"]) >= 40
        body = {"name": "Influenza-like illness", "icd10": ["J10", "J11", "J06.9"], "episode_days": 14}
        assert client.put("/surveillance/case-definitions/ili", json=body).status_code == 200
        assert client.put("/surveillance/case-definitions/bad", json={"icd10": []}).status_code == 400
        ili = [d for d in client.get("/surveillance/case-definitions").json() if d["code"] == "ili"]
        assert ili and ili[0]["episode_days"] == 14
        assert client.delete("/surveillance/case-definitions/ili").status_code == 204
        assert client.delete("/surveillance/case-definitions/ili").status_code == 404


def test_cli_run_and_alerts(region: dict[str, Any]) -> None:
    """`rhip surveil run` prints alarms; `rhip surveil alerts` lists them."""
    from rhip.cli import app

    runner = CliRunner()
    args = ["--lake-dir", str(region["lake"]), "--database-url", region["url"]]
    out = runner.invoke(
        app, ["surveil", "run", "--end", "2026-12-31", "--periods", "0", "--methods", "ears_c2", *args]
    )
    assert out.exit_code == 0, out.output
    assert "Signals 预警信号:" in out.output and "alarms from" in out.output
    assert "病种" in out.output and "观察数" in out.output  # the tables had English labels only
    listed = runner.invoke(app, ["surveil", "alerts", "--database-url", region["url"]])
    assert listed.exit_code == 0 and "ears_c2" in listed.output
    assert "Surveillance alerts 预警" in listed.output and "病例" in listed.output


def test_evaluation_against_injected_outbreaks(region: dict[str, Any]) -> None:
    """Every method is scored; outbreaks with cases in the FHIR facilities are found by EARS C1."""
    scores = {s.method: s for s in evaluate_region(region["gen"], region["lake"], ["ears_c1", "farrington"])}
    assert scores["ears_c1"].outbreaks > 0
    assert 0 < scores["ears_c1"].detected <= scores["ears_c1"].outbreaks
    assert scores["ears_c1"].median_delay >= 0
    assert scores["farrington"].area_years > 0


def test_evaluate_command_shows_its_steps_and_prints_the_table(region: dict[str, Any]) -> None:
    """Regression: ``rhip surveil evaluate`` ran for minutes on a large region showing nothing;
    each step is now named as it starts, and the command still prints its table and exits 0."""
    from rhip.cli import app

    steps: list[str] = []
    evaluate_region(region["gen"], region["lake"], ["ears_c1", "farrington"], steps.append)
    assert steps == [
        "reading cases from the lake",
        "counting weekly cases",
        "scoring ears_c1",
        "scoring farrington",
    ]
    args = ["surveil", "evaluate", str(region["gen"]), "--methods", "ears_c1"]
    args += ["--lake-dir", str(region["lake"])]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "Methods against injected outbreaks" in out.output and "ears_c1" in out.output


def test_demo_report_lists_outbreaks_by_district_code(region: dict[str, Any], tmp_path: Path) -> None:
    """The demo step backfills the default signals and prints every injected outbreak with
    ``code name`` districts; its count agrees with matching the recorded alerts to the truth."""
    import sqlalchemy as sa
    from rich.console import Console

    from rhip.surveillance.alerts import list_alerts
    from rhip.surveillance.cli import print_demo_alerts
    from rhip.surveillance.evaluation import match_alerts, read_outbreaks

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    console = Console(record=True, width=200)
    found = print_demo_alerts(console, engine, region["lake"], region["gen"], end=dt.date(2026, 12, 31))
    text = console.export_text()
    outbreaks = read_outbreaks(region["gen"])
    with engine.connect() as conn:
        alerts = list_alerts(conn, limit=5000)
    findings, matched = match_alerts(alerts, outbreaks)
    assert found == sum(f.first_alarm is not None for f in findings) > 0
    assert f"injected outbreaks detected: {found} of {len(outbreaks)}" in text
    assert all(f.delay is None or 0 <= f.delay <= 6 for f in findings)
    names = _district_names(region["gen"])
    for ob in outbreaks:
        assert f"{ob.district} {names[ob.district]}" in text
    assert "per district-year" in text and len(matched) <= len(alerts)
    engine.dispose()
