"""Batched quasi-Poisson GLM fitted by IRLS, the way R's ``glm.fit`` does it.

The Farrington methods fit one small log-linear model per (series, week): hundreds of thousands
of fits for a region. Fitting them one by one in Python is far too slow, so this module fits a
whole batch of same-shaped problems at once with numpy: the same starting values
(``mustart = y + 0.1``), the same deviance-based convergence rule (``epsilon = 1e-8``,
``maxit = 25``) and the same quantities R reports (working weights of the last iteration,
unscaled covariance, hat values, Pearson dispersion), so results agree with R to ~1e-8.

Rows that do not exist in a problem (padding, missing counts) carry prior weight 0 and are left
out of the degrees of freedom, exactly as if R had never seen them. Columns that are all zero
in a problem (a seasonal level absent from its window) are dropped from that problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["GlmBatch", "fit_quasipoisson"]

_EPSILON = 1e-8
_MAXIT = 25


@dataclass(frozen=True)
class GlmBatch:
    """Fitted batch: ``N`` problems with ``n`` rows and ``p`` columns each."""

    beta: NDArray[np.float64]  # (N, p)
    mu: NDArray[np.float64]  # (N, n) fitted means
    cov_unscaled: NDArray[np.float64]  # (N, p, p) (X'WX)^-1 of the last iteration
    work_weights: NDArray[np.float64]  # (N, n) working weights of the last iteration
    dispersion: NDArray[np.float64]  # (N,) Pearson dispersion as summary.glm reports it
    df_residual: NDArray[np.float64]  # (N,)
    hat: NDArray[np.float64]  # (N, n) leverages
    converged: NDArray[np.bool_]  # (N,)


def _deviance(y: NDArray[np.float64], mu: NDArray[np.float64], pw: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return np.asarray(2.0 * np.sum(pw * (ylogy - (y - mu)), axis=-1))


def _solve(xtwx: NDArray[np.float64], rhs: NDArray[np.float64], active: NDArray[np.bool_]) -> tuple[
    NDArray[np.float64], NDArray[np.float64]
]:
    """Solve with inactive (all-zero) columns pinned to zero; return (beta, inverse)."""
    eye = np.eye(xtwx.shape[-1])
    a = np.where(active[:, :, None] & active[:, None, :], xtwx, eye[None] * (~active[:, :, None]))
    inv = np.linalg.inv(a)
    inv = inv * (active[:, :, None] & active[:, None, :])
    beta = np.einsum("nij,nj->ni", inv, rhs * active)
    return beta, inv


def fit_quasipoisson(
    x: NDArray[np.float64], y: NDArray[np.float64], prior_weights: NDArray[np.float64]
) -> GlmBatch:
    """Fit ``y ~ x`` (log link, quasi-Poisson) for every problem of a batch.

    Args:
        x: design matrices ``(N, n, p)`` (no intercept is added).
        y: responses ``(N, n)``; values at rows with weight 0 are ignored.
        prior_weights: prior weights ``(N, n)``; 0 marks a row that is absent.

    Returns:
        The fitted batch; problems that did not converge in 25 iterations have
        ``converged == False`` (R's ``glm`` would warn and report ``converged = FALSE``).
    """
    pw = np.asarray(prior_weights, dtype=np.float64)
    present = pw > 0
    y = np.where(present, y, 0.0)
    active = np.any((x != 0) & present[:, :, None], axis=1)  # (N, p)
    mu = y + 0.1
    eta = np.log(mu)
    dev_old = _deviance(y, mu, pw)
    n_prob = y.shape[0]
    done = np.zeros(n_prob, dtype=bool)
    beta = np.zeros((n_prob, x.shape[2]))
    inv = np.zeros((n_prob, x.shape[2], x.shape[2]))
    w_last = pw * mu
    for _ in range(_MAXIT):
        todo = ~done
        if not todo.any():
            break
        idx = np.nonzero(todo)[0]
        xs, ys, pws, mus, etas = x[idx], y[idx], pw[idx], mu[idx], eta[idx]
        z = etas + (ys - mus) / mus
        w = pws * mus
        xtw = xs * w[:, :, None]
        xtwx = np.einsum("nri,nrj->nij", xtw, xs)
        rhs = np.einsum("nri,nr->ni", xtw, z)
        b, iv = _solve(xtwx, rhs, active[idx])
        new_eta = np.einsum("nri,ni->nr", xs, b)
        new_mu = np.exp(new_eta)
        dev = _deviance(ys, new_mu, pws)
        conv = np.abs(dev - dev_old[idx]) / (np.abs(dev) + 0.1) < _EPSILON
        beta[idx], inv[idx], w_last[idx] = b, iv, w
        eta[idx], mu[idx], dev_old[idx] = new_eta, new_mu, dev
        done[idx] = conv
    rank = active.sum(axis=1)
    df = present.sum(axis=1) - rank
    resid = (y - mu) / mu
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.sum(np.where(present, w_last * resid**2, 0.0), axis=1) / df
    hat = np.einsum("nri,nij,nrj->nr", x, inv, x) * w_last
    return GlmBatch(beta, mu, inv, w_last, disp, df.astype(np.float64), hat, done)
