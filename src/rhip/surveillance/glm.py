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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

__all__ = ["GlmBatch", "fit_quasipoisson", "fit_quasipoisson_shared"]

_EPSILON = 1e-8
_MAXIT = 25
_EPS = float(np.finfo(np.float64).eps)


@cache
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools, inspected once (a scan of the loaded libraries)."""
    return ThreadpoolController()


@contextmanager
def _quiet_single_thread() -> Iterator[None]:
    """Floating-point warnings off (all-zero windows drive mu to 0, as in R) and BLAS on one thread.

    The products of a fit are many and small (p ≤ ~20): BLAS threads cost more in hand-offs than
    they compute, so a region's noufaily run is ≈ 2× faster single-threaded.
    """
    with np.errstate(all="ignore"), _blas().limit(limits=1, user_api="blas"):
        yield


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


def _deviance(
    y: NDArray[np.float64], mu: NDArray[np.float64], pw: NDArray[np.float64]
) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return np.asarray(2.0 * np.sum(pw * (ylogy - (y - mu)), axis=-1))


def _solve(
    xtwx: NDArray[np.float64], rhs: NDArray[np.float64], active: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Solve with inactive (all-zero) columns pinned to zero; return (beta, inverse)."""
    eye = np.eye(xtwx.shape[-1])
    a = np.where(active[:, :, None] & active[:, None, :], xtwx, eye[None] * (~active[:, :, None]))
    inv = np.linalg.inv(a)
    inv = inv * (active[:, :, None] & active[:, None, :])
    beta = np.matmul(inv, (rhs * active)[:, :, None])[:, :, 0]
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
    with _quiet_single_thread():
        return _fit(
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
            np.asarray(prior_weights, dtype=np.float64),
        )


@dataclass
class _State:
    """IRLS state of N problems (updated in place)."""

    eta: NDArray[np.float64]
    mu: NDArray[np.float64]
    dev_old: NDArray[np.float64]
    beta: NDArray[np.float64]
    inv: NDArray[np.float64]
    w_last: NDArray[np.float64]
    done: NDArray[np.bool_]


def _iterate(
    x: NDArray[np.float64],
    kidx: NDArray[np.int64] | None,
    y: NDArray[np.float64],
    pw: NDArray[np.float64],
    active: NDArray[np.bool_],
    st: _State,
    iters: int,
) -> None:
    """Run up to ``iters`` IRLS steps on the unconverged problems (``x[kidx]`` when designs are shared)."""
    for _ in range(iters):
        idx = np.nonzero(~st.done)[0]
        if len(idx) == 0:
            break
        xs = x[idx] if kidx is None else x[kidx[idx]]
        ys, pws, mus, etas = y[idx], pw[idx], st.mu[idx], st.eta[idx]
        z = etas + (ys - mus) / mus
        w = pws * mus
        xtw_t = (xs * w[:, :, None]).transpose(0, 2, 1)
        xtwx = np.matmul(xtw_t, xs)
        rhs = np.matmul(xtw_t, z[:, :, None])[:, :, 0]
        b, iv = _solve(xtwx, rhs, active[idx])
        new_eta = np.matmul(xs, b[:, :, None])[:, :, 0]
        new_mu = np.maximum(np.exp(new_eta), _EPS)  # R poisson()$linkinv clamps at machine epsilon
        dev = _deviance(ys, new_mu, pws)
        conv = np.abs(dev - st.dev_old[idx]) / (np.abs(dev) + 0.1) < _EPSILON
        st.beta[idx], st.inv[idx], st.w_last[idx] = b, iv, w
        st.eta[idx], st.mu[idx], st.dev_old[idx] = new_eta, new_mu, dev
        st.done[idx] = conv


def _fit(x: NDArray[np.float64], y: NDArray[np.float64], pw: NDArray[np.float64]) -> GlmBatch:
    present = pw > 0
    y = np.where(present, y, 0.0)
    active = np.any((x != 0) & present[:, :, None], axis=1)  # (N, p)
    mu = y + 0.1
    n_prob, p = y.shape[0], x.shape[2]
    st = _State(
        np.log(mu),
        mu,
        _deviance(y, mu, pw),
        np.zeros((n_prob, p)),
        np.zeros((n_prob, p, p)),
        pw * mu,
        np.zeros(n_prob, dtype=bool),
    )
    _iterate(x, None, y, pw, active, st, _MAXIT)
    rank = active.sum(axis=1)
    df = present.sum(axis=1) - rank
    resid = (y - st.mu) / st.mu
    disp = np.sum(np.where(present, st.w_last * resid**2, 0.0), axis=1) / df
    hat = np.sum(np.matmul(x, st.inv) * x, axis=2) * st.w_last
    return GlmBatch(st.beta, st.mu, st.inv, st.w_last, disp, df.astype(np.float64), hat, st.done)


def fit_quasipoisson_shared(
    x: NDArray[np.float64], y: NDArray[np.float64], prior_weights: NDArray[np.float64]
) -> GlmBatch:
    """As :func:`fit_quasipoisson` for ``S`` series sharing each of ``K`` designs.

    Args:
        x: designs ``(K, n, p)``; y, prior_weights: ``(K, S, n)``.

    Returns:
        The batch flattened to ``K * S`` problems (design-major), as :func:`fit_quasipoisson`.
        Sharing the design turns every cross-product into one matrix product per design, which
        is what makes region-wide Farrington runs fast.
    """
    with _quiet_single_thread():
        return _fit_shared(
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
            np.asarray(prior_weights, dtype=np.float64),
        )


def _fit_shared(x: NDArray[np.float64], y: NDArray[np.float64], pw: NDArray[np.float64]) -> GlmBatch:
    n_k, n_s, n_r = y.shape
    p = x.shape[2]
    xx = (x[:, :, :, None] * x[:, :, None, :]).reshape(n_k, n_r, p * p)
    present = pw > 0
    y = np.where(present, y, 0.0)
    active = np.matmul(present.astype(np.float64), (x != 0).astype(np.float64)) > 0  # (K, S, p)
    mu = y + 0.1
    eta = np.log(mu)
    dev_old = _deviance(y, mu, pw)
    done = np.zeros((n_k, n_s), dtype=bool)
    beta = np.zeros((n_k, n_s, p))
    inv = np.zeros((n_k, n_s, p, p))
    w_last = pw * mu
    xt = x.transpose(0, 2, 1)
    used = 0
    for _ in range(_MAXIT):
        if done.mean() > 0.7:  # finish the slow few one by one instead of all of them together
            break
        used += 1
        z = eta + (y - mu) / mu
        w = pw * mu
        xtwx = np.matmul(w, xx).reshape(-1, p, p)
        rhs = np.matmul(w * z, x).reshape(-1, p)
        b, iv = _solve(xtwx, rhs, active.reshape(-1, p))
        b, iv = b.reshape(n_k, n_s, p), iv.reshape(n_k, n_s, p, p)
        new_eta = np.matmul(b, xt)
        new_mu = np.maximum(np.exp(new_eta), _EPS)  # R poisson()$linkinv clamps at machine epsilon
        dev = _deviance(y, new_mu, pw)
        conv = np.abs(dev - dev_old) / (np.abs(dev) + 0.1) < _EPSILON
        upd = ~done
        u3 = upd[:, :, None]
        beta = np.where(u3, b, beta)
        inv = np.where(u3[..., None], iv, inv)
        w_last = np.where(u3, w, w_last)
        eta, mu = np.where(u3, new_eta, eta), np.where(u3, new_mu, mu)
        dev_old = np.where(upd, dev, dev_old)
        done = done | conv
    if not done.all() and used < _MAXIT:
        n, kidx = n_k * n_s, np.repeat(np.arange(n_k), n_s)
        st = _State(
            eta.reshape(n, n_r),
            mu.reshape(n, n_r),
            dev_old.reshape(n),
            beta.reshape(n, p),
            inv.reshape(n, p, p),
            w_last.reshape(n, n_r),
            done.reshape(n),
        )
        _iterate(x, kidx, y.reshape(n, n_r), pw.reshape(n, n_r), active.reshape(n, p), st, _MAXIT - used)
        eta, mu, beta = st.eta.reshape(eta.shape), st.mu.reshape(mu.shape), st.beta.reshape(beta.shape)
        inv, w_last, done = (
            st.inv.reshape(inv.shape),
            st.w_last.reshape(w_last.shape),
            st.done.reshape(done.shape),
        )
    df = present.sum(axis=2) - active.sum(axis=2)
    resid = (y - mu) / mu
    disp = np.sum(np.where(present, w_last * resid**2, 0.0), axis=2) / df
    hat = np.matmul(inv.reshape(n_k, n_s, p * p), xx.transpose(0, 2, 1)) * w_last
    n = n_k * n_s
    return GlmBatch(
        beta.reshape(n, p),
        mu.reshape(n, n_r),
        inv.reshape(n, p, p),
        w_last.reshape(n, n_r),
        disp.reshape(n),
        df.reshape(n).astype(np.float64),
        hat.reshape(n, n_r),
        done.reshape(n),
    )
