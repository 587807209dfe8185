"""The ``rhip`` command line: one Typer app onto which every capability registers its commands.

Each capability keeps its commands in ``rhip/<capability>/cli.py`` with a ``register(app)``
function, the way an outside plugin would. Modules that are not present yet are skipped, and heavy
libraries are imported inside the command bodies so that ``rhip --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from rhip import __version__
from rhip.errors import ConfigurationError, RhipError

#: Capability modules whose ``cli.register(app)`` adds commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "rhip.demo",
    "rhip.api",
    "rhip.fhir",
    "rhip.synth",
    "rhip.ingest",
    "rhip.quality",
    "rhip.mpi",
    "rhip.security",
    "rhip.lake",
    "rhip.surveillance",
    "rhip.store",
    "rhip.status",
    "rhip.ops",
)

app = typer.Typer(
    name="rhip",
    help="RHIP — Regional Health Information Platform (区域全民健康信息平台).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rhip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """RHIP — Regional Health Information Platform (区域全民健康信息平台)."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name in (name, f"{name}.cli"):
                continue
            raise
        module.register(app)


#: Settings that could not be read while the commands were loaded (some modules read them on
#: import); ``main`` reports it instead of a traceback.
_STARTUP_ERROR: ConfigurationError | None = None
try:
    _register_all()
except ConfigurationError as _exc:
    _STARTUP_ERROR = _exc


#: Columns of rich output written to a file or a pipe (a log, CI), where 80 would cut codes and secrets.
PIPED_WIDTH = 160


def _widen_piped_output() -> None:
    """Rich lays tables out for 80 columns when stdout is no terminal; a log has no such limit.

    ``COLUMNS`` is rich's own setting, so every console of the process follows it; a value the
    user set is kept. Only the console entry point does this, never a caller importing the app.
    """
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        os.environ["COLUMNS"] = str(PIPED_WIDTH)


def main() -> None:
    """Console entry point: runs the app and turns platform errors into a message and exit code 2.

    A database that cannot be reached or used (server down, no such database, unwritable file)
    is such an error too: the operator gets the driver's reason on one line, not a traceback.
    """
    _widen_piped_output()
    if _STARTUP_ERROR is not None:
        typer.echo(f"error: {_STARTUP_ERROR.diagnostics}", err=True)
        sys.exit(2)
    try:
        app()
    except RhipError as exc:
        typer.echo(f"error: {exc.diagnostics}", err=True)
        sys.exit(2)
    except Exception as exc:
        message = database_failure(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


def database_failure(exc: BaseException) -> str | None:
    """One line for a database the command cannot connect to or use, None for any other error.

    Only the driver's reason is kept: SQLAlchemy's text would add the statement and its values.
    """
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    reason = " ".join(str(exc.orig or exc).split())
    return f"database: {reason} (check RHIP_DATABASE_URL or --database-url; docs/configuration.md)"


if __name__ == "__main__":
    main()
