"""The ``rhip`` entry point's output width: cut at 80 columns only on a narrow terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from rhip.quality.rules import catalogue


def _catalogue(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-m", "rhip.cli", "quality", "--catalogue"],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
        check=True,
    )
    return result.stdout


def test_piped_output_is_not_cut_at_80_columns() -> None:
    out = _catalogue()  # stdout is a pipe here, as in a log or CI
    assert max(len(line) for line in out.splitlines()) > 80
    assert all(rule["id"] in out for rule in catalogue())


def test_columns_set_by_the_user_wins() -> None:
    out = _catalogue(COLUMNS="80")
    assert max(len(line) for line in out.splitlines()) <= 80
