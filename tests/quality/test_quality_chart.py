"""Quality charts from a real ingest: ``rhip quality chart``, ``GET /quality/chart`` (authentication on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip_testkit import chart_figures, running_server

ADT = (
    "MSH|^~\\&|HIS|{fac}|R|R|{day}083000||ADT^A28^ADT_A05|{fac}{n}|P|2.5\r"
    "PID|1||M{n}^^^{fac}^MR||Li^Ming||{birth}|M\r"
)
MESSAGES = (
    ADT.format(fac="Q1", day="20261101", n=1, birth="19800101"),
    ADT.format(fac="Q1", day="20261101", n=2, birth=""),  # no birth date: completeness fails
    ADT.format(fac="Q1", day="20261102", n=3, birth="19900101"),
    ADT.format(fac="Q2", day="20261103", n=4, birth="19700101"),
)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("qchart")
    url = f"sqlite:///{root / 'q.sqlite'}"
    for facility in ("Q1", "Q2"):  # one file per sending facility
        path = root / f"{facility}.hl7"
        path.write_text("".join(m for m in MESSAGES if f"|{facility}|" in m), encoding="utf-8")
        result = CliRunner().invoke(app, ["ingest", str(path), "--no-link", "--database-url", url])
        assert result.exit_code == 0, result.output
    return url


def _rule_score(figure: dict[str, Any], rule: str) -> float:
    for trace in figure["data"]:
        if rule in trace["y"]:
            return float(trace["x"][trace["y"].index(rule)])
    raise AssertionError(f"{rule} not in the rule chart")


def test_cli_writes_daily_lines_and_latest_rule_bars(ingested: str, tmp_path: Path) -> None:
    """One line per facility over its days; per rule the score of each facility's latest day."""
    out = tmp_path / "quality.html"
    result = CliRunner().invoke(app, ["quality", "chart", "--out", str(out), "--database-url", ingested])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert "/static/plotly.min.js" not in page and len(page) > 3_000_000  # self-contained
    daily, rules = chart_figures(page)
    lines = {t["name"]: t["x"] for t in daily["data"]}
    assert lines == {"Q1": ["2026-11-01", "2026-11-02"], "Q2": ["2026-11-03"]}
    # Q1's latest day with Patients is 11-02 (1 of 1 with a birth date), Q2's 11-03 (1 of 1)
    assert _rule_score(rules, "completeness.patient-birthdate") == 100.0
    last_day = CliRunner().invoke(
        app,
        [
            "quality",
            "chart",
            "--out",
            str(out),
            "--days",
            "2",
            "--facility",
            "Q1",
            "--database-url",
            ingested,
        ],
    )
    assert last_day.exit_code == 0, last_day.output
    daily, rules = chart_figures(out.read_text(encoding="utf-8"))
    assert {t["name"]: t["x"] for t in daily["data"]} == {"Q1": ["2026-11-01", "2026-11-02"]}
    one = CliRunner().invoke(
        app, ["quality", "chart", "--out", str(out), "--days", "1", "--database-url", ingested]
    )
    daily, rules = chart_figures(out.read_text(encoding="utf-8"))
    assert one.exit_code == 0 and {t["name"] for t in daily["data"]} == {"Q2"}
    unknown = CliRunner().invoke(app, ["quality", "chart", "--facility", "NOPE", "--database-url", ingested])
    assert "no quality records of facility NOPE" in str(unknown.exception)  # `rhip` exits 2 with it


def test_the_table_command_still_answers(ingested: str) -> None:
    """``rhip quality`` (now a group with ``chart``) still prints the table and takes its options."""
    result = CliRunner().invoke(
        app, ["quality", "--by-day", "--database-url", ingested], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0 and "2026-11-03" in result.output


@pytest.fixture(scope="module")
def served(ingested: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.security.testing import issue_token
    from rhip.store import Store

    store = Store(ingested)
    settings = Settings(data_dir=tmp_path_factory.mktemp("qserve"), database_url=ingested, auth_enabled=True)
    application = create_app(store, settings)
    tokens = {
        "facadmin": issue_token(application, role="facility_admin", organization_id="Q1"),
        "doc": issue_token(application, role="practitioner", practitioner_id="d1"),
    }
    with running_server(application) as base:
        yield {"base": base, "tokens": tokens}
    store.close()


def test_api_chart_is_authenticated_and_references_the_static_plotly(served: dict[str, Any]) -> None:
    url = f"{served['base']}/quality/chart"
    assert httpx.get(url, timeout=60).status_code == 401
    doc = {"Authorization": f"Bearer {served['tokens']['doc']}"}
    assert httpx.get(url, headers=doc, timeout=60).status_code == 403
    admin = {"Authorization": f"Bearer {served['tokens']['facadmin']}"}
    response = httpx.get(url, params={"facility": "Q1"}, headers=admin, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    daily, rules = chart_figures(response.text)
    assert [t["name"] for t in daily["data"]] == ["Q1"]
    # Q1 alone: its latest day with Patients (11-02) has every birth date
    assert _rule_score(rules, "completeness.patient-birthdate") == 100.0
    assert f'src="{served["base"]}/static/plotly.min.js?v=' in response.text
    assert httpx.get(url, params={"days": 0}, headers=admin, timeout=60).status_code == 400
    unknown = httpx.get(url, params={"facility": "NOPE"}, headers=admin, timeout=60)
    assert unknown.status_code == 404 and "unknown facility 'NOPE'" in unknown.text  # as /quality/scores
