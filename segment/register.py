"""STXM ↔ SEM registration and resampling between the two grids.

Conventions (CONTRACT.md): image coordinates are ``x`` = column, ``y`` = row, with pixel centres at integer
indices. A registration is a 3×3 matrix ``M`` that maps an STXM pixel ``(x, y, 1)`` to an SEM pixel
``(x, y, 1)``; pixel ``(x, y)`` covers the square ``[x − ½, x + ½] × [y − ½, y + ½]``.

Resampling goes both ways:

* :func:`warp_to_sem` brings an STXM image (a map of values) onto the SEM grid, for display and for the
  pixel-level segmentation that needs both modalities on one grid;
* :func:`labels_to_stxm` / :func:`label_fractions_on_stxm` bring an SEM-grid label map (classes, particles)
  onto the native STXM grid, so that statistics are computed on native STXM pixels (one value per measured
  pixel, not ~16 interpolated copies of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Registration:
    """The transform from one STXM grid to the SEM grid (or to another STXM grid).

    Attributes
    ----------
    matrix : ndarray, shape (3, 3)
        Maps a moving pixel ``(x, y, 1)`` (STXM) to a fixed pixel ``(x, y, 1)`` (SEM). Last row ``(0, 0, 1)``.
    quality : float
        A figure of merit of the alignment in [−1, 1]: the correlation of the fixed image with the moving
        image warped onto it, after a monotone rank transform on both (so contrast inversion or nonlinear
        contrast between modalities does not lower it). NaN when unknown (e.g. landmarks).
    method : str
        How it was found (``"sitk-mattes-mi-similarity"``, ``"landmarks-affine"``, ``"identity"`` …).
    metrics : dict
        Details: final metric value, iterations, the start that won, scale, rotation in degrees,
        translation, per-start results …
    """

    matrix: np.ndarray
    quality: float = float("nan")
    method: str = ""
    metrics: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# matrices
# ----------------------------------------------------------------------------------------------------------

def similarity_matrix(scale: float, rotation_deg: float = 0.0, translation_xy=(0.0, 0.0)) -> np.ndarray:
    """The 3×3 matrix of a similarity ``p' = s R(θ) p + t`` in pixel coordinates ``(x, y)``.

    Parameters
    ----------
    scale : float
        Isotropic scale (output pixels per input pixel).
    rotation_deg : float
        Rotation angle θ in degrees (counter-clockwise in an ``x`` right / ``y`` up frame; with ``y`` pointing
        down the rows it appears clockwise on screen).
    translation_xy : (float, float)
        Translation ``t = (t_x, t_y)`` in output pixels.

    Returns
    -------
    ndarray, shape (3, 3)
    """
    th = np.deg2rad(rotation_deg)
    c, s = scale * np.cos(th), scale * np.sin(th)
    return np.array([[c, -s, float(translation_xy[0])],
                     [s, c, float(translation_xy[1])],
                     [0.0, 0.0, 1.0]])


def transform_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3×3 homogeneous (affine) matrix to points.

    Parameters
    ----------
    matrix : ndarray, shape (3, 3)
    xy : array_like, shape (n, 2) or (2,)
        Points as ``(x, y)``.

    Returns
    -------
    ndarray, same shape as ``xy``
    """
    xy = np.asarray(xy, dtype=float)
    pts = np.atleast_2d(xy)
    out = pts @ matrix[:2, :2].T + matrix[:2, 2]
    return out.reshape(xy.shape)


def matrix_from_landmarks(stxm_xy, sem_xy, kind: str = "similarity") -> np.ndarray:
    """Least-squares transform from matched landmarks.

    Parameters
    ----------
    stxm_xy, sem_xy : array_like, shape (n, 2)
        The same points as ``(x, y)`` in STXM and in SEM pixels.
    kind : {"similarity", "affine"}
        ``"similarity"`` (scale, rotation, translation; no reflection; Umeyama's closed form, n ≥ 2) or
        ``"affine"`` (6 parameters, linear least squares, n ≥ 3 not all on one line).

    Returns
    -------
    ndarray, shape (3, 3)
        Maps STXM ``(x, y, 1)`` to SEM ``(x, y, 1)``.

    Raises
    ------
    ValueError
        Too few points, mismatched shapes, degenerate configuration or unknown ``kind``.
    """
    src = np.asarray(stxm_xy, dtype=float)
    dst = np.asarray(sem_xy, dtype=float)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError("landmarks must be two arrays of shape (n, 2) with the same n")
    n = src.shape[0]
    if kind == "similarity":
        if n < 2:
            raise ValueError("a similarity needs at least 2 landmarks")
        mu_s, mu_d = src.mean(0), dst.mean(0)
        s0, d0 = src - mu_s, dst - mu_d
        var_s = (s0 ** 2).sum() / n
        if var_s <= 0:
            raise ValueError("landmarks coincide: cannot estimate a scale")
        cov = d0.T @ s0 / n
        u, sv, vt = np.linalg.svd(cov)
        d = np.ones(2)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            d[-1] = -1.0
        rot = u @ np.diag(d) @ vt
        scale = (sv * d).sum() / var_s
        m = np.eye(3)
        m[:2, :2] = scale * rot
        m[:2, 2] = mu_d - scale * rot @ mu_s
        return m
    if kind == "affine":
        if n < 3:
            raise ValueError("an affine transform needs at least 3 landmarks")
        a = np.hstack([src, np.ones((n, 1))])
        if np.linalg.matrix_rank(a) < 3:
            raise ValueError("landmarks are collinear: cannot estimate an affine transform")
        sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
        m = np.eye(3)
        m[:2, :] = sol.T
        return m
    raise ValueError(f"unknown transform kind {kind!r} (use 'similarity' or 'affine')")


def pixel_scale(matrix: np.ndarray) -> float:
    """Mean linear scale of a matrix: ``sqrt(|det A|)`` of its 2×2 part (SEM px per STXM px)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:2, :2]))))


# ----------------------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------------------

def _fill_nan_nearest(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaNs by the nearest finite value; return (filled, nan_mask or None)."""
    nan = ~np.isfinite(image)
    if not nan.any():
        return image, None
    if nan.all():
        return np.zeros_like(image), nan
    idx = ndimage.distance_transform_edt(nan, return_distances=False, return_indices=True)
    return image[tuple(idx)], nan


def warp_to_sem(stxm_image: np.ndarray, matrix: np.ndarray, sem_shape, order: int = 1,
                cval: float = np.nan) -> np.ndarray:
    """Resample an STXM-grid image onto the SEM grid.

    The value at SEM pixel ``(x, y)`` is the STXM image interpolated at ``M⁻¹ (x, y, 1)``.

    Parameters
    ----------
    stxm_image : ndarray, shape (ny, nx) or (..., ny, nx)
        Values on the STXM grid (leading axes, e.g. energy, are warped frame by frame). NaN marks pixels
        without a value; they stay NaN on the SEM grid over their footprint (nearest-pixel extent), and
        do not spread into their neighbours' interpolation.
    matrix : ndarray, shape (3, 3)
        STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``.
    sem_shape : (int, int)
        ``(ny, nx)`` of the SEM grid.
    order : int
        Spline order (0 nearest, 1 bilinear, 3 cubic).
    cval : float
        Value of SEM pixels that fall outside the STXM field (outside the pixel squares
        ``[−½, n − ½]`` of the STXM grid).

    Returns
    -------
    ndarray, shape (..., ny_sem, nx_sem), float64
    """
    img = np.asarray(stxm_image, dtype=float)
    ny, nx = int(sem_shape[0]), int(sem_shape[1])
    inv = np.linalg.inv(np.asarray(matrix, dtype=float))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xs = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    ys = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    h, w = img.shape[-2:]
    outside = (xs < -0.5) | (xs > w - 0.5) | (ys < -0.5) | (ys > h - 0.5)
    coords = np.stack([ys, xs])
    lead = img.shape[:-2]
    flat = img.reshape((-1, h, w))
    out = np.empty((flat.shape[0], ny, nx))
    for k, frame in enumerate(flat):
        filled, nan = _fill_nan_nearest(frame)
        out[k] = ndimage.map_coordinates(filled, coords, order=order, mode="nearest")
        if nan is not None:
            near = ndimage.map_coordinates(nan.astype(np.uint8), coords, order=0, mode="nearest")
            out[k][near.astype(bool)] = np.nan
        out[k][outside] = cval
    return out.reshape(lead + (ny, nx))


def _footprint_samples(labels_sem: np.ndarray, matrix: np.ndarray, stxm_shape,
                       supersample: int | None) -> tuple[np.ndarray, int]:
    """SEM labels sampled on an s×s grid inside each STXM pixel square: shape (ny*nx, s*s)."""
    m = np.asarray(matrix, dtype=float)
    if supersample is None:
        # about one sample per SEM pixel along each side of the footprint, at least 3
        supersample = max(3, int(np.ceil(pixel_scale(m))))
    s = int(supersample)
    ny, nx = int(stxm_shape[0]), int(stxm_shape[1])
    sub = (np.arange(s) + 0.5) / s - 0.5
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    px = (xx.reshape(-1, 1, 1) + sub.reshape(1, 1, s)).repeat(s, axis=1).reshape(ny * nx, s * s)
    py = (yy.reshape(-1, 1, 1) + sub.reshape(1, s, 1)).repeat(s, axis=2).reshape(ny * nx, s * s)
    sx = m[0, 0] * px + m[0, 1] * py + m[0, 2]
    sy = m[1, 0] * px + m[1, 1] * py + m[1, 2]
    ix = np.floor(sx + 0.5).astype(np.int64)
    iy = np.floor(sy + 0.5).astype(np.int64)
    hs, ws = labels_sem.shape
    inside = (ix >= 0) & (ix < ws) & (iy >= 0) & (iy < hs)
    vals = np.zeros(ix.shape, dtype=np.int64)
    vals[inside] = labels_sem[iy[inside], ix[inside]]
    return vals, s


def label_fractions_on_stxm(labels_sem: np.ndarray, matrix: np.ndarray, stxm_shape, n_labels: int,
                            supersample: int | None = None) -> np.ndarray:
    """Area fraction of each label within each STXM pixel's footprint on the SEM grid.

    The footprint of STXM pixel ``(x, y)`` is its square ``[x − ½, x + ½] × [y − ½, y + ½]`` mapped into
    the SEM grid by ``matrix``. It is sampled at the centres of an ``s × s`` grid of sub-squares (``s`` ≈
    SEM pixels per STXM pixel, at least 3, so each SEM pixel in the footprint is seen about once); each
    sample takes the label of the SEM pixel it falls in. Samples outside the SEM image count as label 0
    (outside / unassigned), so fractions always sum to 1.

    Parameters
    ----------
    labels_sem : ndarray of int, shape (ny_sem, nx_sem)
        Label map on the SEM grid (classes 0–4, or particle ids), non-negative.
    matrix : ndarray, shape (3, 3)
        STXM pixel → SEM pixel.
    stxm_shape : (int, int)
        ``(ny, nx)`` of the STXM grid.
    n_labels : int
        Number of labels ``0 … n_labels − 1`` to report; labels ≥ ``n_labels`` raise ValueError.
    supersample : int, optional
        Override ``s``.

    Returns
    -------
    ndarray, shape (n_labels, ny, nx), float64
        ``fractions[l, y, x]`` = share of pixel ``(x, y)``'s footprint labelled ``l``.
    """
    labels_sem = np.asarray(labels_sem)
    vals, s = _footprint_samples(labels_sem, matrix, stxm_shape, supersample)
    if vals.size and (vals.max() >= n_labels or vals.min() < 0):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}; found {vals.min()}..{vals.max()}")
    npix = vals.shape[0]
    rows = np.repeat(np.arange(npix), vals.shape[1])
    counts = np.bincount(rows * n_labels + vals.ravel(), minlength=npix * n_labels)
    frac = counts.reshape(npix, n_labels).T / float(s * s)
    return frac.reshape((n_labels,) + tuple(int(v) for v in stxm_shape))


def labels_to_stxm(labels_sem: np.ndarray, matrix: np.ndarray, stxm_shape,
                   supersample: int | None = None) -> np.ndarray:
    """Label of each STXM pixel: the majority label within its footprint on the SEM grid.

    The footprint is sampled as in :func:`label_fractions_on_stxm` (samples outside the SEM image count as
    label 0). Ties go to the smaller label.

    Parameters
    ----------
    labels_sem : ndarray of int, shape (ny_sem, nx_sem)
        Non-negative labels on the SEM grid (any number of distinct labels, e.g. particle ids).
    matrix : ndarray, shape (3, 3)
        STXM pixel → SEM pixel.
    stxm_shape : (int, int)
        ``(ny, nx)`` of the STXM grid.
    supersample : int, optional
        Samples per side of each footprint (default ≈ SEM pixels per STXM pixel, at least 3).

    Returns
    -------
    ndarray, shape (ny, nx), same dtype as ``labels_sem``
    """
    labels_sem = np.asarray(labels_sem)
    vals, _ = _footprint_samples(labels_sem, matrix, stxm_shape, supersample)
    npix, k = vals.shape
    uniq, inv = np.unique(vals, return_inverse=True)
    nl = len(uniq)
    key = np.repeat(np.arange(npix, dtype=np.int64), k) * nl + inv.ravel()
    keys, counts = np.unique(key, return_counts=True)
    pix, lab = keys // nl, keys % nl
    # per pixel: highest count first, then the smaller label
    order = np.lexsort((lab, -counts, pix))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pix[order][1:] != pix[order][:-1]
    best = order[first]
    out = np.empty(npix, dtype=labels_sem.dtype)
    out[pix[best]] = uniq[lab[best]]
    return out.reshape(tuple(int(v) for v in stxm_shape))
