"""An alert's series and chart: recomputed from the lake, served over authenticated HTTP, written by the CLI.

One small generated region (``surveillance_region``) is built once; runs record alerts, and the
API (authentication on, real uvicorn) and the CLI serve their series and charts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from surveillance_region import build_region
from typer.testing import CliRunner

from rhip.surveillance.runner import DEFAULT_SIGNALS, Signal, run_surveillance
from rhip_testkit import chart_figures, running_server

pytestmark = pytest.mark.xdist_group("surveillance_charts")

END = dt.date(2026, 12, 31)
#: EARS C2 with a floor on sigma: a signal whose parameters must be recorded to be run again.
FLOORED = Signal("ears_c2", {"minSigma": 0.5})


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The region with alerts of two runs: EARS C1, and EARS C2 with a floor on sigma."""
    built = build_region(tmp_path_factory.mktemp("charts"))
    built["reports"] = [
        run_surveillance(
            built["store"].engine, built["lake"], end=END, report_periods=0, signals=[s], history_years=5
        )
        for s in (Signal("ears_c1"), FLOORED)
    ]
    yield built
    built["store"].close()


@pytest.fixture(scope="module")
def api(region: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """uvicorn serving the region's store with authentication on, and tokens per role."""
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.security.testing import issue_token

    settings = Settings(data_dir=region["root"], database_url=region["url"], auth_enabled=True)
    app = create_app(region["store"], settings)
    tokens = {
        "ph": issue_token(app, role="public_health", area="330402"),
        "doc": issue_token(app, role="practitioner", practitioner_id="d1", organization_id="o1"),
        "facadmin": issue_token(app, role="facility_admin", organization_id="o1"),
    }
    with running_server(app) as base:
        yield {"base": base, "tokens": tokens}


def _get(api: dict[str, Any], who: str | None, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api['tokens'][who]}"} if who else {}
    return httpx.get(f"{api['base']}{path}", headers={**headers, **kw.pop("headers", {})}, timeout=120, **kw)


def _alerts(api: dict[str, Any]) -> list[dict[str, Any]]:
    response = _get(api, "ph", "/surveillance/alerts", params={"limit": 5000})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_series_equals_the_alarms_the_run_recorded(region: dict[str, Any], api: dict[str, Any]) -> None:
    """For every alarm period of an alert the series has the run's observed, expected, upper bound and
    method, and alarm set; the signal is the one recorded (EARS C2 with minSigma, not its defaults)."""
    alerts = _alerts(api)
    assert sum(r.alerts_created for r in region["reports"]) == len(alerts) > 0
    floored = [a for a in alerts if a["method"] == "ears_c2"]
    assert floored and all(e["signal"] == FLOORED.to_json() for a in floored for e in a["evidence"])
    for alert in [*floored[:4], *[a for a in alerts if a["method"] == "ears_c1"][:4]]:
        response = _get(api, "ph", f"/surveillance/alerts/{alert['id']}/series", params={"periods": 30})
        assert response.status_code == 200, response.text
        series = response.json()
        assert series["signal_recorded"] and len(series["points"]) == 30
        assert series["points"][-1]["period"] == alert["last_period"]
        by_period = {p["period"]: p for p in series["points"]}
        for ev in alert["evidence"]:
            point = by_period[ev["period"]]
            assert point["alarm"] and point["in_alert"] and point["method"] == alert["method"]
            assert (point["observed"], point["expected"], point["upperbound"], point["score"]) == (
                ev["observed"],
                ev["expected"],
                ev["upperbound"],
                ev["score"],
            )
        assert not any(p["in_alert"] for p in series["points"] if p["period"] < alert["first_period"])
    assert _get(api, "ph", f"/surveillance/alerts/{alerts[0]['id']}/series?periods=0").status_code == 400


def test_an_alert_recorded_without_its_signal_uses_the_default_one() -> None:
    """Alerts recorded before the signal was kept name only their method."""
    from rhip.surveillance.series import signal_of

    old = {"method": "ears_c2", "evidence": [{"period": "2025-01-06"}]}
    assert signal_of(old) == (DEFAULT_SIGNALS[0], False)
    assert signal_of({**old, "method": "cusum_rossi"}) == (Signal("cusum_rossi"), False)
    recorded = {**old, "evidence": [{"period": "2025-01-06", "signal": FLOORED.to_json()}]}
    assert signal_of(recorded) == (FLOORED, True)


def test_chart_page_holds_the_figure_and_loads_plotly_from_the_api(api: dict[str, Any]) -> None:
    """The page carries the series as plotly data (bars observed, lines expected and upper bound,
    alarms marked, bilingual labels) and references the API's cached, public plotly.js."""
    alert = next(a for a in _alerts(api) if a["method"] == "ears_c2")
    series = _get(api, "ph", f"/surveillance/alerts/{alert['id']}/series").json()
    response = _get(api, "ph", f"/surveillance/alerts/{alert['id']}/chart")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    (figure,) = chart_figures(page)
    bars, expected, upper, alarms = figure["data"]
    assert bars["type"] == "bar" and bars["y"] == [p["observed"] for p in series["points"]]
    assert expected["y"] == [p["expected"] for p in series["points"]]
    assert upper["y"] == [p["upperbound"] for p in series["points"]]
    assert alarms["x"] == [p["period"] for p in series["points"] if p["alarm"]] and alarms["x"]
    assert len(figure["layout"]["shapes"]) == len(alarms["x"])
    assert figure["layout"]["yaxis"]["title"]["text"] == "病例数 / cases"
    names = series["disease_name"]
    assert names["zh"] and names["en"] and f"{names['zh']} {names['en']}" in figure["layout"]["title"]["text"]
    assert len(page) < 100_000  # plotly.js is not inlined
    src = re.search(r'<script src="([^"]*/static/plotly\.min\.js[^"]*)"', page)
    assert src and src.group(1).startswith(api["base"])
    js = httpx.get(src.group(1), timeout=60)  # no token: a saved page still loads it
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip" and len(js.content) > 1_000_000
    assert "max-age=31536000" in js.headers["cache-control"]
    again = httpx.get(src.group(1), headers={"If-None-Match": js.headers["etag"]}, timeout=60)
    assert again.status_code == 304


def test_unknown_alert_and_roles_without_surveillance_rights(api: dict[str, Any]) -> None:
    alert_id = _alerts(api)[0]["id"]
    for path in ("series", "chart"):
        assert _get(api, "ph", f"/surveillance/alerts/nope/{path}").status_code == 404
        assert _get(api, None, f"/surveillance/alerts/{alert_id}/{path}").status_code == 401
        for who in ("doc", "facadmin"):
            assert _get(api, who, f"/surveillance/alerts/{alert_id}/{path}").status_code == 403


def test_cli_writes_a_self_contained_chart_and_lists_sparklines(
    region: dict[str, Any], tmp_path: Path
) -> None:
    """`rhip surveil chart` writes the page with plotly.js inlined and prints its path; `rhip surveil
    alerts` shows the last twelve weeks' counts as a sparkline."""
    from rhip.cli import app
    from rhip.store import Store

    store = Store(region["url"])
    try:
        from rhip.surveillance.alerts import list_alerts

        with store.engine.connect() as conn:
            alert = next(a for a in list_alerts(conn, limit=5000) if a["method"] == "ears_c2")
    finally:
        store.close()
    out = tmp_path / "charts" / "alert.html"
    args = ["--lake-dir", str(region["lake"]), "--database-url", region["url"]]
    result = CliRunner().invoke(
        app, ["surveil", "chart", alert["id"][:10], "--out", str(out), "--periods", "20", *args]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert "/static/plotly.min.js" not in page and len(page) > 3_000_000  # plotly.js inlined
    (figure,) = chart_figures(page)
    assert len(figure["data"][0]["x"]) == 20 and figure["data"][0]["x"][-1] == alert["last_period"]
    listed = CliRunner().invoke(app, ["surveil", "alerts", *args], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.split()[:1] == [alert["id"][:12]])
    spark = re.search(r"[▁▂▃▄▅▆▇█]{12}", row)
    assert spark and spark.group(0)[-1] != "▁"  # the alert's own week has cases


def test_an_officer_acknowledges_and_closes_alerts_and_nothing_else(api: dict[str, Any]) -> None:
    """Public-health officers are the users of alerts: with authentication on they acknowledge and
    close them (each action kept with its actor), but write no clinical record; practitioners do
    neither."""
    alert_id = _alerts(api)[0]["id"]
    headers = {"Authorization": f"Bearer {api['tokens']['ph']}"}
    doc = {"Authorization": f"Bearer {api['tokens']['doc']}"}
    url = f"{api['base']}/surveillance/alerts/{alert_id}"
    assert httpx.post(f"{url}/acknowledge", json={}, headers=doc, timeout=60).status_code == 403
    acked = httpx.post(f"{url}/acknowledge", json={"note": "checking"}, headers=headers, timeout=60)
    assert acked.status_code == 200, acked.text
    closed = httpx.post(f"{url}/close", json={"note": "cluster explained"}, headers=headers, timeout=60)
    assert closed.status_code == 200, closed.text
    actions = _get(api, "ph", f"/surveillance/alerts/{alert_id}").json()["actions"]
    assert [a["action"] for a in actions][-2:] == ["acknowledged", "closed"]
    patient = {"resourceType": "Patient", "id": "ph-write", "gender": "female"}
    refused = httpx.put(f"{api['base']}/fhir/Patient/ph-write", json=patient, headers=headers, timeout=60)
    assert refused.status_code == 403, refused.text
