"""Poisson CUSUM with Rossi's approximate normal transform (Rossi et al. 1999).

A port of R ``surveillance::algo.cusum``: the in-control mean ``m`` is the mean of all counts
before the first evaluated time point (or given), counts are standardised (``trans``: ``rossi``,
``standard``, ``anscombe``), and the one-sided CUSUM ``C_t = max(0, C_{t-1} + z_t - k)`` alarms
when it reaches ``h``. As in R, the sum is not reset after an alarm. The upper bound is the
count that would have made ``C_t`` reach ``h``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from rhip.errors import InvalidRequest
from rhip.surveillance.result import DetectionResult

__all__ = ["cusum"]


def _standardise(x: NDArray[np.float64], m: NDArray[np.float64], trans: str) -> NDArray[np.float64]:
    if trans == "rossi":
        return np.asarray((x - 3 * m + 2 * np.sqrt(x * m)) / (2 * np.sqrt(m)))
    if trans == "standard":
        return np.asarray((x - m) / np.sqrt(m))
    if trans == "anscombe":
        return np.asarray(1.5 * (x ** (2 / 3) - m ** (2 / 3)) / m ** (1 / 6))
    raise InvalidRequest(f"CUSUM trans must be rossi, standard or anscombe, not {trans!r}")


def _bound(
    m: NDArray[np.float64], c_prev: NDArray[np.float64], h: float, k: float, trans: str
) -> NDArray[np.float64]:
    rm = np.sqrt(m)
    with np.errstate(invalid="ignore"):
        if trans == "rossi":
            ub = (
                2 * h * rm
                + 2 * k * rm
                - 2 * c_prev * rm
                + 5 * m
                - 2 * np.sqrt(4 * m**2 + 2 * m**1.5 * h + 2 * m**1.5 * k - 2 * m**1.5 * c_prev)
            )
        elif trans == "standard":
            ub = np.ceil(rm * (h + k - c_prev) + m)
        else:
            base = (2 / 3) * m ** (1 / 6) * (h + k - c_prev) + m ** (2 / 3)
            ub = np.where(base < 0, 0.0, np.abs(base) ** 1.5)
    ub = np.where(np.isnan(ub), 0.0, ub)
    return np.asarray(np.maximum(ub, 0.0))


def cusum(
    observed: NDArray[np.float64],
    *,
    k: float = 1.04,
    h: float = 2.26,
    m: float | None = None,
    trans: str = "rossi",
    timepoints: Sequence[int] | None = None,
    baseline: int = 104,
) -> DetectionResult:
    """Run R's ``cusum`` on every column of ``observed`` (time × series).

    Args:
        observed: counts ``(T,)`` or ``(T, S)``.
        k: reference value (R ``k``); h: decision interval (R ``h``).
        m: in-control mean; default the mean of all counts before the first time point.
        trans: ``"rossi"`` (default here), ``"standard"`` or ``"anscombe"``.
        timepoints: contiguous 0-based rows to evaluate (R ``range``); default ``baseline``..end.
        baseline: first evaluated row when ``timepoints`` is not given.

    Raises:
        InvalidRequest: unknown transform or no history before the first time point.
    """
    obs = np.asarray(observed, dtype=np.float64)
    obs2 = obs.reshape(len(obs), -1)
    tps = (
        np.arange(baseline, len(obs2))
        if timepoints is None
        else np.sort(np.asarray(timepoints, dtype=np.int64))
    )
    out = DetectionResult.empty(f"cusum_{trans}", obs2)
    if len(tps) == 0:
        return out.squeeze(obs.ndim)
    if tps[0] < 1:
        raise InvalidRequest("CUSUM needs at least one count before the first time point")
    mm = np.full(obs2.shape[1], float(m)) if m is not None else obs2[: tps[0]].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = _standardise(obs2[tps], mm[None, :], trans)
    c = np.zeros((len(tps) + 1, obs2.shape[1]))
    for i in range(len(tps)):
        c[i + 1] = np.maximum(0.0, c[i] + (z[i] - k))
    out.upperbound[tps] = _bound(np.broadcast_to(mm, z.shape), c[:-1], h, k, trans)
    out.expected[tps] = mm[None, :]
    out.score[tps] = c[1:]
    out.alarm[tps] = c[1:] >= h
    out.evaluated[tps] = True
    return out.squeeze(obs.ndim)
