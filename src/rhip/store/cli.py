"""``rhip db ...``: operator commands of the store (schema upgrade, status, migration list, reindex)."""

from __future__ import annotations

import typer

db_app = typer.Typer(
    help="Operational database: schema migrations, search index rebuild.", no_args_is_help=True
)


@db_app.command("upgrade")
def upgrade(
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="Store URL (default: RHIP_DATABASE_URL or the SQLite file in the data dir).",
    ),
) -> None:
    """Bring the store's schema to the newest migration (safe to run again)."""
    from rhip.config import get_settings
    from rhip.store.engine import make_engine
    from rhip.store.migrations import current_revision
    from rhip.store.migrations import upgrade as run_upgrade

    url = database_url or get_settings().resolved_database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            before = current_revision(conn)
        revision = run_upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    typer.echo(f"store schema at revision {revision}, was {before or 'none'} ({where})")


@db_app.command("current")
def current(
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Show the schema revision of the store and the newest one this version ships."""
    from rhip.config import get_settings
    from rhip.store.engine import make_engine
    from rhip.store.migrations import current_revision, head_revision

    engine = make_engine(database_url or get_settings().resolved_database_url)
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
    finally:
        engine.dispose()
    typer.echo(f"current: {revision or 'none'}  head: {head_revision()}")


@db_app.command("history")
def history(
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """List the shipped migrations, oldest first; ``*`` marks the one the database is at."""
    from rhip.config import get_settings
    from rhip.store.engine import make_engine
    from rhip.store.migrations import current_revision, revisions

    engine = make_engine(database_url or get_settings().resolved_database_url)
    try:
        with engine.connect() as conn:
            at = current_revision(conn)
    finally:
        engine.dispose()
    for revision, description in revisions():
        typer.echo(f"{'*' if revision == at else ' '} {revision}  {description}")


@db_app.command("reindex")
def reindex(
    types: list[str] | None = typer.Option(
        None, "--type", help="Resource type to rebuild (repeat for several; default: every stored type)."
    ),
    batch_size: int = typer.Option(
        1000, "--batch-size", min=1, max=10_000, help="Resources per transaction (at most 10,000)."
    ),
    restart: bool = typer.Option(
        False, "--restart", help="Start over instead of resuming an interrupted run from where it stopped."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Rebuild the search index rows of stored resources from their current bodies.

    Run after an upgrade that changes search parameters or how values are extracted, or after
    adding a platform search parameter. Each batch is its own transaction; a run stopped
    half-way is resumed from its last batch by running it again with the same --type options.
    Without --type, index rows of types with no stored resource are removed too.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rhip.config import get_settings
    from rhip.store import Store, fieldcrypt
    from rhip.store.reindex import prepare_reindex, run_reindex
    from rhip.store.reindex_lock import single_run

    store = Store(database_url or get_settings().resolved_database_url, fields=fieldcrypt.PLAIN)
    try:
        with single_run(store.engine):
            plan = prepare_reindex(store.engine, types, batch_size=batch_size, restart=restart)
            if plan.resumed:
                typer.echo(f"{plan.resume_note()} (--restart starts over)")
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeElapsedColumn()) as bar:
                task = bar.add_task("reindexing resources", total=plan.remaining)
                result = run_reindex(store.engine, plan, on_rows=lambda n: bar.advance(task, n))
    finally:
        store.close()
    typer.echo(
        f"reindexed {result.resources} resources of {len(result.types)} types "
        f"({result.deleted} deleted, no rows): "
        f"index rows {result.rows_before} before, {result.rows_after} after"
    )
    if plan.sweep_orphans:
        typer.echo(
            f"removed {result.orphan_rows} index rows of {len(result.orphan_types)} types "
            f"with no stored resource{': ' + ', '.join(result.orphan_types) if result.orphan_types else ''}"
        )


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the ``rhip`` app."""
    app.add_typer(db_app, name="db")
