"""``rhip db ...``: operator commands of the store (schema upgrade, status, migration list)."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Operational database: schema migrations.", no_args_is_help=True)


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


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the ``rhip`` app."""
    app.add_typer(db_app, name="db")
