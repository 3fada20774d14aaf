"""The two heads the guard can be fitted with, in numpy: weighted logistic regression and a one-layer MLP.

Both take a design matrix ``x`` (windows x inputs), 0/1 targets and per-row weights, and return the arrays
:class:`~tiergate.guard.model.Guard` runs: ``w0``/``b0`` (logistic), or ``w0``/``b0``/``w1``/``b1`` with a
ReLU between (MLP); a sigmoid follows the last layer. The MLP is trained by Adam on seeded mini-batches, so
one seed gives the same weights bit for bit on one machine.

    arrays = fit_mlp(x, y, w, hidden=64, seed=0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

NEWTON_STEPS = 50


def _sigmoid(z: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))))


def fit_logistic(x: npt.NDArray[Any], y: npt.NDArray[Any], w: npt.NDArray[Any], l2: float) -> dict[str, Any]:
    """Weighted logistic regression, L2 on the coefficients (not the intercept), by Newton's method."""
    x64 = np.hstack([x.astype(np.float64), np.ones((x.shape[0], 1))])
    y64, w64 = y.astype(np.float64), w.astype(np.float64)
    penalty = np.full(x64.shape[1], l2)
    penalty[-1] = 1e-9
    beta = np.zeros(x64.shape[1])
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(x64 @ beta)
        grad = x64.T @ (w64 * (p - y64)) + penalty * beta
        hess = (x64 * (w64 * p * (1.0 - p))[:, None]).T @ x64 + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-7:
            break
    return {"w0": beta[:-1, None].astype(np.float32), "b0": beta[-1:].astype(np.float32)}


def fit_mlp(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    w: npt.NDArray[Any],
    *,
    hidden: int,
    l2: float,
    epochs: int,
    seed: int,
    lr: float = 3e-3,
    batch: int = 512,
) -> dict[str, Any]:
    """A ReLU layer of ``hidden`` units and a logistic output, weighted cross-entropy plus L2, by Adam."""
    rng = np.random.default_rng(seed)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x32.shape
    params = [
        (rng.normal(size=(d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.normal(size=(hidden, 1)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        np.zeros(1, np.float32),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    targets = y.astype(np.float32)
    weights = (w / w.mean()).astype(np.float32)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            w0, b0, w1, b1 = params
            pre = x32[rows] @ w0 + b0
            act = np.maximum(pre, 0.0)
            p = _sigmoid((act @ w1 + b1)[:, 0])
            g_out = (weights[rows] * (p - targets[rows]) / rows.size)[:, None]
            g_pre = (g_out @ w1.T) * (pre > 0)
            grads = [x32[rows].T @ g_pre + l2 * w0, g_pre.sum(axis=0), act.T @ g_out + l2 * w1, g_out.sum(axis=0)]
            step += 1
            for k, (param, grad) in enumerate(zip(params, grads, strict=True)):
                moments[k] = 0.9 * moments[k] + 0.1 * grad
                squares[k] = 0.999 * squares[k] + 0.001 * grad * grad
                m_hat = moments[k] / (1.0 - 0.9**step)
                v_hat = squares[k] / (1.0 - 0.999**step)
                param -= (lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
    return dict(zip(("w0", "b0", "w1", "b1"), params, strict=True))
