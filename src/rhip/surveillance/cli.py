"""``rhip surveil``: run the signals, list and handle alerts, evaluate the methods."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

surveil = typer.Typer(
    help="Public-health surveillance: aberration detection and alerts.", no_args_is_help=True
)


def _store(database_url: str | None) -> Any:
    from rhip.config import get_settings
    from rhip.store import Store

    return Store(database_url or get_settings().resolved_database_url)


@contextlib.contextmanager
def _alerts_engine(database_url: str | None) -> Iterator[Any]:
    """The store's engine with the alert tables at the newest migration; the store closes after."""
    from rhip.surveillance.alerts import ensure_schema

    store = _store(database_url)
    try:
        ensure_schema(store.engine)
        yield store.engine
    finally:
        store.close()


def _lake(lake_dir: Path | None) -> Path:
    from rhip.config import get_settings

    return lake_dir or Path(get_settings().lake_dir)


def print_alarms(console: Any, alarms: list[Any], title: str) -> None:
    """Print alarms as a table (disease, area, period, method, observed, expected, bound)."""
    from rhip.tables import compact_table

    table = compact_table(title)
    for col in ("disease\n病种", "area\n地区", "period\n周期", "method\n方法"):
        table.add_column(col)
    for col in ("observed\n观察数", "expected\n期望数", "upper bound\n上限"):
        table.add_column(col, justify="right")
    for a in alarms:
        table.add_row(
            a.disease,
            a.area,
            a.period.isoformat(),
            a.method,
            f"{a.observed:.0f}",
            "-" if a.expected is None else f"{a.expected:.2f}",
            "-" if a.upperbound is None else f"{a.upperbound:.2f}",
        )
    console.print(table)


def run_command(
    end: str | None = typer.Option(None, help="Last day considered (YYYY-MM-DD; default yesterday)."),
    methods: str = typer.Option("", help="Comma-separated methods (default: the configured defaults)."),
    area: str = typer.Option("district", help="district or facility."),
    unit: str = typer.Option("week", help="week or day."),
    periods: int = typer.Option(1, help="Latest periods that raise alerts (0: every evaluated period)."),
    history_years: int = typer.Option(6, help="Years of baseline history counted."),
    lake_dir: Path | None = typer.Option(None, "--lake-dir", help="Lake root (default: settings)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Count cases, run the signals and record alerts (the daily job)."""
    from rich.console import Console

    from rhip.surveillance.runner import DEFAULT_SIGNALS, Signal, run_surveillance

    signals = tuple(Signal(m.strip()) for m in methods.split(",") if m.strip()) or DEFAULT_SIGNALS
    try:
        day = dt.date.fromisoformat(end) if end else None
    except ValueError:
        raise typer.BadParameter(f"'{end}' is not a day: use YYYY-MM-DD", param_hint="--end") from None
    store = _store(database_url)
    console = Console()
    try:
        with console.status("counting cases and running signals"):
            report = run_surveillance(
                store.engine,
                _lake(lake_dir),
                end=day,
                report_periods=periods,
                signals=signals,
                area=area,
                unit=unit,
                history_years=history_years,
            )
    finally:
        store.close()
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")
    print_alarms(
        console,
        report.alarms,
        f"Signals 预警信号: {len(report.alarms)} alarms from {report.cases} cases, {report.series} series",
    )
    console.print(f"alerts created: {report.alerts_created}, extended: {report.alerts_extended}")


def alerts_command(
    status: str | None = typer.Option(None, help="open, acknowledged or closed."),
    lake_dir: Path | None = typer.Option(
        None, "--lake-dir", help="Lake root for the recent-counts column (default: settings)."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """List alerts; with a materialised lake, the last 12 periods' counts as a sparkline."""
    from rich.console import Console
    from rich.measure import Measurement

    from rhip.surveillance.alerts import list_alerts

    with _alerts_engine(database_url) as engine:
        with engine.connect() as conn:
            rows = list_alerts(conn, status=status)
        recent = _recent(engine, _lake(lake_dir), rows)
    console = Console()
    table = _alerts_table(rows, recent)
    if (
        recent is not None
        and Measurement.get(console, console.options.update_width(10**4), table).maximum > console.width
    ):
        table = _alerts_table(rows, None)  # the sparkline only where it fits without wrapping
    console.print(table)


def _alerts_table(rows: list[dict[str, Any]], recent: dict[str, list[float]] | None) -> Any:
    """The alert list; with ``recent`` counts a sparkline column of the last periods."""
    from rhip.tables import compact_table, sparkline

    table = compact_table("Surveillance alerts 预警")
    table.add_column("id\n编号", no_wrap=True)  # the prefix `rhip surveil ack` takes: never cut
    table.add_column("disease\n病种", overflow="fold")
    for col in ("area\n地区", "first\n首期", "last\n末期", "method\n方法"):
        table.add_column(col, no_wrap=True)
    table.add_column("status\n状态")
    table.add_column("cases\n病例", justify="right")
    if recent is not None:
        table.add_column(f"last {SPARK_PERIODS}\n近{SPARK_PERIODS}期", no_wrap=True)
    for r in rows:
        cells = [r["id"][:12], r["disease"], r["area"], r["first_period"], r["last_period"], r["method"]]
        cells += [r["status"], str(r["case_count"])]
        if recent is not None:
            cells.append(sparkline(recent[r["id"]]) if r["id"] in recent else "-")
        table.add_row(*cells)
    return table


#: Periods in the sparkline column of ``rhip surveil alerts``.
SPARK_PERIODS = 12


def _recent(engine: Any, lake_dir: Path, rows: list[dict[str, Any]]) -> dict[str, list[float]] | None:
    """Recent counts per alert, or None (no column) when there are no alerts or no lake views."""
    from rhip.surveillance.series import recent_counts

    if not rows or not (lake_dir / "views" / "condition.parquet").exists():
        return None
    return recent_counts(engine, lake_dir, rows, SPARK_PERIODS)


def _set(alert_id: str, status: str, by: str, note: str | None, database_url: str | None) -> None:
    from rich.console import Console

    from rhip.store.engine import write_transaction
    from rhip.surveillance.alerts import set_status

    with _alerts_engine(database_url) as engine, write_transaction(engine) as conn:
        out = set_status(conn, _resolve(conn, alert_id), status, actor=by, note=note)
    Console().print(f"alert {out['id']} is {out['status']}")


def _resolve(conn: Any, alert_id: str) -> str:
    """The one alert id starting with ``alert_id`` (BadParameter when none or several do)."""
    from rhip.surveillance.alerts import alert_table

    ids = [
        r[0]
        for r in conn.execute(alert_table.select().with_only_columns(alert_table.c.id))
        if str(r[0]).startswith(alert_id)
    ]
    if len(ids) != 1:
        raise typer.BadParameter(f"alert id prefix {alert_id!r} matches {len(ids)} alerts")
    return str(ids[0])


def chart_command(
    alert_id: str = typer.Argument(..., help="Alert id (or unique prefix)."),
    out: Path = typer.Option(Path("alert.html"), "--out", help="HTML file written (self-contained)."),
    periods: int = typer.Option(52, "--periods", min=1, max=520, help="Periods up to the alert's last."),
    lake_dir: Path | None = typer.Option(None, "--lake-dir", help="Lake root (default: settings)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Write an alert's chart (observed, expected, upper bound, alarms) as an HTML file."""
    from rhip.surveillance.alerts import get_alert
    from rhip.surveillance.chart import alert_page
    from rhip.surveillance.series import alert_series

    with _alerts_engine(database_url) as engine:
        with engine.connect() as conn:
            alert = get_alert(conn, _resolve(conn, alert_id))
        series = alert_series(engine, _lake(lake_dir), alert, periods)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(alert_page(series), encoding="utf-8")
    typer.echo(str(out))


def ack_command(
    alert_id: str = typer.Argument(..., help="Alert id (or unique prefix)."),
    by: str = typer.Option(..., "--by", help="Officer acknowledging."),
    note: str | None = typer.Option(None, help="Note kept with the action."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Acknowledge an alert."""
    _set(alert_id, "acknowledged", by, note, database_url)


def close_command(
    alert_id: str = typer.Argument(..., help="Alert id (or unique prefix)."),
    by: str = typer.Option(..., "--by", help="Officer closing."),
    note: str | None = typer.Option(None, help="Note kept with the action."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Close an alert."""
    _set(alert_id, "closed", by, note, database_url)


@contextlib.contextmanager
def _steps(total: int) -> Iterator[Callable[[str], None]]:
    """A transient progress bar over ``total`` steps; yields the callback naming each step as it
    starts (an evaluation takes minutes on a large region and otherwise shows nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("starting", total=total)
        started = 0

        def on_step(description: str) -> None:
            nonlocal started
            bar.update(task, description=description, completed=started)
            started += 1

        yield on_step


def evaluate_command(
    region_dir: Path = typer.Argument(..., help="Output folder of `rhip generate` (truth/, region/)."),
    methods: str = typer.Option("ears_c1,ears_c2,ears_c3,farrington,noufaily,cusum_rossi", help="Methods."),
    lake_dir: Path | None = typer.Option(None, "--lake-dir", help="Lake root (default: settings)."),
) -> None:
    """Score methods (and the default signals) against the generator's injected outbreaks."""
    from rich.console import Console

    from rhip.surveillance.evaluation import evaluate_region
    from rhip.surveillance.runner import DEFAULT_SIGNALS, Signal
    from rhip.tables import compact_table

    signals = [*(Signal(m.strip()) for m in methods.split(",") if m.strip()), *DEFAULT_SIGNALS]
    with _steps(2 + len(signals)) as on_step:
        scores = evaluate_region(region_dir, _lake(lake_dir), signals, on_step)
    table = compact_table("Methods against injected outbreaks 方法评估 (weekly, by district)")
    table.add_column("method\n方法", no_wrap=True)
    for col in (
        "outbreaks\n暴发",
        "detected\n发现",
        "sensitivity\n灵敏度",
        "false alarms /\narea-year\n误报/地区年",
        "median delay\n(weeks)\n中位延迟",
    ):
        table.add_column(col, justify="right")
    for s in scores:
        table.add_row(
            s.method,
            str(s.outbreaks),
            str(s.detected),
            f"{s.sensitivity:.2f}",
            f"{s.false_alarm_rate:.2f}",
            f"{s.median_delay:.1f}",
        )
    Console().print(table)


def methods_command() -> None:
    """List the registered aberration-detection methods."""
    from rich.console import Console

    from rhip.surveillance.methods import get_method, method_names

    for name in method_names():
        spec = get_method(name)
        Console().print(f"[bold]{name}[/]: {spec.description} {dict(spec.params)}")


def register(app: typer.Typer) -> None:
    """Add ``rhip surveil``."""
    surveil.command("run")(run_command)
    surveil.command("alerts")(alerts_command)
    surveil.command("ack")(ack_command)
    surveil.command("close")(close_command)
    surveil.command("chart")(chart_command)
    surveil.command("evaluate")(evaluate_command)
    surveil.command("methods")(methods_command)
    app.add_typer(surveil, name="surveil")


def print_demo_alerts(
    console: Any, engine: Any, lake_dir: Path, region_dir: Path, *, end: dt.date | None = None
) -> int:
    """Demo step: backfill the default signals over the whole period, print the alerts, each
    injected outbreak (detected or not, method, first alarm week, delay) and the false alarms.

    Returns the number of injected outbreaks detected.
    """
    from rhip.surveillance.alerts import list_alerts
    from rhip.surveillance.areas import district_directory
    from rhip.surveillance.evaluation import match_alerts, read_outbreaks
    from rhip.surveillance.runner import run_surveillance

    report = run_surveillance(
        engine, lake_dir, end=end or dt.date.today(), report_periods=0, history_years=10
    )
    directory = district_directory(lake_dir)
    outbreaks = read_outbreaks(region_dir)
    with engine.connect() as conn:
        alerts = list_alerts(conn, limit=5000)
    findings, matched = match_alerts(alerts, outbreaks)
    _print_alert_table(console, alerts, matched, findings, directory.label)
    _print_outbreak_table(console, findings, directory.label)
    false = [a for a in alerts if a["id"] not in matched]
    rate = len(false) / report.area_years if report.area_years else float("nan")
    by_cell: dict[tuple[str, str], int] = {}
    for a in false:
        key = (directory.label(a["area"]), a["first_period"][:4])
        by_cell[key] = by_cell.get(key, 0) + 1
    cells = ", ".join(f"{area} {year}: {n}" for (area, year), n in sorted(by_cell.items()))
    found = sum(f.first_alarm is not None for f in findings)
    console.print(
        f"injected outbreaks detected: {found} of {len(outbreaks)}; "
        f"false alerts: {len(false)} ({rate:.2f} per district-year over "
        f"{report.area_years:.1f} district-years){'; ' + cells if cells else ''}"
    )
    return found


def _print_alert_table(
    console: Any, alerts: list[Any], matched: dict[str, str], findings: list[Any], label: Any
) -> None:
    from rhip.tables import compact_table

    starts = {f.outbreak.outbreak_id: f.outbreak.first_week for f in findings}
    table = compact_table("Surveillance alerts 预警信号 (injected outbreak and detection delay)")
    for col in ("disease\n病种", "district\n地区", "weeks\n周", "method\n方法", "cases\n病例"):
        table.add_column(col)
    table.add_column("outbreak\n暴发")
    table.add_column("delay\n(weeks)\n延迟")
    for a in sorted(alerts, key=lambda x: (x["first_period"], x["disease"], x["area"])):
        ob = matched.get(a["id"])
        first = dt.date.fromisoformat(a["first_period"][:10])
        table.add_row(
            a["disease"],
            label(a["area"]),
            f"{a['first_period'][:10]} .. {a['last_period'][:10]}",
            a["method"],
            str(a["case_count"]),
            ob or "-",
            str(max(0, (first - starts[ob]).days // 7)) if ob else "-",
        )
    console.print(table)


def _print_outbreak_table(console: Any, findings: list[Any], label: Any) -> None:
    from rhip.tables import compact_table

    table = compact_table("Injected outbreaks 模拟暴发 (generator truth) and their first alarm")
    for col in (
        "outbreak\n暴发",
        "disease\n病种",
        "district\n地区",
        "weeks\n周",
        "extra\ncases\n病例",
        "detected\n发现",
        "method\n方法",
        "first\nalarm\n首次预警",
        "delay\n(weeks)\n延迟",
    ):
        table.add_column(col)
    for f in sorted(findings, key=lambda x: x.outbreak.first_week):
        ob = f.outbreak
        table.add_row(
            ob.outbreak_id,
            ob.disease,
            label(ob.district),
            f"{ob.first_week.isoformat()} .. {ob.last_week.isoformat()}",
            str(ob.extra_cases),
            "yes" if f.first_alarm else "no",
            f.method or "-",
            f.first_alarm.isoformat() if f.first_alarm else "-",
            "-" if f.delay is None else str(f.delay),
        )
    console.print(table)
