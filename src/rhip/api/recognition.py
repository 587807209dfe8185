"""Recognition windows of lab results (检验结果互认): how long a result of each test stays valid.

A region recognises a result from any of its facilities for a number of days per test, so a doctor
does not order the test again inside that window. The package ships default windows
(``data/recognition_windows.csv``: one row per LOINC code, with its test group), which are
defaults for the region to set, not national rules. An operator overrides or extends them with a
CSV file of the same columns named by ``RHIP_RECOGNITION_WINDOWS_FILE``: its rows replace the
shipped rows of the same LOINC code and add the others. Every shipped code is one of the lab
tests of :mod:`rhip.fhir.terminology` (a test checks it).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from rhip.errors import ConfigurationError

_COLUMNS = ("loinc", "days", "group", "group_zh")
_LOINC = re.compile(r"^\d{1,7}-\d$")
_SETTING = "RHIP_RECOGNITION_WINDOWS_FILE"


@dataclass(frozen=True)
class Window:
    """How many days a result of one LOINC test is recognised, and the group it belongs to."""

    loinc: str
    days: int
    group: str
    group_zh: str


def _parse(text: str, source: str) -> dict[str, Window]:
    """Windows by LOINC code from CSV text; ConfigurationError naming ``source`` and the line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigurationError(f"{_SETTING}: {source}: missing column(s) {', '.join(missing)}")
    table: dict[str, Window] = {}
    for row in reader:
        line = reader.line_num
        loinc, days = (row["loinc"] or "").strip(), (row["days"] or "").strip()
        if not _LOINC.match(loinc):
            raise ConfigurationError(f"{_SETTING}: {source} line {line}: loinc: not a LOINC code")
        if not days.isascii() or not days.isdigit() or int(days) < 1:
            raise ConfigurationError(f"{_SETTING}: {source} line {line}: days: expected a positive integer")
        table[loinc] = Window(loinc, int(days), (row["group"] or "").strip(), (row["group_zh"] or "").strip())
    return table


@cache
def default_windows() -> dict[str, Window]:
    """The shipped windows by LOINC code."""
    text = resources.files("rhip.api").joinpath("data/recognition_windows.csv").read_text("utf-8")
    return _parse(text, "recognition_windows.csv")


@cache
def _override(path: str, mtime_ns: int) -> dict[str, Window]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{_SETTING}: cannot read {path}: {exc.__class__.__name__}") from None
    return _parse(text, path)


def recognition_windows(override: Path | None = None) -> dict[str, Window]:
    """The windows in force: the shipped ones, with the override file's rows replacing or adding.

    The file is read again when it changes, so an operator's edit takes effect without a restart.

    Raises:
        ConfigurationError: the override file is missing, unreadable or has a bad row (named).
    """
    if override is None:
        return default_windows()
    try:
        mtime = override.stat().st_mtime_ns
    except OSError:
        raise ConfigurationError(f"{_SETTING}: no such file {override}") from None
    return {**default_windows(), **_override(str(override), mtime)}
