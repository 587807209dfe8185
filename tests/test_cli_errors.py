"""The ``rhip`` entry point on an operator's mistakes: one ``error:`` line and exit code 2, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.errors import RhipError
from rhip_testkit import free_port


def _rhip(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RHIP_")}
    return subprocess.run(
        [sys.executable, "-m", "rhip.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**base, "RHIP_DATA_DIR": str(tmp_path / "data"), **env},
        timeout=120,
    )


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RHIP_PORT", "abc", "valid integer"),
        ("RHIP_AUTH_ENABLED", "maybe", "valid boolean"),
        ("RHIP_MLLP_BATCH_MAX", "0", "greater than or equal to 1"),
        ("RHIP_TIMEZONE", "Mars/Base", "not a time zone name"),
    ],
)
def test_a_bad_setting_is_named_with_its_value(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    """A bad RHIP_* value was a pydantic traceback (RHIP_TIMEZONE: a ZoneInfo one, mid-command)."""
    line = _one_error(_rhip(tmp_path, "quarantine", "list", **{variable: value}))
    assert f"{variable}={value!r}" in line
    assert expected in line
    assert "docs/configuration.md" in line


def test_a_database_url_that_is_not_a_url(tmp_path: Path) -> None:
    """``--database-url notaurl`` was SQLAlchemy's ArgumentError traceback."""
    line = _one_error(_rhip(tmp_path, "quarantine", "list", "--database-url", "not a url"))
    assert "is not a URL" in line and "postgresql+psycopg://" in line


def test_an_unreachable_database_server(tmp_path: Path) -> None:
    """A PostgreSQL URL with no server behind it was an OperationalError traceback; the password
    in the URL is never echoed."""
    url = f"postgresql+psycopg://rhip:s3cret-pw@127.0.0.1:{free_port()}/rhip"
    line = _one_error(_rhip(tmp_path, "db", "current", RHIP_DATABASE_URL=url))
    assert line.startswith("error: database: ")
    assert "refused" in line.lower() and "RHIP_DATABASE_URL" in line
    assert "s3cret-pw" not in line


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    """``rhip serve`` on a taken port was uvicorn's log line and exit code 3."""
    line = _one_error(_rhip(tmp_path, "serve", "--port", str(taken_port)))
    assert f"cannot listen on 127.0.0.1:{taken_port}" in line and "--port" in line


def test_mllp_listen_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    """``rhip mllp-listen`` on a taken port printed 'MLLP listener on ...' and then a traceback."""
    result = _rhip(tmp_path, "mllp-listen", "--port", str(taken_port))
    line = _one_error(result)
    assert f"cannot listen on 127.0.0.1:{taken_port}" in line and "RHIP_MLLP_PORT" in line
    assert "MLLP listener on" not in result.stdout


def test_surveil_run_with_an_end_that_is_no_day(tmp_path: Path) -> None:
    """``rhip surveil run --end 2026-13-01`` was a ValueError traceback."""
    result = CliRunner().invoke(app, ["surveil", "run", "--end", "2026-13-01"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "'2026-13-01' is not a day: use YYYY-MM-DD" in result.output


def test_export_of_a_type_that_does_not_exist(tmp_path: Path) -> None:
    """``rhip export --type Foo`` exported, then failed in DuckDB with a traceback."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    args = ["export", "--type", "Foo", "--database-url", url, "--lake-dir", str(tmp_path / "lake")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "'Foo' is not an R4 resource type" in result.output
    assert not (tmp_path / "lake").exists()


def test_mqtt_subscribe_to_a_broker_that_is_not_there(tmp_path: Path) -> None:
    """A broker that refuses the connection was a ConnectionRefusedError traceback."""
    port = free_port()
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    args = ["mqtt-subscribe", "--broker", f"mqtt://127.0.0.1:{port}", "--database-url", url]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, RhipError), result.output
    assert result.exception.diagnostics.startswith(f"cannot connect to the MQTT broker at 127.0.0.1:{port}: ")
    assert "--broker" in result.exception.diagnostics


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["mpi", "evaluate"], "no patient_links.csv; give the file or a folder written by `rhip generate`"),
        (["surveil", "evaluate"], "no truth/outbreaks.csv; give a folder written by `rhip generate`"),
    ],
    ids=["mpi", "surveil"],
)
def test_evaluate_against_a_folder_without_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], expected: str
) -> None:
    """A folder that is not a generated region was a FileNotFoundError traceback (mpi) or, once
    the lake existed, a table of nan (surveil)."""
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "exports"
    folder.mkdir()
    result = CliRunner().invoke(app, [*command, str(folder)])
    assert isinstance(result.exception, RhipError), result.output
    assert result.exception.diagnostics.startswith(f"{folder}: {expected}")
