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


def test_params_file_overrides_defaults(tmp_path: Path) -> None:
    params = tmp_path / "city.yaml"
    params.write_text("dirty:\n  missing_citizen_id: 0.0\n  citizen_id_typo: 1.0\n", encoding="utf-8")
    generate(tmp_path / "out", residents=80, years=1, seed=2, formats=["csv"], params_file=params)
    lines = (tmp_path / "out/truth/patient_links.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert lines
    assert all("citizen-id-typo" in line and "missing-citizen-id" not in line for line in lines)


def test_rerun_replaces_earlier_output_only(tmp_path: Path) -> None:
    generate(tmp_path, residents=60, years=1, seed=1, formats=["hl7v2", "csv"])
    (tmp_path / "notes.txt").write_text("kept", encoding="utf-8")
    generate(tmp_path, residents=60, years=1, seed=1, formats=["csv"])
    assert not (tmp_path / "hl7v2").exists()
    assert (tmp_path / "csv").is_dir() and (tmp_path / "notes.txt").read_text(encoding="utf-8") == "kept"
