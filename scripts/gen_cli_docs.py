"""Write docs/cli.md from the live Typer app, so the command reference never drifts from the code.

Run after adding or changing a command: ``.venv/bin/python scripts/gen_cli_docs.py``.
tests/test_docs.py fails when a command is missing from docs/cli.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from rhip.cli import app

INTRO = """# Command line reference

`rhip` is the one command-line entry point of the platform. Every command reads its settings from
the environment (see [configuration.md](configuration.md)); `rhip COMMAND --help` shows the same
text as below. Errors end with exit code 2 and a message naming the file, line or element at fault.
Tables fit an 80-column terminal; written to a file or a pipe they are laid out 160 columns wide
(`COLUMNS=N` chooses another width).

This page is generated from the code by `scripts/gen_cli_docs.py`.
"""


def _option_rows(command: Any) -> list[str]:
    rows = []
    for param in command.params:
        kind = type(param).__name__
        if kind.endswith("Option") and not getattr(param, "hidden", False):
            names = ", ".join(f"`{o}`" for o in (*param.opts, *param.secondary_opts))
            quiet = param.default in (None, (), []) or (param.is_flag and not param.default)
            default = "" if quiet else f" (default: `{param.default}`)"
            rows.append(f"| {names} | {(param.help or '').replace('|', '/')}{default} |")
        elif kind.endswith("Argument"):
            required = " (required)" if param.required else ""
            text = getattr(param, "help", None) or "argument"
            rows.append(f"| `{param.name.upper()}` | {text}{required} |")
    return rows


def _section(command: Any, path: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{path}`", "", (command.help or "").strip(), ""]
    rows = _option_rows(command)
    if rows:
        lines += ["| option | meaning |", "|---|---|", *rows, ""]
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                lines += _section(sub, f"{path} {name}", min(level + 1, 4))
    return lines


def render() -> str:
    """The whole page as Markdown."""
    root = typer.main.get_command(app)
    lines = [INTRO]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        if not command.hidden:
            lines += _section(command, f"rhip {name}", 2)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
