"""The Farrington flexible aberration-detection method (Farrington 1996; Noufaily 2013).

A port of ``farringtonFlexible`` of the R package ``surveillance`` (Höhle 2007; Salmon, Schumacher
and Höhle 2016), parameter for parameter: for every week ``k`` a quasi-Poisson GLM with an
optional linear trend (kept only when significant, ``b >= 3`` and not extrapolating) and, with
``noPeriods > 1``, a seasonal factor is fitted to the reference windows of the ``b`` past years
(``w`` weeks either side), past outbreaks are down-weighted (``reweight``, Anscombe residuals above
``weightsThreshold``), and the upper bound is either the 2/3-power-scale normal bound of
Farrington 1996 (``thresholdMethod="delta"``) or the negative-binomial quantile of Noufaily 2013
(``"nbPlugin"``, ``"muan"``). All series and weeks are fitted together by
:func:`rhip.surveillance.glm.fit_quasipoisson_shared`.

Time points are 0-based row indices here (R's are 1-based).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from rhip.errors import InvalidRequest
from rhip.surveillance.glm import GlmBatch, fit_quasipoisson_shared
from rhip.surveillance.result import DetectionResult

__all__ = ["FarringtonControl", "farrington_flexible"]


@dataclass(frozen=True)
class FarringtonControl:
    """Control parameters, named as in R's ``farringtonFlexible`` (defaults are R's)."""

    b: int = 5
    w: int = 3
    reweight: bool = True
    weightsThreshold: float = 2.58
    alpha: float = 0.05
    trend: bool = True
    pThresholdTrend: float = 0.05
    limit54: tuple[int, int] = (5, 4)
    powertrans: str = "2/3"
    noPeriods: int = 1
    pastWeeksNotIncluded: int | None = None
    thresholdMethod: str = "delta"


def _minus_years(day: dt.date, years: int) -> dt.date:
    """R's ``seq(day, by = "-1 year")``: 29 February rolls over to 1 March."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return dt.date(day.year - years, 3, 1)


def _reference_points(
    k: int, b: int, freq: int, dates: Sequence[dt.date] | None, date_index: dict[dt.date, int]
) -> list[int]:
    """Indices of ``k`` and the same week ``1..b`` years earlier (newest first)."""
    if dates is None:
        return [k - i * freq for i in range(b + 1)]
    day = dates[k]
    out = []
    for i in range(b + 1):
        ref = _minus_years(day, i)
        if freq == 52:
            a = ref - dt.timedelta(days=ref.weekday() - day.weekday())
            other = a + dt.timedelta(days=-7 if a > ref else 7)
            ref = other if abs((a - ref).days) > abs((other - ref).days) else a
        if ref not in date_index:
            raise InvalidRequest(
                "Some reference time points did not exist; decrease 'b' or postpone 'range'."
            )
        out.append(date_index[ref])
    return out


def _blocks(refs: list[int], k: int, n: int, b: int, w: int, p: int) -> NDArray[np.float64]:
    """Seasonal block label of every row (NaN outside the windows), as R's ``blocks``."""
    f = np.full(n, np.nan)
    f[max(k - w, 0) : k + 1] = p
    for i in range(b):
        ref = refs[i + 1]
        if ref - w < 0:
            raise InvalidRequest("The vector of observed is too short for b years of baseline.")
        f[ref - w : ref + w + 1] = p
        if p != 1:
            period = refs[i] - 2 * w - 1 - ref
            if period < p - (2 * w + 1):
                raise InvalidRequest("Number of factors too big!")
            lengths = np.full(p - 1, period // (p - 1))
            lengths[: period % (p - 1)] += 1
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for j in range(p - 1):
                f[ref + w + 1 + starts[j] : ref + w + 1 + starts[j + 1]] = j + 1
    return f


def _design(
    k_list: Sequence[int], n_obs: int, ctl: FarringtonControl, freq: int, dates: Sequence[dt.date] | None
) -> tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.float64]]:
    """Row indices ``(K, m)``, row mask and design ``(K, m, noPeriods + 1)`` (levels, wtime)."""
    date_index = {d: i for i, d in enumerate(dates)} if dates is not None else {}
    pwni = ctl.w if ctl.pastWeeksNotIncluded is None else ctl.pastWeeksNotIncluded
    rows: list[NDArray[np.int64]] = []
    levels: list[NDArray[np.float64]] = []
    for k in k_list:
        refs = _reference_points(k, ctl.b, freq, dates, date_index)
        blk = _blocks(refs, k, n_obs, ctl.b, ctl.w, ctl.noPeriods)
        blk[max(k - pwni, 0) : k + 1] = np.nan
        idx = np.nonzero(~np.isnan(blk))[0]
        rows.append(idx)
        levels.append(blk[idx])
    m = max(len(r) for r in rows)
    ridx = np.zeros((len(rows), m), dtype=np.int64)
    mask = np.zeros((len(rows), m), dtype=bool)
    x = np.zeros((len(rows), m, ctl.noPeriods + 1))
    for i, (r, lv) in enumerate(zip(rows, levels, strict=True)):
        ridx[i, : len(r)] = r
        mask[i, : len(r)] = True
        x[i, np.arange(len(r)), lv.astype(np.int64) - 1] = 1.0
        x[i, : len(r), -1] = r - k_list[i]
    return ridx, mask, x


def _default_timepoints(
    n_t: int, ctl: FarringtonControl, freq: int, dates: Sequence[dt.date] | None
) -> list[int]:
    """R's default range, moved on while calendar years make the oldest window fall off the start."""
    date_index = {d: i for i, d in enumerate(dates)} if dates is not None else {}
    for k in range(freq * ctl.b + ctl.w, n_t):
        try:
            refs = _reference_points(k, ctl.b, freq, dates, date_index)
        except InvalidRequest:
            continue
        if refs[-1] - ctl.w >= 0:
            return list(range(k, n_t))
    return []


@dataclass
class _Fit:
    glm: GlmBatch
    phi: NDArray[np.float64]
    ok: NDArray[np.bool_]
    disp: NDArray[np.float64]  # dispersion used for standard errors (see _fit_flexible)


def _fit_flexible(
    x: NDArray[np.float64], y: NDArray[np.float64], present: NDArray[np.bool_], ctl: FarringtonControl
) -> _Fit:
    """R's ``algo.farrington.fitGLM.flexible``; x ``(K, m, p)`` shared, y ``(K*S, m)`` design-major."""
    n_k = x.shape[0]
    pw = present.astype(np.float64)
    g = fit_quasipoisson_shared(x, y.reshape(n_k, -1, y.shape[1]), pw.reshape(n_k, -1, y.shape[1]))
    ok = g.converged  # R checks the unweighted fit only
    phi = np.maximum(g.dispersion, 1.0)
    if ctl.reweight:
        with np.errstate(divide="ignore", invalid="ignore"):
            a = 1.5 * (y ** (2 / 3) * g.mu ** (-1 / 6) - g.mu**0.5)
            s = a / np.sqrt(phi[:, None] * (1 - g.hat))
            big = present & (s > ctl.weightsThreshold)
            inv2 = np.where(big, s**-2.0, 1.0)
        gamma = present.sum(axis=1) / np.sum(np.where(present, inv2, 0.0), axis=1)
        omega = np.where(present, gamma[:, None] * inv2, 0.0)
        g = fit_quasipoisson_shared(x, y.reshape(n_k, -1, y.shape[1]), omega.reshape(n_k, -1, y.shape[1]))
        phi = np.maximum(g.dispersion, 1.0)
        # R replaces the working weights of the reweighted model by omega before calling
        # summary.glm / predict.glm, so their dispersion is sum(omega * working resid^2) / df.
        with np.errstate(divide="ignore", invalid="ignore"):
            disp = np.sum(np.where(present, omega * ((y - g.mu) / g.mu) ** 2, 0.0), axis=1) / g.df_residual
        return _Fit(g, phi, ok, disp)
    return _Fit(g, phi, ok, g.dispersion)


def _predict(fit: _Fit, x0: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Linear predictor and its standard error at ``x0`` (R's ``predict.glm``, type link)."""
    eta = fit.glm.beta @ x0
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.einsum("i,nij,j->n", x0, fit.glm.cov_unscaled, x0) * fit.disp)
    return eta, se


def _fit_final(
    x: NDArray[np.float64], y: NDArray[np.float64], present: NDArray[np.bool_], ctl: FarringtonControl
) -> tuple[
    NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]
]:
    """Model choice of ``algo.farrington.glm``: (eta0, se_eta0, phi, trend used, ok)."""
    npp = ctl.noPeriods
    x0 = np.zeros(npp + 1)
    x0[npp - 1] = 1.0
    x_nt = x[:, :, :npp]
    eta = np.full(len(y), np.nan)
    se, phi = eta.copy(), eta.copy()
    ok = np.zeros(len(y), dtype=bool)
    use_trend = np.zeros(len(y), dtype=bool)
    if ctl.trend:
        ft = _fit_flexible(x, y, present, ctl)
        e, s = _predict(ft, x0)
        bw = ft.glm.beta[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            tval = bw / np.sqrt(ft.glm.cov_unscaled[:, -1, -1] * ft.disp)
        pval = 2 * stats.t.sf(np.abs(tval), ft.glm.df_residual)
        ymax = np.max(np.where(present, y, -np.inf), axis=1)
        use_trend = ft.ok & (ctl.b >= 3) & (pval < ctl.pThresholdTrend) & (np.exp(e) <= ymax)
        eta[use_trend], se[use_trend], phi[use_trend] = e[use_trend], s[use_trend], ft.phi[use_trend]
        ok |= use_trend
    rest = ~use_trend
    if rest.any():  # designs are shared, so all problems are fitted and the rest kept
        fn = _fit_flexible(x_nt, y, present, ctl)
        e, s = _predict(fn, x0[:npp])
        eta[rest], se[rest], phi[rest] = e[rest], s[rest], fn.phi[rest]
        ok[rest] = fn.ok[rest]
    return eta, se, phi, use_trend, ok


def _threshold(
    eta: NDArray[np.float64],
    se_eta: NDArray[np.float64],
    phi: NDArray[np.float64],
    y: NDArray[np.float64],
    ctl: FarringtonControl,
) -> tuple[NDArray[np.float64], ...]:
    """(fit, upper, score, p-value) by the chosen threshold method."""
    z = stats.norm.ppf(1 - ctl.alpha)
    if ctl.thresholdMethod == "delta":
        mu0 = np.exp(eta)
        se_fit = se_eta * mu0
        tau = phi + se_fit**2 / mu0
        exponent = {"none": 1.0, "1/2": 0.5, "2/3": 2 / 3}.get(ctl.powertrans)
        if exponent is None:
            raise InvalidRequest(f"powertrans must be none, 1/2 or 2/3, not {ctl.powertrans!r}")
        se = np.sqrt({1.0: mu0 * tau, 0.5: tau / 4}.get(exponent, 4 / 9 * mu0 ** (1 / 3) * tau))
        upper = (mu0**exponent + z * se) ** (1 / exponent)
        prob = stats.norm.sf(y**exponent, loc=mu0**exponent, scale=se)
        return mu0, mu0, upper, (y - mu0) / (upper - mu0), prob
    if ctl.thresholdMethod not in ("nbPlugin", "muan"):
        raise InvalidRequest(f"thresholdMethod must be delta, nbPlugin or muan, not {ctl.thresholdMethod!r}")
    if ctl.thresholdMethod == "nbPlugin":
        mq = np.exp(eta)
    else:
        mq = np.exp(stats.norm.ppf(1 - ctl.alpha, loc=eta, scale=se_eta))
    good = np.isfinite(mq) & np.isfinite(phi) & (mq > 0)
    nb = good & (phi > 1)
    po = good & ~(phi > 1)
    upper = np.full(mq.shape, np.nan)
    prob = np.full(mq.shape, np.nan)
    q = 1 - ctl.alpha
    if nb.any():
        size, pr = mq[nb] / (phi[nb] - 1), 1 / phi[nb]
        upper[nb] = stats.nbinom.ppf(q, size, pr)
        prob[nb] = stats.nbinom.sf(y[nb] - 1, size, pr)
    if po.any():
        upper[po] = stats.poisson.ppf(q, mq[po])
        prob[po] = stats.poisson.sf(y[po] - 1, mq[po])
    return eta, np.exp(eta), upper, (y - eta) / (upper - eta), prob


def farrington_flexible(
    observed: NDArray[np.float64],
    *,
    freq: int = 52,
    dates: Sequence[dt.date] | None = None,
    timepoints: Sequence[int] | None = None,
    control: FarringtonControl | None = None,
    chunk_rows: int = 4_000_000,
) -> DetectionResult:
    """Run ``farringtonFlexible`` on every column of ``observed`` (time × series).

    Args:
        observed: counts ``(T,)`` or ``(T, S)``; NaN marks a missing count.
        freq: periods per year (52 weekly, 365 daily, 12 monthly).
        dates: the date of every row; when given, reference weeks are found by calendar year as
            R does for ``epochAsDate = TRUE`` series, else by ``k - i * freq``.
        timepoints: 0-based rows to evaluate; default ``freq * b + w`` to the end (R's ``range``).
        control: method parameters (R's names and defaults).
        chunk_rows: memory bound: problems × rows fitted at once.

    Raises:
        InvalidRequest: parameters out of bounds or too little history for ``b`` years.
    """
    ctl = control or FarringtonControl()
    if not (ctl.limit54[0] >= 0 and ctl.limit54[1] > 0):
        raise InvalidRequest("The limit54 arguments are out of bounds: cases >= 0 and period > 0.")
    obs = np.asarray(observed, dtype=np.float64)
    obs2 = obs.reshape(len(obs), -1)
    n_t, n_s = obs2.shape
    tps = _default_timepoints(n_t, ctl, freq, dates) if timepoints is None else sorted(timepoints)
    out = DetectionResult.empty("farrington", obs2)
    if not tps:
        return out.squeeze(obs.ndim)
    ridx, mask, x = _design(tps, n_t, ctl, freq, dates)
    per_k = max(1, chunk_rows // max(1, n_s * ridx.shape[1]))
    for start in range(0, len(tps), per_k):
        sl = slice(start, start + per_k)
        with np.errstate(all="ignore"):  # degenerate windows (all zero) give inf/NaN, as in R
            _run_chunk(obs2, np.asarray(tps[sl]), ridx[sl], mask[sl], x[sl], ctl, out)
    return out.squeeze(obs.ndim)


def _run_chunk(
    obs: NDArray[np.float64],
    ks: NDArray[np.int64],
    ridx: NDArray[np.int64],
    mask: NDArray[np.bool_],
    x: NDArray[np.float64],
    ctl: FarringtonControl,
    out: DetectionResult,
) -> None:
    n_k, n_s = len(ks), obs.shape[1]
    y = obs[ridx].transpose(0, 2, 1).reshape(n_k * n_s, -1)  # (K*S, m), design-major
    present = np.repeat(mask, n_s, axis=0) & ~np.isnan(y)
    y = np.where(present, y, 0.0)
    eta, se, phi, _trend, ok = _fit_final(x, y, present, ctl)
    y_now = obs[ks].reshape(-1)
    fit, expected, upper, score, prob = _threshold(eta, se, phi, y_now, ctl)
    lo, hi = ctl.limit54[1], ctl.limit54[0]
    recent = np.stack([obs[k - lo + 1 : k + 1].sum(axis=0) for k in ks]).reshape(-1)
    enough = recent >= hi  # NaN sums compare False, as R's NA
    upper = np.where(ok & enough, upper, np.nan)
    expected = np.where(ok & enough & ~np.isnan(upper), expected, np.nan)
    score = np.where(ok, score, np.nan)
    alarm = ok & enough & (score > 1) & (y_now != 0)
    shape = (n_k, n_s)
    out.expected[ks] = expected.reshape(shape)
    out.upperbound[ks] = upper.reshape(shape)
    out.score[ks] = score.reshape(shape)
    out.alarm[ks] = alarm.reshape(shape)
    out.pvalue[ks] = np.where(ok, prob, np.nan).reshape(shape)
    out.evaluated[ks] = True
    del fit
