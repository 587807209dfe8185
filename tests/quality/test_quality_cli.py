"""``rhip quality``: per-facility table, per day, per rule, and the catalogue, from a real ingest."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rhip.cli import app
from rhip.quality.rules import catalogue

HL7 = (
    "MSH|^~\\&|HIS|Q1|R|R|20261101083000||ADT^A28^ADT_A05|C{n}|P|2.5\r"
    "PID|1||M{n}^^^Q1^MR||Li^Ming||{birth}|M\r"
)
ORU = (  # the next day: rules of Observations and reports only
    "MSH|^~\\&|LIS|Q1|R|R|20261102090000||ORU^R01^ORU_R01|L1|P|2.5\r"
    "PID|1||M1^^^Q1^MR||Li^Ming||19800101|M\r"
    "OBR|1||F1|24331-1^Lipid panel^LN|||20261102083000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||4.8|mmol/L|3.0-5.2|N|||F|||20261102083000\r"
)


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_tables_come_from_what_was_ingested(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.sqlite'}"
    path = tmp_path / "q.hl7"
    path.write_text(HL7.format(n=1, birth="19800101") + HL7.format(n=2, birth="") + ORU, encoding="utf-8")
    _run("ingest", str(path), "--no-link", "--database-url", url)
    table = _run("quality", "--database-url", url)
    (row,) = [line for line in table.splitlines() if line.split()[:1] == ["Q1"]]  # one row, all days
    assert "2026-11-01 .. 2026-11-02" in row
    by_day = _run("quality", "--by-day", "--database-url", url)
    days = [line.split()[1] for line in by_day.splitlines() if line.split()[:1] == ["Q1"]]
    assert days == ["2026-11-01", "2026-11-02"]
    rules = _run("quality", "--rules", "--facility", "Q1", "--database-url", url)
    birth = next(line for line in rules.splitlines() if "completeness.patient-birthdate" in line)
    assert birth.split()[-3:] == ["2", "1", "50.0"]  # checked, failed, score: one Patient lacks PID-7
    # English and Chinese labels, as the facility table has ("Quality per rule" had English only)
    assert "Data quality per rule (0-100) 规则质量" in rules
    assert _row_after(rules, "facility") == ["机构", "日期", "规则", "检查数", "不合格", "得分"]


def _row_after(table: str, first: str) -> list[str]:
    """The words of the line under the header line that starts with ``first`` (its Chinese half)."""
    lines = table.splitlines()
    at = next(n for n, line in enumerate(lines) if line.split()[:1] == [first])
    return lines[at + 1].split()


def test_catalogue_lists_every_rule() -> None:
    out = _run("quality", "--catalogue")
    assert all(r["id"][:20] in out for r in catalogue())
    assert "Quality rule catalogue 质量规则目录" in out
    assert _row_after(out, "rule") == ["规则", "维度", "适用资源", "检查内容"]


def test_an_unknown_facility_is_a_usage_error_naming_known_ones(tmp_path: Path) -> None:
    """``rhip quality --facility NOPE`` printed an empty table and exited 0."""
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'q.sqlite'}"
    path = tmp_path / "q.hl7"
    path.write_text(HL7.format(n=1, birth="19800101"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHIP_")}
    env["RHIP_DATA_DIR"] = str(tmp_path / "data")

    def rhip(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "rhip.cli", "quality", *args, "--database-url", url]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    empty = rhip("--facility", "NOPE")
    assert empty.returncode == 2 and "nothing has been ingested yet" in empty.stderr, empty.stderr
    _run("ingest", str(path), "--no-link", "--database-url", url)
    for extra in ((), ("--rules",), ("--by-day",)):
        result = rhip("--facility", "NOPE", *extra)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and not result.stdout
        assert "no quality records of facility NOPE are known; 1 facility has some: Q1" in result.stderr
    assert rhip("--facility", "Q1").returncode == 0
