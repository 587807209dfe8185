"""A small generated region shared by the synth tests (built once per test worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhip.synth import Manifest, generate


@pytest.fixture(scope="session")
def synth_region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """1,200 residents over 3 years with every format, seed 7."""
    out = tmp_path_factory.mktemp("region")
    manifest = generate(out, residents=1200, years=3, seed=7)
    return out, manifest
