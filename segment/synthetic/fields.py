"""Smooth random fields and curves, the building blocks of the synthetic microstructure."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def smooth_random_field(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float,
                        corr_nm: float) -> np.ndarray:
    """A stationary Gaussian random field with unit standard deviation and correlation length ``corr_nm``.

    White noise on a coarse grid (spacing ``corr_nm / 4``) is Gaussian-filtered and interpolated (cubic)
    to ``shape``; cost is independent of ``corr_nm``.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
        Output shape (rows, columns).
    pixel_nm : float
        Pixel size of the output grid.
    corr_nm : float
        Gaussian correlation length (sigma of the smoothing kernel in nm × 1).

    Returns
    -------
    ndarray of float32, shape ``shape``
    """
    if corr_nm / pixel_nm < 8.0:
        out = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=corr_nm / pixel_nm)
        return (out / (out.std() + 1e-12)).astype(np.float32)
    step_px = corr_nm / 4.0 / pixel_nm
    cshape = (int(np.ceil(shape[0] / step_px)) + 8, int(np.ceil(shape[1] / step_px)) + 8)
    noise = rng.standard_normal(cshape)
    coarse = ndi.gaussian_filter(noise, sigma=corr_nm / pixel_nm / step_px, mode="wrap")
    coarse /= coarse.std() + 1e-12
    yy = np.arange(shape[0]) / step_px + 4.0
    xx = np.arange(shape[1]) / step_px + 4.0
    out = _separable_cubic_resample(coarse, yy, xx)
    return out.astype(np.float32)


def _keys_matrix(positions: np.ndarray, n_in: int) -> np.ndarray:
    """Dense matrix of Keys (a = -0.5) cubic interpolation weights: out = W @ samples."""
    w = np.zeros((len(positions), n_in))
    base = np.floor(positions).astype(int)
    rows = np.arange(len(positions))
    for off in (-1, 0, 1, 2):
        idx = base + off
        d = np.abs(positions - idx)
        k = np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1,
                     np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))
        np.add.at(w, (rows, np.clip(idx, 0, n_in - 1)), k)
    return w


def _separable_cubic_resample(img: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    wy = _keys_matrix(yy, img.shape[0])
    wx = _keys_matrix(xx, img.shape[1])
    return wy @ img @ wx.T


def periodic_smooth_function(rng: np.random.Generator, perimeter_nm: float, corr_nm: float,
                             n_modes: int = 24):
    """A random smooth periodic function of the polar angle with unit variance (in expectation).

    Fourier series with Gaussian spectrum: mode ``k`` has variance ∝ exp(-(2π k corr / perimeter)² / 2),
    so the correlation length along a perimeter of ``perimeter_nm`` is about ``corr_nm``.

    Returns
    -------
    callable
        ``f(theta)`` for angles in radians (any shape).
    """
    k = np.arange(1, n_modes + 1)
    power = np.exp(-0.5 * (2 * np.pi * k * corr_nm / max(perimeter_nm, 1.0)) ** 2)
    power /= power.sum()
    a = rng.standard_normal(n_modes) * np.sqrt(power)
    b = rng.standard_normal(n_modes) * np.sqrt(power)

    def f(theta):
        theta = np.asarray(theta, dtype=float)
        kt = theta[..., None] * k
        return (np.cos(kt) @ a + np.sin(kt) @ b)

    return f
