"""``rhip quality``: the per-facility, per-day quality table (and ``--rules`` for rule detail)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import typer

#: How many known facility codes an unknown ``--facility`` is answered with.
_FACILITIES_SHOWN = 8

#: Table headers of the quality dimensions (数据质量维度), short enough for 80 columns.
_DIMENSION_HEADERS = {
    "completeness": "complete\n完整性",
    "conformance": "conform\n规范性",
    "plausibility": "plausible\n合理性",
    "timeliness": "timely\n及时性",
}


def print_facility_table(
    console: Any,
    engine: Any,
    facility: str | None = None,
    by_day: bool = False,
    facilities: Collection[str] | None = None,
) -> None:
    """Print overall and per-dimension scores per facility (and per day with ``by_day``).

    ``facilities`` keeps the table to those (``rhip ingest`` shows the sources it just loaded).
    """
    from rhip.quality.rules import DIMENSIONS
    from rhip.quality.scores import facility_scores
    from rhip.tables import compact_table

    title = "Data quality per facility" + (" and day" if by_day else "") + " (0-100) 数据质量"
    table = compact_table(title)
    table.add_column("facility\n机构", no_wrap=True)
    table.add_column("day\n日期", min_width=10)
    for header in ("score\n总分", *(_DIMENSION_HEADERS[d] for d in DIMENSIONS), "checks\n检查数"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in facility_scores(engine, facility=facility, by_day=by_day):
        if facilities is not None and row["facility"] not in facilities:
            continue
        table.add_row(
            row["facility"],
            row["day"].replace("..", " .. "),  # a span wraps between its two days, not inside one
            f"{row['score']:.1f}",
            *[("-" if row[d] is None else f"{row[d]:.1f}") for d in DIMENSIONS],
            f"{row['checks']:,}",
        )
    console.print(table)


def quality_command(
    ctx: typer.Context,
    facility: str | None = typer.Option(None, help="Only this facility."),
    rules: bool = typer.Option(False, "--rules", help="One row per rule instead of per facility."),
    by_day: bool = typer.Option(False, "--by-day", help="One row per facility and day."),
    catalogue: bool = typer.Option(False, "--catalogue", help="List the rule catalogue and exit."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Show data-quality scores per facility and day (from what was ingested)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from rhip.config import get_settings
    from rhip.quality.scores import rule_scores
    from rhip.store import Store

    console = Console()
    if catalogue:
        _print_catalogue(console)
        return
    store = Store(database_url or get_settings().resolved_database_url)
    try:
        if facility is not None:
            _check_facility(store.engine, facility)
        if rules:
            _print_rule_scores(console, rule_scores(store.engine, facility=facility))
        else:
            print_facility_table(console, store.engine, facility, by_day)
    finally:
        store.close()


def _print_rule_scores(console: Any, rows: list[dict[str, Any]]) -> None:
    """``--rules``: checked, failed and score per facility, day and rule, labelled in English and
    Chinese like the facility table."""
    from rhip.tables import compact_table

    table = compact_table("Data quality per rule (0-100) 规则质量")
    table.add_column("facility\n机构", no_wrap=True)
    table.add_column("day\n日期", no_wrap=True)
    table.add_column("rule\n规则", no_wrap=True)
    for header in ("checked\n检查数", "failed\n不合格", "score\n得分"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["facility"],
            r["day"],
            r["rule"],
            f"{r['checked']:,}",
            f"{r['failed']:,}",
            "-" if r["score"] is None else f"{r['score']:.1f}",
        )
    console.print(table)


def _print_catalogue(console: Any) -> None:
    """``--catalogue``: every registered rule, its dimension, the types it applies to, what it checks."""
    from rhip.quality import rules as rule_module
    from rhip.tables import compact_table

    table = compact_table("Quality rule catalogue 质量规则目录")
    for header in ("rule\n规则", "dimension\n维度", "applies to\n适用资源", "checks\n检查内容"):
        table.add_column(header)
    for r in rule_module.catalogue():
        table.add_row(r["id"], r["dimension"], r["applies_to"], r["description"])
    console.print(table)


def _check_facility(engine: Any, facility: str) -> None:
    """Refuse a facility with no quality records, naming a few that have some (RhipError: exit 2)."""
    from rhip.errors import RhipError
    from rhip.quality.scores import known_facilities

    known = known_facilities(engine)
    if facility in known:
        return
    if not known:
        raise RhipError(f"no quality records of facility {facility} are known: nothing has been ingested yet")
    shown = ", ".join(known[:_FACILITIES_SHOWN]) + (", ..." if len(known) > _FACILITIES_SHOWN else "")
    raise RhipError(
        f"no quality records of facility {facility} are known; "
        f"{len(known)} facilit{'y has' if len(known) == 1 else 'ies have'} some: {shown}"
    )


def chart_command(
    out: Path = typer.Option(Path("quality.html"), "--out", help="HTML file written (self-contained)."),
    facility: str | None = typer.Option(None, help="Only this facility."),
    days: int | None = typer.Option(
        None, min=1, help="Last days up to the latest tallied day (default: all)."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Write the quality charts (daily score per facility, latest score per rule) as an HTML file."""
    from rhip.config import get_settings
    from rhip.quality.chart import quality_page
    from rhip.store import Store

    store = Store(database_url or get_settings().resolved_database_url)
    try:
        if facility is not None:
            _check_facility(store.engine, facility)
        page = quality_page(store.engine, facility=facility, days=days)
    finally:
        store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    typer.echo(str(out))


def register(app: typer.Typer) -> None:
    """Add ``rhip quality`` (the tables) and ``rhip quality chart``."""
    group = typer.Typer(no_args_is_help=False)
    group.callback(invoke_without_command=True)(quality_command)
    group.command("chart")(chart_command)
    app.add_typer(group, name="quality")
