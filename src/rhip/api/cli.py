"""``rhip serve``: run the FHIR REST API under uvicorn on the configured host and port."""

from __future__ import annotations

import typer


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default: settings.host)."),
    port: int | None = typer.Option(None, help="Port to listen on (default: settings.port)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve the FHIR R4 REST API (/fhir) with uvicorn."""
    import os

    import uvicorn

    from rhip.config import get_settings

    settings = get_settings()
    if database_url:
        os.environ["RHIP_DATABASE_URL"] = database_url
        get_settings.cache_clear()
        settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        "rhip.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``rhip serve`` to the command line."""
    app.command("serve")(serve)
