"""Recognition windows (检验检查结果互认): how long a result of each test or examination stays valid.

A region recognises a result from any of its facilities for a number of days, so a doctor does not
order it again inside that window: per lab test (检验, a LOINC code) and per imaging examination
(检查, a DICOM modality code: ``CT``, ``MR``, ``DX``, ...). The package ships default windows
(``data/recognition_windows.csv``: one row per code, with its group), which are defaults for the
region to set, not national rules. An operator overrides or extends them with a CSV file of the
same columns named by ``RHIP_RECOGNITION_WINDOWS_FILE``: its rows replace the shipped rows of the
same code and add the others. The two kinds of code cannot be confused (a LOINC code is digits, a
check digit and a dash; a modality is capital letters), so one ``code`` column holds both; a file
written when the column was called ``loinc`` is still read. Every shipped LOINC code is one of the
lab tests of :mod:`rhip.fhir.terminology` and every shipped modality is in :data:`MODALITIES` (a
test checks it).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from rhip.errors import ConfigurationError

_COLUMNS = ("code", "days", "group", "group_zh")
_LOINC = re.compile(r"^\d{1,7}-\d$")
_SETTING = "RHIP_RECOGNITION_WINDOWS_FILE"

#: DICOM modality codes (PS3.16 CID 33, "Modality"): what an imaging window or request may name.
MODALITIES = frozenset(
    {
        *("AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "CTPROTOCOL", "DG", "DOC", "DX", "ECG"),
        *("EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO", "LEN", "LS"),
        *("M3D", "MG", "MR", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS"),
        *("OT", "PLAN", "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT"),
        *("RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF"),
        *("STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XC"),
    }
)

Kind = Literal["lab", "imaging"]


@dataclass(frozen=True)
class Window:
    """How many days a result of one test (LOINC) or examination (modality) is recognised, and its group."""

    code: str
    days: int
    group: str
    group_zh: str

    @property
    def kind(self) -> Kind:
        """``lab`` for a LOINC code, ``imaging`` for a DICOM modality."""
        return "imaging" if self.code in MODALITIES else "lab"


def _parse(text: str, source: str) -> dict[str, Window]:
    """Windows by code from CSV text; ConfigurationError naming ``source`` and the line."""
    reader = csv.DictReader(io.StringIO(text))
    fields = list(reader.fieldnames or [])
    key = "loinc" if "loinc" in fields and "code" not in fields else "code"
    missing = [c for c in _COLUMNS if (key if c == "code" else c) not in fields]
    if missing:
        raise ConfigurationError(f"{_SETTING}: {source}: missing column(s) {', '.join(missing)}")
    table: dict[str, Window] = {}
    for row in reader:
        line = reader.line_num
        code, days = (row[key] or "").strip(), (row["days"] or "").strip()
        if not _LOINC.match(code) and code not in MODALITIES:
            raise ConfigurationError(
                f"{_SETTING}: {source} line {line}: {key}: '{code[:20]}' is neither a LOINC code "
                "nor a DICOM modality code (CT, MR, DX, CR, US, ...)"
            )
        if not days.isascii() or not days.isdigit() or int(days) < 1:
            raise ConfigurationError(f"{_SETTING}: {source} line {line}: days: expected a positive integer")
        table[code] = Window(code, int(days), (row["group"] or "").strip(), (row["group_zh"] or "").strip())
    return table


@cache
def default_windows() -> dict[str, Window]:
    """The shipped windows by code (LOINC codes and DICOM modalities)."""
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
