"""``rhip demo`` options as a newcomer uses them: step names, and what to do after ``--no-serve``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.demo.steps import STEPS, _load_step_modules
from rhip.errors import RhipError

EVERY_STEP = ("generate", "ingest", "link", "lake", "surveillance", "accounts")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_an_unknown_step_to_skip_is_refused_with_the_step_names(data_dir: Path) -> None:
    """``--skip gen`` was ignored silently: the whole demo ran, generation included."""
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--skip", "gen"])
    assert isinstance(result.exception, RhipError), result.output
    assert result.exception.diagnostics == (
        "no demo step named gen; the steps are generate, ingest, link, lake, surveillance, accounts"
    )
    assert not (data_dir / "region").exists()


def test_the_help_names_every_step() -> None:
    """``--skip`` said 'Step name(s) to skip' without naming one."""
    _load_step_modules()
    assert tuple(step.name for step in STEPS) == EVERY_STEP
    help_text = " ".join(CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "300"}).output.split())
    assert ", ".join(EVERY_STEP) in help_text


def test_no_serve_says_how_to_serve_and_log_in(data_dir: Path) -> None:
    """With --no-serve the demo printed URLs that nothing answered, and no word on logging in."""
    args = [arg for step in EVERY_STEP for arg in ("--skip", step)]
    result = CliRunner().invoke(app, ["demo", "--no-serve", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "start the API with `rhip serve` from this folder" in out
    assert f"RHIP_DATA_DIR={data_dir.resolve()}" in out
    assert "POST /auth/token" in out


def test_the_linkage_line_puts_its_nouns_in_the_right_number() -> None:
    """The demo said "1 pairs for clerical review" (and "1 residents")."""
    from rhip.demo.steps import link_summary
    from rhip.mpi.relink import RelinkReport

    one = link_summary(RelinkReport(records=1, residents=1, review_items=1, seconds={"link": 0.25}))
    assert one == "identity linkage: 1 source record -> 1 resident (1 pair for clerical review; link 0.2 s)"
    many = link_summary(RelinkReport(records=1200, residents=0, review_items=2))
    assert many == "identity linkage: 1,200 source records -> 0 residents (2 pairs for clerical review)"


def test_skipping_generate_without_a_region_says_so(data_dir: Path) -> None:
    """``--skip generate`` in a fresh folder ran the ingest step, which said "region: no connector
    for '' files"."""
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--skip", "generate"])
    assert isinstance(result.exception, RhipError), result.output
    assert result.exception.diagnostics.startswith(
        f"--skip generate: no generated region in {data_dir / 'region'} "
        "for the ingest, link, surveillance step(s)"
    )
    assert not data_dir.exists() or not (data_dir / "rhip.sqlite").exists()
