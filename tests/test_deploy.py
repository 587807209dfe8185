"""The service files in deploy/ stay true to the program: systemd accepts them, every command line
they run is one the CLI accepts, every setting they name exists, and ``rhip serve`` behind the
reverse proxy they describe builds its links with the proxy's scheme and host."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from rhip.cli import app
from rhip.config import Settings
from rhip_testkit import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SYSTEMD = DEPLOY / "systemd"
INSTALLED_RHIP = "/opt/rhip/.venv/bin/rhip"
UNITS = sorted(p.name for p in SYSTEMD.glob("rhip-*.*") if p.is_file())


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "rhip.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def _exec_lines(unit: Path) -> list[str]:
    """ExecStart= values, with systemd's line continuations joined."""
    text = unit.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]


def _rhip_command_lines(unit: Path) -> list[list[str]]:
    """Every rhip invocation of a unit, as arguments, with ${VAR} taken from the example settings
    and systemd's %d specifier and $$ escapes resolved the way systemd and the shell would."""
    env = _env_example()
    found = []
    for line in _exec_lines(unit):
        line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
        line = line.replace("%d", "/run/credentials/x").replace("$$", "$")
        words = shlex.split(line)
        if words[0] == "/bin/sh":  # a shell script: each rhip call in it, split at ';'
            for part in words[-1].split(";"):
                args = shlex.split(part.replace('"$archive"', "/var/backups/rhip/a.tar"))
                if args and args[0] == INSTALLED_RHIP:
                    found.append(args[1:])
        else:
            assert words[0] == INSTALLED_RHIP, f"{unit.name}: runs {words[0]}, not the installed rhip"
            found.append(words[1:])
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_every_unit_with_its_drop_in(tmp_path: Path) -> None:
    """``systemd-analyze verify`` of every unit, the hardening drop-in found on the unit path;
    any warning (an unknown key, a bad value) fails, not only errors."""
    units = tmp_path / "units"
    shutil.copytree(SYSTEMD, units)
    here = str(Path(sys.executable).with_name("rhip"))
    for unit in units.glob("rhip-*.service"):
        unit.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_RHIP, here), encoding="utf-8")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    paths = [str(units / name) for name in UNITS]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_hardening_drop_in_applies_to_every_service() -> None:
    """The drop-in's name makes systemd apply it to every rhip-*.service; units repeat none of it."""
    drop_in = (SYSTEMD / "rhip-.service.d" / "hardening.conf").read_text(encoding="utf-8")
    assert "User=rhip" in drop_in and "EnvironmentFile=/etc/rhip/rhip.env" in drop_in
    for name in UNITS:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        assert "User=" not in text and "EnvironmentFile=" not in text, name
        if name.endswith(".timer"):
            assert (SYSTEMD / name.replace(".timer", ".service")).exists(), f"{name} starts no service"


@pytest.mark.parametrize("name", [n for n in UNITS if n.endswith(".service")])
def test_every_command_line_is_one_the_cli_accepts(name: str) -> None:
    """Each rhip call parses against the CLI as it is (command, options, required arguments), so
    renaming an option breaks this test rather than a region's services."""
    calls = _rhip_command_lines(SYSTEMD / name)
    assert calls, f"{name} runs no rhip command"
    root: Any = typer.main.get_command(app)
    for args in calls:
        command, rest = root, list(args)
        while hasattr(command, "list_commands"):  # a group: descend to the named command
            sub = command.get_command(command.make_context("rhip", [], resilient_parsing=True), rest[0])
            assert sub is not None, f"{name}: no command {rest[0]!r} in {args}"
            command, rest = sub, rest[1:]
        try:
            command.make_context(command.name or "", rest)
        except Exception as exc:  # typer's own click: UsageError, BadParameter, MissingParameter
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            pytest.fail(f"{name}: rhip {' '.join(args)}: {message}")


def test_the_settings_file_names_only_real_settings() -> None:
    """Every RHIP_* line of rhip.env.example is a setting (a misspelt name would be ignored)."""
    known = {f"RHIP_{field.upper()}" for field in Settings.model_fields}
    names = _env_example()
    unknown = sorted(n for n in names if n.startswith("RHIP_") and n not in known)
    assert not unknown
    Settings.model_validate({n[5:].lower(): v for n, v in names.items() if n.startswith("RHIP_")})


def test_rhip_serve_behind_the_proxy_links_with_its_scheme_and_host(tmp_path: Path) -> None:
    """The headers deploy/nginx/rhip.conf sets reach ``rhip serve`` from 127.0.0.1 (uvicorn's
    FORWARDED_ALLOW_IPS default): links are https on the public host, not http://127.0.0.1."""
    conf = (DEPLOY / "nginx" / "rhip.conf").read_text(encoding="utf-8")
    assert "proxy_set_header Host $host;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    port = free_port()
    env = {**os.environ, "RHIP_DATA_DIR": str(tmp_path), "RHIP_PORT": str(port), "RHIP_HOST": "127.0.0.1"}
    env.pop("RHIP_DATABASE_URL", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", "serve"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxied = {"Host": "rhip.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    try:
        answer = _get_when_up(f"http://127.0.0.1:{port}/fhir/metadata", proxied, proc)
        direct = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert answer.json()["implementation"]["url"] == "https://rhip.example.org/fhir"
    assert direct.json()["implementation"]["url"] == f"http://127.0.0.1:{port}/fhir"


def _get_when_up(url: str, headers: dict[str, str], proc: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return httpx.get(url, headers=headers, timeout=10)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"rhip serve did not answer (exit code {proc.poll()})")
