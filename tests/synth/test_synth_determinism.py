"""Same seed => byte-identical output, whatever the number of worker processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rhip.synth import generate


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.xdist_group("synth")
def test_same_seed_gives_identical_bytes_across_worker_counts(tmp_path: Path) -> None:
    generate(tmp_path / "a", residents=1100, years=1, seed=3)
    generate(tmp_path / "b", residents=1100, years=1, seed=3, workers=2)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(a) > 50
    assert a == b


@pytest.mark.xdist_group("synth")
def test_other_seed_gives_other_region(tmp_path: Path) -> None:
    generate(tmp_path / "a", residents=120, years=1, seed=3, formats=["fhir"])
    generate(tmp_path / "b", residents=120, years=1, seed=4, formats=["fhir"])
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a["truth/residents.csv"] != b["truth/residents.csv"]


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        generate(tmp_path, residents=10, years=1, seed=1, formats=["fax"])
