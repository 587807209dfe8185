"""RHIP's aberration detection against R's ``surveillance`` package on its bundled datasets.

One Rscript run (``r_reference.R``) computes every reference case; each test compares upper
bounds (and Farrington's expected counts and scores) within 1e-6 relative and alarms exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rhip.surveillance import detect

pytestmark = [pytest.mark.r, pytest.mark.xdist_group("surveillance_r")]

HERE = Path(__file__).parent
Ref = dict[tuple[str, str], dict[tuple[int, int], float]]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Ref:
    if shutil.which("Rscript") is None:
        pytest.fail("Rscript not found: install r-base-core r-cran-surveillance (scripts/test-prereqs.sh)")
    out = tmp_path_factory.mktemp("r") / "ref.csv"
    subprocess.run(
        ["Rscript", str(HERE / "r_reference.R"), str(out)], check=True, capture_output=True, timeout=600
    )
    data: Ref = {}
    with out.open() as fh:
        for row in csv.DictReader(fh):
            value = float("nan") if row["value"] in ("NA", "") else float(row["value"])
            data.setdefault((row["case"], row["field"]), {})[(int(row["t"]) - 1, int(row["s"]) - 1)] = value
    return data


def _matrix(cells: dict[tuple[int, int], float]) -> np.ndarray:
    n_t = max(t for t, _ in cells) + 1
    n_s = max(s for _, s in cells) + 1
    m = np.full((n_t, n_s), np.nan)
    for (t, s), v in cells.items():
        m[t, s] = v
    return m


def _series(ref: Ref, name: str, cols: list[int] | None = None) -> np.ndarray:
    m = _matrix(ref[("data", name)])
    return m if cols is None else m[:, cols]


def _salm_dates(ref: Ref) -> list[dt.date]:
    epoch = _matrix(ref[("data", "salm_epoch")])[:, 0]
    return [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in epoch]


def _compare(ref: Ref, case: str, res: Any, fields: tuple[str, ...] = ("upperbound",)) -> int:
    cells = ref[(case, "upperbound")]
    rows = sorted({t for t, _ in cells})
    for f in fields:
        r = _matrix(ref[(case, f)])[rows]
        p = getattr(res, f)[rows]
        p = p.reshape(len(rows), -1)
        assert np.array_equal(np.isnan(r), np.isnan(p)), f"{case}.{f}: missing values differ"
        ok = ~np.isnan(r)
        np.testing.assert_allclose(p[ok], r[ok], rtol=1e-6, atol=1e-12, err_msg=f"{case}.{f}")
    ra = np.nan_to_num(_matrix(ref[(case, "alarm")])[rows]).astype(bool)
    pa = res.alarm[rows].reshape(len(rows), -1)
    assert (ra == pa).all(), f"{case}: {(ra != pa).sum()} alarms differ"
    return int(ra.sum())


@pytest.mark.parametrize(
    ("case", "method", "series", "params"),
    [
        ("ears_c1", "ears_c1", "salm", {}),
        ("ears_c2", "ears_c2", "salm", {}),
        ("ears_c3", "ears_c3", "salm", {}),
        ("ears_c1_b10", "ears_c1", "salm", {"baseline": 10, "minSigma": 0.5, "alpha": 0.01}),
        ("ears_c3_ha", "ears_c3", "ha", {"baseline": 5, "minSigma": 1.0}),
    ],
)
def test_ears_matches_r(ref: Ref, case: str, method: str, series: str, params: dict[str, Any]) -> None:
    """earsC: same bounds (1e-6 relative) and alarms on salmNewport and ha.sts."""
    res = detect(method, _series(ref, series), **params)
    assert _compare(ref, case, res) > 0 or case == "ears_c3_ha"


@pytest.mark.parametrize(
    ("case", "series", "params"),
    [
        ("cusum_rossi", "salm", {"trans": "rossi", "first": 299}),
        ("cusum_standard", "ha", {"trans": "standard", "k": 0.5, "h": 4.0, "first": 104}),
    ],
)
def test_cusum_matches_r(ref: Ref, case: str, series: str, params: dict[str, Any]) -> None:
    """cusum: same bounds and alarms."""
    obs = _series(ref, series)
    first = params.pop("first")
    res = detect("cusum_rossi", obs, timepoints=range(first, len(obs)), **params)
    assert _compare(ref, case, res) > 0


FF_CASES = [
    (
        "ff_default",
        "salm",
        {"b": 5, "w": 3, "noPeriods": 1, "weightsThreshold": 2.58, "pastWeeksNotIncluded": 3},
    ),
    ("ff_farrington", "salm", {"alpha": 0.01}),
    ("ff_noufaily", "salm", {"b": 4, "method": "noufaily"}),
    (
        "ff_muan",
        "salm",
        {
            "w": 2,
            "thresholdMethod": "muan",
            "pThresholdTrend": 1.0,
            "method": "noufaily",
            "weightsThreshold": 2.58,
        },
    ),
    (
        "ff_ha",
        "ha",
        {
            "b": 3,
            "w": 2,
            "noPeriods": 4,
            "powertrans": "1/2",
            "weightsThreshold": 2.58,
            "pastWeeksNotIncluded": 2,
        },
    ),
    ("ff_ha_none", "ha", {"b": 3, "reweight": False, "powertrans": "none", "trend": False}),
]


@pytest.mark.parametrize(("case", "series", "params"), FF_CASES)
def test_farrington_flexible_matches_r(ref: Ref, case: str, series: str, params: dict[str, Any]) -> None:
    """farringtonFlexible: same expected counts, bounds, scores and alarms (date- and index-based)."""
    method = params.pop("method", "farrington")
    if series == "salm":
        obs, dates = _series(ref, "salm", [0, 5, 9]), _salm_dates(ref)
    else:
        obs, dates = _series(ref, "ha", [0, 1, 2, 3]), None
    rows = sorted({t for t, _ in ref[(case, "upperbound")]})
    res = detect(method, obs, dates=dates, timepoints=rows, **params)
    _compare(ref, case, res, ("upperbound", "expected", "score"))
