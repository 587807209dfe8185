"""``rhip generate`` and ``rhip replay`` on an operator's mistakes: one message, no traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rhip.cli import app
from rhip.errors import RhipError
from rhip_testkit import free_port


def _generate(tmp_path: Path, params: Path) -> str:
    args = ["generate", "--out", str(tmp_path / "out"), "--residents", "5", "--params", str(params)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output  # a usage error, not an exception
    assert not (tmp_path / "out").exists()
    return " ".join(result.output.replace("│", " ").split())


def test_a_params_file_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped --params path was a FileNotFoundError traceback."""
    out = _generate(tmp_path, tmp_path / "parms.yaml")
    assert f"{tmp_path / 'parms.yaml'}: No such file or directory" in out


def test_a_params_file_that_is_not_yaml(tmp_path: Path) -> None:
    """A YAML syntax error in --params was a yaml.scanner traceback."""
    params = tmp_path / "params.yaml"
    params.write_text("residents: [\n", encoding="utf-8")
    out = _generate(tmp_path, params)
    assert f"{params} is not valid YAML at line 2, column 1: expected the node content" in out


def test_replay_to_a_listener_that_is_not_there(tmp_path: Path) -> None:
    """``rhip replay mllp`` or ``http`` to a port nobody listens on was a ConnectionRefusedError
    (or httpx.ConnectError) traceback."""
    (tmp_path / "wearable").mkdir()
    (tmp_path / "wearable" / "w.jsonl").write_text('{"device_id": "d1"}\n', encoding="utf-8")
    port = free_port()
    mllp = CliRunner().invoke(app, ["replay", "mllp", str(tmp_path), "--port", str(port)])
    assert isinstance(mllp.exception, RhipError), mllp.output
    assert mllp.exception.diagnostics.startswith(f"cannot reach the MLLP listener at 127.0.0.1:{port}: ")
    url = f"http://127.0.0.1:{port}/ingest/device/H1"
    http = CliRunner().invoke(app, ["replay", "http", str(tmp_path), "--url", url])
    assert isinstance(http.exception, RhipError), http.output
    assert http.exception.diagnostics.startswith(f"cannot reach {url}: ")
