"""EARS C1, C2 and C3 (Hutwagner et al. 2003), as R ``surveillance::earsC`` computes them.

The Early Aberration Reporting System compares a count with the mean and standard deviation of a
short moving baseline (``baseline`` = 7 periods): C1 uses the periods just before, C2 skips two
periods (guard band), C3 sums the C2 statistic of the current and two previous periods (each
exceeding 1). Bounds are ``mean + qnorm(1 - alpha) * max(sd, minSigma)``; C3's bound is the
count at which the C3 statistic would reach ``qnorm(1 - alpha)``. All series are computed at
once with sliding windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import stats

from rhip.errors import InvalidRequest
from rhip.surveillance.result import DetectionResult

__all__ = ["ears"]

_LAG = {"C1": 0, "C2": 2, "C3": 2}
_FIRST = {"C1": 0, "C2": 2, "C3": 4}


def _window_stats(obs: NDArray[np.float64], baseline: int, lag: int) -> tuple[NDArray[np.float64], ...]:
    """Mean and sd of ``obs[t-baseline-lag : t-lag]`` for every t (NaN where not available)."""
    n_t = obs.shape[0]
    mean = np.full(obs.shape, np.nan)
    sd = np.full(obs.shape, np.nan)
    win = sliding_window_view(obs, baseline, axis=0)  # (T-baseline+1, S, baseline)
    first = baseline + lag
    if n_t > first:
        w = win[: n_t - first]
        mean[first:] = w.mean(axis=-1)
        sd[first:] = w.std(axis=-1, ddof=1)
    return mean, sd


def ears(
    observed: NDArray[np.float64],
    *,
    method: str = "C1",
    baseline: int = 7,
    minSigma: float = 0.0,
    alpha: float | None = None,
    timepoints: Sequence[int] | None = None,
) -> DetectionResult:
    """Run ``earsC`` (``method`` C1, C2 or C3) on every column of ``observed`` (time × series).

    Args:
        observed: counts ``(T,)`` or ``(T, S)``.
        method: ``"C1"``, ``"C2"`` or ``"C3"``.
        baseline: number of baseline periods (R ``baseline``, at least 3).
        minSigma: lower limit of the standard deviation (R ``minSigma``).
        alpha: one-sided level; default 0.001 for C1/C2 and 0.025 for C3 (R's defaults).
        timepoints: 0-based rows to evaluate; default all rows with a full baseline.

    Raises:
        InvalidRequest: unknown method, baseline < 3, negative minSigma or too short a series.
    """
    if method not in _LAG:
        raise InvalidRequest(f"EARS method must be C1, C2 or C3, not {method!r}")
    if baseline < 3:
        raise InvalidRequest("Minimum baseline to use is 3.")
    if minSigma < 0:
        raise InvalidRequest("The minimum sigma parameter (minSigma) needs to be positive")
    a = alpha if alpha is not None else (0.025 if method == "C3" else 0.001)
    z = float(stats.norm.ppf(1 - a))
    obs = np.asarray(observed, dtype=np.float64)
    obs2 = obs.reshape(len(obs), -1)
    first = baseline + _FIRST[method]
    tps = (
        np.arange(first, len(obs2)) if timepoints is None else np.sort(np.asarray(timepoints, dtype=np.int64))
    )
    if len(tps) and tps[0] < first:
        raise InvalidRequest("The vector of observed is too short!")
    mean, sd = _window_stats(obs2, baseline, _LAG[method])
    sig = np.maximum(sd, minSigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (obs2 - mean) / sig
        if method == "C3":
            part = np.full(obs2.shape, np.nan)
            part[2:] = np.maximum(0.0, stat[:-2] - 1) + np.maximum(0.0, stat[1:-1] - 1)
            upper = np.maximum(0.0, obs2 + sig * (z - part))
            score = stat + part
        else:
            upper = mean + z * sig
            score = stat
    out = DetectionResult.empty(f"ears_{method.lower()}", obs2)
    out.expected[tps] = mean[tps]
    out.upperbound[tps] = upper[tps]
    out.score[tps] = score[tps]
    with np.errstate(invalid="ignore"):
        out.alarm[tps] = obs2[tps] > upper[tps]
    out.evaluated[tps] = True
    return out.squeeze(obs.ndim)
