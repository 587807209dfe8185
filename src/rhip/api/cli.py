"""``rhip serve``: run the FHIR REST API under uvicorn on the configured host and port."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rhip.errors import RhipError

if TYPE_CHECKING:
    from rhip.config import Settings


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
    host, port = host or settings.host, port or settings.port
    _check_files(settings)
    check_can_listen(host, port)
    _say_where(host, port, None if settings.database_url else settings.data_dir)
    uvicorn.run(
        "rhip.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        http="rhip.api.protocol:FhirHttpProtocol",
    )


def _check_files(settings: Settings) -> None:
    """Read the files settings name before serving: a bad one stops the start with its name and
    line, instead of failing the first request that needs it."""
    from rhip.api.recognition import recognition_windows

    recognition_windows(settings.recognition_windows_file)


def _say_where(host: str, port: int, data_dir: Path | None) -> None:
    """Print where the API answers: at uvicorn's ``warning`` log level the server says nothing,
    so an operator could not tell a started server from a hung one. The store URL is not printed
    (it may hold a password); the data directory is, when the store lives there."""
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    store = f"; data directory {data_dir.absolute()}" if data_dir is not None else ""
    typer.echo(f"RHIP API on {base}/fhir (OpenAPI docs: {base}/docs){store}; Ctrl-C stops it")


def check_can_listen(host: str, port: int) -> None:
    """Raise RhipError naming the address and the way out when ``host:port`` cannot be bound.

    uvicorn would log the bind error and exit with its own code 3 after the app was built; the
    operator gets one line and the options to change instead.
    """
    import os
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # '::' binds IPv6, as uvicorn
        with socket.create_server((host, port), family=family):  # SO_REUSEADDR, as uvicorn binds
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise RhipError(
            f"cannot listen on {host}:{port}: {reason}; choose another --port (or RHIP_PORT) "
            "or --host (RHIP_HOST), or stop what is using that port"
        ) from None


def register(app: typer.Typer) -> None:
    """Add ``rhip serve`` to the command line."""
    app.command("serve")(serve)
