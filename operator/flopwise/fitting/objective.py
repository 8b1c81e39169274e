"""The Huber-in-log-space objective of Hoffmann et al. (2022), as corrected by Epoch AI (2024).

For points i with inputs log x_ik (k = 1..K; K = 2 gives log N, log D) and observed loss L_i, and parameters
θ = (c_1..c_K, g_1..g_K, e) — for K = 2 that is (a, b, α, β, e) with A = exp a, B = exp b, E = exp e:

    log L̂_i = LSE(c_1 − g_1·log x_i1, …, c_K − g_K·log x_iK, e)
    r_i     = log L̂_i − log L_i
    f(θ)    = Σ_i w_i · Huber_δ(r_i),   Huber_δ(r) = r²/2 if |r| ≤ δ else δ·(|r| − δ/2),   δ = 1e-3

The sum (not the mean) matters: averaging, as Hoffmann did, shrinks the gradient by 1/n and stopped L-BFGS
early — Epoch's main finding. With ψ_i = w_i·clip(r_i, −δ, δ) and p_i = softmax of the LSE terms, the exact
gradient is ∂f/∂c_k = Σ ψ_i p_ik, ∂f/∂g_k = −Σ ψ_i p_ik log x_ik, ∂f/∂e = Σ ψ_i p_i,K+1.

Everything is batched over starts: θ has shape (S, 2K+1) and weights may differ per start (bootstrap
resamples are integer weights on the same points), so one call evaluates every start at once.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss, identical to ``scipy.special.huber(delta, r)``."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def log_prediction(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log L̂ for every start (rows of ``theta``, shape (S, 2K+1)) and point (rows of ``log_x``, (n, K))."""
    terms = _terms(np.atleast_2d(theta), log_x)
    m = _max(terms)
    return m + np.log(sum(np.exp(t - m) for t in terms))


def _terms(theta: np.ndarray, log_x: np.ndarray) -> list[np.ndarray]:
    """The K+1 LSE arguments, each (S, n). Kept as separate 2-D arrays: reducing over a trailing axis of
    length 3 is several times slower in numpy than elementwise passes."""
    k = log_x.shape[1]
    terms = [theta[:, j, None] - theta[:, k + j, None] * log_x[None, :, j] for j in range(k)]
    terms.append(np.broadcast_to(theta[:, 2 * k, None], terms[0].shape))
    return terms


def _max(terms: list[np.ndarray]) -> np.ndarray:
    m = np.maximum(terms[0], terms[1])
    for t in terms[2:]:
        np.maximum(m, t, out=m)
    return m


BLOCK_ELEMENTS = 1 << 16
"""Starts are evaluated in blocks of about this many (start, point) pairs: the temporaries then stay in
cache, which is ~3× faster than one pass over 4500 × 240 arrays."""


def objective_and_grad(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_y: np.ndarray,
    weights: np.ndarray | None = None,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, np.ndarray]:
    """f and ∂f/∂θ for each start: returns shapes (S,) and (S, 2K+1).

    ``log_y`` is (n,) or, to fit several data sets on the same inputs at once, (S, n); ``weights`` likewise.
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    rows = max(1, BLOCK_ELEMENTS // max(1, log_x.shape[0]))
    if theta.shape[0] <= rows:
        return _block(theta, log_x, log_y, weights, delta)
    f = np.empty(theta.shape[0])
    grad = np.empty_like(theta)
    w_rows = weights is not None and np.ndim(weights) == 2
    y_rows = np.ndim(log_y) == 2
    for lo in range(0, theta.shape[0], rows):
        block = slice(lo, lo + rows)
        f[block], grad[block] = _block(
            theta[block], log_x, log_y[block] if y_rows else log_y, weights[block] if w_rows else weights, delta
        )
    return f, grad


def _block(
    theta: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, weights: np.ndarray | None, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """One block of starts. The LSE is shifted by e rather than by the elementwise maximum (one exp and two
    passes fewer: this function is the whole cost of a fit); rows where that overflows are recomputed with
    the max shift.
    """
    k = log_x.shape[1]
    e = theta[:, 2 * k, None]
    with np.errstate(over="ignore", invalid="ignore"):
        z = [np.exp(t - e) for t in _terms(theta, log_x)[:k]]  # exp(t_k − e)
        total = z[0] + 1.0
        for zj in z[1:]:
            total += zj
        r = np.log(total)
    r += e
    r -= log_y
    bad = np.flatnonzero(~np.isfinite(r).all(axis=1))
    p_e_bad = None
    if bad.size:
        terms = _terms(theta[bad], log_x)
        m = _max(terms)
        zb = [np.exp(t - m) for t in terms]
        total_b = sum(zb)
        r[bad] = m + np.log(total_b) - (log_y[bad] if log_y.ndim == 2 else log_y)
        for j in range(k):
            z[j][bad] = zb[j]
        total[bad] = total_b
        p_e_bad = zb[k] / total_b
    c = np.clip(r, -delta, delta)  # Huber'(r); Huber(r) = c·(r − c/2) in both regimes
    r -= 0.5 * c
    r *= c
    if weights is not None:
        r *= weights
        c *= weights
    grad = np.empty_like(theta)
    if p_e_bad is not None:
        grad[bad, 2 * k] = (c[bad] * p_e_bad).sum(axis=1)
    c /= total  # ψ_i / total: times z_k this is ψ_i · p_ik
    ge = c.sum(axis=1)  # ∂f/∂e = Σ ψ_i p_i,e with p_i,e = 1 / total on the e-shifted rows
    if p_e_bad is not None:
        ge[bad] = grad[bad, 2 * k]
    grad[:, 2 * k] = ge
    for j in range(k):
        q = z[j]
        q *= c
        grad[:, j] = q.sum(axis=1)
        grad[:, k + j] = -(q @ log_x[:, j])
    return r.sum(axis=1), grad
