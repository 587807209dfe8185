"""``rhip export`` (store -> Parquet lake + materialised views) and ``rhip sql`` (query the lake).

Heavy libraries (DuckDB, pyarrow, pyspark) load inside the command bodies so that ``rhip --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rhip.errors import InvalidRequest


def export(
    full: bool = typer.Option(
        False, "--full", help="Rewrite a full snapshot instead of an incremental delta."
    ),
    types: list[str] | None = typer.Option(
        None, "--type", "-t", help="Resource type(s) to export (default all)."
    ),
    views: bool = typer.Option(True, "--views/--no-views", help="Materialise the standard views afterwards."),
    stored_views: bool = typer.Option(
        True,
        "--stored-views/--no-stored-views",
        help="Also materialise ViewDefinitions stored in the platform.",
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
    lake_dir: Path | None = typer.Option(None, "--lake-dir", help="Lake root (default: <data dir>/lake)."),
) -> None:
    """Export the store into the Parquet lake (only what changed since the last export) and views."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rhip.config import get_settings
    from rhip.fhir import is_resource_type
    from rhip.lake.export import export_store
    from rhip.lake.library import load_views, materialize, store_views
    from rhip.store import Store

    unknown = [t for t in types or () if not is_resource_type(t)]
    if unknown:  # the lake's view of it would fail half-way, after the export
        raise typer.BadParameter(
            f"'{unknown[0]}' is not an R4 resource type (e.g. Patient, Observation)", param_hint="--type"
        )
    settings = get_settings()
    lake = lake_dir or settings.lake_dir
    store = Store(database_url or settings.resolved_database_url)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
        ) as bar:
            task = bar.add_task("exporting resources", total=None)
            report = export_store(
                store, lake, types=types or None, full=full, on_rows=lambda n: bar.advance(task, n)
            )
            bar.update(task, total=bar.tasks[0].completed)
            counts: dict[str, int] = {}
            if views:
                all_views = load_views()
                if stored_views:
                    all_views.update(store_views(store))
                vtask = bar.add_task("materialising views", total=len(all_views) + 1)
                counts = materialize(lake, all_views, on_view=lambda name, n: bar.advance(vtask))
                bar.update(vtask, completed=len(all_views) + 1)
    finally:
        store.close()
    typer.echo(f"{report.mode} export: {report.total:,} rows in {report.seconds:.1f}s -> {lake}")
    for rtype in sorted(report.written):
        typer.echo(f"  {rtype:<24} {report.written[rtype]:>10,} written {report.deleted[rtype]:>8,} deleted")
    for name, n in counts.items():
        typer.echo(f"  view {name:<19} {n:>10,} rows")


def sql(
    query: str | None = typer.Argument(
        None, help="SQL to run (DuckDB dialect); tables are the view names and fhir_<type>."
    ),
    view: Path | None = typer.Option(None, "--view", help="Run a ViewDefinition JSON file instead of SQL."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file (required for parquet)."
    ),
    engine_name: str = typer.Option("duckdb", "--engine", help="duckdb | spark (spark needs rhip[spark])."),
    limit: int = typer.Option(50, "--limit", help="Rows shown in table format."),
    lake_dir: Path | None = typer.Option(None, "--lake-dir", help="Lake root (default: <data dir>/lake)."),
) -> None:
    """Query the lake: materialised views by name (patient, encounter, ...) and fhir_<type> tables."""
    from rhip.config import get_settings

    lake = lake_dir or get_settings().lake_dir
    if fmt not in ("table", "csv", "json", "parquet"):
        raise typer.BadParameter("format must be table, csv, json or parquet", param_hint="--format")
    if (query is None) == (view is None):
        raise typer.BadParameter("give either a SQL query or --view FILE")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("parquet output needs --output FILE", param_hint="--output")
    if not lake.is_dir():  # else every table is 'does not exist', which sends one to the SQL
        raise InvalidRequest(f"no lake at {lake}: run `rhip export` first, or give --lake-dir")
    columns, rows = _run(query, view, engine_name, lake, fmt, output)
    if fmt == "parquet":
        typer.echo(f"wrote {output}")
        return
    _emit(columns, rows, fmt, output, limit)


def _run(
    query: str | None, view: Path | None, engine_name: str, lake: Path, fmt: str, output: Path | None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    from rhip.lake.engine import DuckDBEngine, SparkEngine

    engine: DuckDBEngine | SparkEngine
    engine = SparkEngine() if engine_name == "spark" else DuckDBEngine()
    if engine_name not in ("duckdb", "spark"):
        raise typer.BadParameter("engine must be duckdb or spark", param_hint="--engine")
    engine.attach_lake(lake)
    if view is not None:
        try:
            definition = json.loads(view.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"{view}: {exc}") from exc
        compiled = engine.compile(definition)
        text, params, columns = compiled.sql, compiled.params, compiled.column_names
    else:
        text, params, columns = query or "", {}, []
    if isinstance(engine, SparkEngine):
        _spark_views(engine, lake)
        df = engine.spark.sql(text, args=params or None)
        if fmt == "parquet" and output is not None:
            df.write.mode("overwrite").parquet(str(output))
            return [], []
        return list(df.columns), [tuple(r) for r in df.collect()]
    _duckdb_views(engine, lake)
    if fmt == "parquet" and output is not None:
        engine.con.execute(f"COPY ({text}) TO '{_escape(str(output))}' (FORMAT parquet)", params or None)
        return [], []
    try:
        cur = engine.con.execute(text, params or None)
    except Exception as exc:
        raise InvalidRequest(_query_failed(engine.con, exc)) from exc
    names = [d[0] for d in cur.description or []] or columns
    return names, cur.fetchall()


def _query_failed(con: Any, exc: Exception) -> str:
    """The error of a failed query; for an unknown table, the tables and views there are (a
    newcomer guessing ``patients`` or ``Patient`` learns the names without reading the docs)."""
    message = f"query failed: {str(exc).splitlines()[0]}"
    if "Table with name" not in str(exc):
        return message
    listed = con.execute("SELECT table_name FROM information_schema.tables ORDER BY table_name").fetchall()
    return f"{message}; tables and views: {', '.join(name for (name,) in listed) or 'none'}"


def _duckdb_views(engine: Any, lake: Path) -> None:
    for path in sorted((lake / "views").glob("*.parquet")):
        engine.con.execute(
            f"CREATE OR REPLACE VIEW \"{path.stem}\" AS SELECT * FROM read_parquet('{_escape(str(path))}')"
        )


def _spark_views(engine: Any, lake: Path) -> None:
    for path in sorted((lake / "views").glob("*.parquet")):
        engine.spark.read.parquet(str(path)).createOrReplaceTempView(path.stem)


def _escape(text: str) -> str:
    return text.replace("'", "''")


def _emit(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, output: Path | None, limit: int) -> None:
    import csv
    import io

    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(
            *columns, title=f"{len(rows):,} rows" + (f" (first {limit})" if len(rows) > limit else "")
        )
        for row in rows[:limit]:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console(width=200).print(table)
        return
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        for row in rows:
            buf.write(
                json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=str) + "\n"
            )
    if output is not None:
        output.write_text(buf.getvalue(), encoding="utf-8")
        typer.echo(f"wrote {len(rows):,} rows to {output}")
    else:
        typer.echo(buf.getvalue(), nl=False)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``sql`` to the ``rhip`` app."""
    app.command("export")(export)
    app.command("sql")(sql)
