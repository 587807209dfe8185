"""Docs as a tested contract: every CLI command and every setting is documented."""

from __future__ import annotations

from pathlib import Path

import typer.main

from rhip.cli import app
from rhip.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _command_paths(group: object, prefix: str = "rhip") -> list[str]:
    paths: list[str] = []
    if hasattr(group, "commands"):
        for name, command in group.commands.items():
            if command.hidden:
                continue
            path = f"{prefix} {name}"
            paths.append(path)
            paths.extend(_command_paths(command, path))
    return paths


def test_every_cli_command_is_in_docs_cli() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [p for p in _command_paths(typer.main.get_command(app)) if f"`{p}" not in text]
    assert not missing, f"commands missing from docs/cli.md: {missing}"


def test_every_setting_is_in_docs_configuration() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [f"RHIP_{name.upper()}" for name in Settings.model_fields if f"RHIP_{name.upper()}" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_readme_quick_start_is_the_two_make_targets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def _commands(group: object, prefix: str = "rhip") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, command in getattr(group, "commands", {}).items():
        if not command.hidden:
            found.append((f"{prefix} {name}", command))
            found.extend(_commands(command, f"{prefix} {name}"))
    return found


def test_every_option_and_argument_says_what_it_is() -> None:
    """``--help`` showed bare names (``--actor``, ``--limit``, ``REVIEW_ID argument``) for some."""
    bare = [
        f"{path} {param.name}"
        for path, command in _commands(typer.main.get_command(app))
        for param in getattr(command, "params", [])
        if param.name != "help" and not (getattr(param, "help", None) or "").strip()
    ]
    assert not bare, f"options or arguments without help: {bare}"
