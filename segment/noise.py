"""The OD noise of a stack, measured from the data: ``σ(E, x) = σ₀(E) · exp(OD/2)``.

Transmission counts are Poisson, so the OD noise grows as ``exp(OD/2)``; :func:`od_noise_scale` estimates
``σ₀(E)`` per frame from the residual of a low-rank model of the stack.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .decompose import _singular_values_vectors, optimal_rank_threshold

__all__ = ["od_noise_scale"]


def _laplacian_noise(od: np.ndarray) -> np.ndarray:
    """Rough per-frame noise at zero OD from the MAD of a 4-neighbour Laplacian (variance 20 σ²)."""
    out = np.empty(od.shape[0])
    kern = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float)
    for k, frame in enumerate(od):
        finite = np.isfinite(frame)
        f = np.where(finite, frame, 0.0)
        lap = ndimage.convolve(f, kern, mode="reflect") / np.sqrt(20.0)
        scale = np.exp(np.clip(ndimage.uniform_filter(f, 3), -1, 6) / 2.0)
        ok = ndimage.binary_erosion(finite, iterations=1, border_value=0)
        v = (lap / scale)[ok]
        out[k] = 1.4826 * np.median(np.abs(v - np.median(v))) if v.size >= 10 else np.nan
    return out


def od_noise_scale(od: np.ndarray, *, max_rank: int = 10) -> np.ndarray:
    """Per-frame OD noise at zero OD, ``σ₀(E)``, assuming Poisson counts: ``σ(E, x) = σ₀(E) e^{OD/2}``.

    The spectra of a lamella are a mixture of a few phases, so the stack is low-rank plus noise. The
    stack, whitened per frame by a rough noise level (MAD of a Laplacian), is decomposed by SVD and
    truncated at the Gavish–Donoho threshold; the residual of that low-rank model, divided by
    ``exp(OD/2)``, gives ``σ₀(E)`` as a robust (MAD) standard deviation per frame, corrected for the
    degrees of freedom the model takes. This measures the per-pixel noise even when the frames were
    interpolated (drift correction correlates neighbouring pixels and fools purely spatial estimates).

    Parameters
    ----------
    od : ndarray, shape (n_energy, ny, nx)
        OD frames (pixels with NaN in any frame are ignored).
    max_rank : int
        Most components the low-rank model may keep.

    Returns
    -------
    ndarray, shape (n_energy,)
    """
    od = np.asarray(od, dtype=float)
    n_e = od.shape[0]
    rough = _laplacian_noise(od)
    bad = ~np.isfinite(rough) | (rough <= 0)
    if bad.all():
        return np.full(n_e, 1e-3)
    rough[bad] = np.median(rough[~bad])
    x = od.reshape(n_e, -1).T
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] < 4 * n_e or n_e < 4:
        return rough
    scale = rough[None, :]
    y = x / scale
    mean = y.mean(axis=0)
    s, vt = _singular_values_vectors(y - mean)
    thr, _ = optimal_rank_threshold(s, y.shape)
    k = int(min(max(np.sum(s > thr), 1), max_rank, n_e - 2))
    x_hat = (((y - mean) @ vt[:k].T) @ vt[:k] + mean) * scale
    r = (x - x_hat) / np.exp(np.clip(x_hat, -1, 6) / 2.0)
    mad = 1.4826 * np.median(np.abs(r - np.median(r, axis=0)), axis=0)
    out = mad * np.sqrt(n_e / (n_e - k))
    bad = ~np.isfinite(out) | (out <= 0)
    out[bad] = rough[bad]
    return out
