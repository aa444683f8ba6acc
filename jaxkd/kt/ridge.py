"""A linear baseline for KT's translator: ridge regression from the flattened BasicBlock
tokens (the translator's input, 72 x 9 = 648) to the flattened SimpleBlockNoBn kernels
(its target, 36 x 9 = 324), in closed form.

Centred, with an unpenalised intercept: ``w = (Xc^T Xc + lam I)^-1 Xc^T Yc`` and
``b = mean(Y) - mean(X) w``, from one eigendecomposition of the D x D Gram matrix
(float64, accumulated over row chunks, so 300,000 pairs need no P x D float64 copy), or,
with fewer pairs than inputs (P <= D), of the P x P kernel matrix (the dual form). At
``lam = 0`` the pseudo-inverse is used: the minimum-norm least-squares solution (what
``numpy.linalg.lstsq`` returns), also when P < D.

The strength is chosen by :func:`select` as ``lam = alpha * tr(Xc^T Xc) / D`` (alpha
relative to the mean eigenvalue, so the grid does not depend on the scale of the weights
or on P), alpha from :data:`ALPHAS`, by the MSE on a held-out slice (the last
:data:`HOLDOUT_FRACTION` of the training pairs, which are i.i.d.); the chosen alpha is
then refit on all training pairs. The largest alpha shrinks ``w`` to nearly 0, i.e. the
mean block, so the grid spans least squares to the input-blind predictor.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ALPHAS", "HOLDOUT_FRACTION", "Ridge", "fit", "predict", "select"]

#: Ridge strengths relative to the mean eigenvalue of the centred Gram matrix.
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
#: The share of the training pairs held out to choose alpha (at least one pair).
HOLDOUT_FRACTION = 0.1
_CHUNK = 32768  # rows per Gram-matrix update


class Ridge(NamedTuple):
    """A fitted linear map ``y = x @ w + b`` (float64).

    Attributes:
      w: (D, K) weights; b: (K,) intercept; lam: the absolute ridge strength.
    """
    w: np.ndarray
    b: np.ndarray
    lam: float


def _flat(a):
    a = np.asarray(a)
    return a.reshape(a.shape[0], -1)


class _Gram(NamedTuple):
    """Centred data reduced to one eigendecomposition ``(e, v)``: of the D x D Gram
    matrix Xc^T Xc with ``c = Xc^T Yc`` when P > D, else of the P x P kernel Xc Xc^T with
    ``c = Yc`` and ``xc = Xc`` kept (same nonzero eigenvalues, smaller)."""
    mx: np.ndarray
    my: np.ndarray
    e: np.ndarray
    v: np.ndarray
    c: np.ndarray
    xc: np.ndarray | None
    trace: float                 # tr(Xc^T Xc)


def _gram(x, y) -> _Gram:
    mx = np.mean(x, axis=0, dtype=np.float64)
    my = np.mean(y, axis=0, dtype=np.float64)
    p, d = x.shape
    if p <= d:  # dual form
        xc, yc = x.astype(np.float64) - mx, y.astype(np.float64) - my
        e, v = np.linalg.eigh(xc @ xc.T)
        return _Gram(mx, my, e, v, yc, xc, float(np.sum(np.square(xc))))
    g = np.zeros((d, d))
    c = np.zeros((d, y.shape[1]))
    for lo in range(0, p, _CHUNK):
        xc = x[lo:lo + _CHUNK].astype(np.float64) - mx
        g += xc.T @ xc
        c += xc.T @ (y[lo:lo + _CHUNK].astype(np.float64) - my)
    e, v = np.linalg.eigh(g)
    return _Gram(mx, my, e, v, c, None, float(np.trace(g)))


def _solve(gr: _Gram, lam: float) -> Ridge:
    e = gr.e
    if lam > 0:
        inv = 1.0 / (e + lam)
    else:  # pseudo-inverse: drop the (numerically) null directions
        keep = e > e.max(initial=0.0) * max(gr.v.shape[0], gr.mx.shape[0]) * np.finfo(
            np.float64).eps
        inv = np.where(keep, 1.0 / np.where(keep, e, 1.0), 0.0)
    w = gr.v @ (inv[:, None] * (gr.v.T @ gr.c))
    if gr.xc is not None:     # dual: (X^T X + lam I)^-1 X^T = X^T (X X^T + lam I)^-1
        w = gr.xc.T @ w
    return Ridge(w, gr.my - gr.mx @ w, float(lam))


def fit(x, y, lam: float) -> Ridge:
    """Ridge regression of ``y`` on ``x`` with an unpenalised intercept.

    Args:
      x: (P, ...) inputs, flattened to (P, D); y: (P, ...) targets, flattened to (P, K).
      lam: the absolute ridge strength >= 0 (0: minimum-norm least squares).
    """
    return _solve(_gram(_flat(x), _flat(y)), float(lam))


def _predict64(model: Ridge, x):
    return _flat(x).astype(np.float64) @ model.w + model.b


def predict(model: Ridge, x):
    """(P, ...) inputs -> (P, K) float32 predictions."""
    return _predict64(model, x).astype(np.float32)


def select(x, y, alphas=ALPHAS, holdout_fraction: float = HOLDOUT_FRACTION):
    """Chooses alpha by the held-out MSE, then refits on all rows.

    The last ``max(1, round(holdout_fraction * P))`` rows are held out (none when P < 2:
    then the largest alpha is taken without a choice).

    Returns:
      (:class:`Ridge` fitted on all rows, info dict: ``alpha``, ``lam``, ``holdout``
      (rows held out), ``holdout_mse`` {alpha: MSE}, ``holdout_mse_mean`` (the MSE of
      predicting the fit rows' mean, the input-blind predictor)).
    """
    x, y = _flat(x), _flat(y)
    p, d = x.shape
    n_hold = max(1, int(round(holdout_fraction * p))) if p >= 2 else 0
    mse = {}
    best = float(max(alphas))
    mse_mean = None
    if n_hold:
        xf, yf, xh, yh = x[:-n_hold], y[:-n_hold], x[-n_hold:], y[-n_hold:]
        gr = _gram(xf, yf)
        for a in alphas:
            m = _solve(gr, float(a) * gr.trace / d)
            mse[float(a)] = float(np.mean(np.square(_predict64(m, xh) - yh)))
        best = min(mse, key=mse.get)
        mse_mean = float(np.mean(np.square(gr.my - yh)))
    gr = _gram(x, y)
    model = _solve(gr, best * gr.trace / d)
    return model, {"alpha": best, "lam": model.lam, "holdout": n_hold,
                   "holdout_mse": {str(a): v for a, v in mse.items()},
                   "holdout_mse_mean": mse_mean}
