"""``import rhip`` and ``rhip --help`` must not pull in heavy optional engines (Spark, R, Splink)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pyspark", "splink", "statsmodels", "duckdb", "pandas")


def test_import_rhip_and_cli_stay_light() -> None:
    code = (
        "import sys, rhip, rhip.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"
