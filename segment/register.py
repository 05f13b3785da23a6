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

One module past 800 lines, on purpose: the matrix convention above is shared by the resampling helpers, the
registration itself and its chance test, which are read together when a registration is in doubt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


class RegistrationError(RuntimeError):
    """The automatic registration found no transform (every start failed)."""


@dataclass(frozen=True)
class Registration:
    """The transform from one STXM grid to the SEM grid (or to another STXM grid).

    Attributes
    ----------
    matrix : ndarray, shape (3, 3)
        Maps a moving pixel ``(x, y, 1)`` (STXM) to a fixed pixel ``(x, y, 1)`` (SEM). Last row ``(0, 0, 1)``.
    quality : float
        A figure of merit in [0, 1]: the symmetric uncertainty ``2·MI / (H_fixed + H_moving)`` of the fixed
        image and the moving image warped onto it (0: unrelated, 1: one determines the other; any monotone
        or non-monotone contrast relation between modalities counts). NaN when unknown (e.g. landmarks).
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


# ----------------------------------------------------------------------------------------------------------
# automatic registration
# ----------------------------------------------------------------------------------------------------------

def contrast_image(od_stack, method: str = "mean") -> np.ndarray:
    """One image of an OD stack to register with.

    Parameters
    ----------
    od_stack : Stack
        Aligned OD stack.
    method : {"mean", "pca"}
        ``"mean"``: mean OD over energies — total absorption, the most robust image (highest
        signal-to-noise, no sign ambiguity; at the Ni and S edges it separates NMC, electrolyte and voids).
        ``"pca"``: the first component of a non-centred PCA of the frames (the dominant absorption pattern,
        a noise-weighted mean), sign chosen to correlate positively with the mean OD.

    Returns
    -------
    ndarray (ny, nx), float64
        NaN-free (non-finite pixels replaced by the median); outside ``metadata["valid_region"]`` the
        values are those of the nearest valid pixel.
    """
    data = np.asarray(od_stack.data, float)
    mean = np.nanmean(np.where(np.isfinite(data), data, np.nan), axis=0)
    if method == "mean":
        img = mean
    elif method == "pca":
        x = np.where(np.isfinite(data), data, 0.0).reshape(data.shape[0], -1)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        img = vt[0].reshape(mean.shape) * s[0]
        if np.corrcoef(img.ravel(), np.nan_to_num(mean).ravel())[0, 1] < 0:
            img = -img
    else:
        raise ValueError(f"unknown contrast method {method!r}")
    img = np.where(np.isfinite(img), img, np.nanmedian(img))
    valid = od_stack.metadata.get("valid_region") if isinstance(od_stack.metadata, dict) else None
    if valid is not None and np.any(valid) and not np.all(valid):
        idx = ndimage.distance_transform_edt(~np.asarray(valid, bool), return_distances=False,
                                             return_indices=True)
        img = img[tuple(idx)]
    return img


def _normalised_mi(a: np.ndarray, b: np.ndarray, bins: int = 32) -> tuple[float, float]:
    """(symmetric uncertainty 2·MI/(H_a + H_b) in [0, 1], Studholme NMI (H_a + H_b)/H_ab in [1, 2])."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 16:
        return float("nan"), float("nan")
    h, _, _ = np.histogram2d(a[ok], b[ok], bins=bins)
    p = h / h.sum()
    pa, pb = p.sum(1), p.sum(0)

    def ent(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    ha, hb, hab = ent(pa), ent(pb), ent(p.ravel())
    mi = ha + hb - hab
    return (2 * mi / (ha + hb) if ha + hb > 0 else float("nan")), ((ha + hb) / hab if hab > 0 else float("nan"))


def _to_sitk(image: np.ndarray, spacing: float):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    img.SetSpacing((float(spacing), float(spacing)))
    img.SetOrigin((0.0, 0.0))
    return img


def _itk_to_matrix(tx, moving_px: float, fixed_px: float) -> np.ndarray:
    """Our moving-pixel → fixed-pixel matrix from an ITK transform (fixed nm → moving nm)."""
    a = np.array(tx.GetMatrix(), float).reshape(2, 2)
    c = np.array(tx.GetCenter(), float)
    t = np.array(tx.GetTranslation(), float)
    fwd = np.eye(3)
    fwd[:2, :2] = a
    fwd[:2, 2] = t + c - a @ c                     # p_moving = a p_fixed + (t + c − a c)
    inv = np.linalg.inv(fwd)                       # moving nm → fixed nm
    s_m = np.diag([moving_px, moving_px, 1.0])
    s_f_inv = np.diag([1.0 / fixed_px, 1.0 / fixed_px, 1.0])
    return s_f_inv @ inv @ s_m


def _matrix_to_itk(matrix: np.ndarray, moving_px: float, fixed_px: float, kind: str, center_nm):
    """ITK transform (fixed nm → moving nm) from our moving-pixel → fixed-pixel matrix."""
    import SimpleITK as sitk

    fwd_px = np.linalg.inv(np.asarray(matrix, float))       # fixed px → moving px
    fwd = np.diag([moving_px, moving_px, 1.0]) @ fwd_px @ np.diag([1 / fixed_px, 1 / fixed_px, 1.0])
    a, b = fwd[:2, :2], fwd[:2, 2]
    c = np.asarray(center_nm, float)
    t = b - c + a @ c
    if kind == "affine":
        tx = sitk.AffineTransform(2)
        tx.SetCenter(tuple(c))
        tx.SetMatrix(tuple(a.ravel()))
        tx.SetTranslation(tuple(t))
        return tx
    scale = float(np.sqrt(abs(np.linalg.det(a))))
    angle = float(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    tx = sitk.Similarity2DTransform()
    tx.SetCenter(tuple(c))
    tx.SetScale(scale)
    tx.SetAngle(angle)
    tx.SetTranslation(tuple(t))
    return tx


def _prepare_fixed(sem_image: np.ndarray, sem_pixel_nm: float, target_nm: float):
    """SEM smoothed to the target resolution and resampled to a grid of pixel ``target_nm``."""
    img = np.asarray(sem_image, float)
    img = np.where(np.isfinite(img), img, np.nanmedian(img))
    factor = target_nm / sem_pixel_nm
    if factor <= 1.0:
        return img, sem_pixel_nm
    # anti-alias: Gaussian of σ ≈ 0.5 × the new pixel (in old pixels), then block-free linear resampling
    sm = ndimage.gaussian_filter(img, 0.5 * factor)
    ny, nx = img.shape
    ny2, nx2 = int(np.floor((ny - 1) / factor)) + 1, int(np.floor((nx - 1) / factor)) + 1
    yy, xx = np.mgrid[0:ny2, 0:nx2].astype(float) * factor
    out = ndimage.map_coordinates(sm, [yy, xx], order=1, mode="nearest")
    return out, sem_pixel_nm * factor


def _gradient_magnitude(image: np.ndarray, sigma: float) -> np.ndarray:
    gy = ndimage.gaussian_filter(image, sigma, order=(1, 0))
    gx = ndimage.gaussian_filter(image, sigma, order=(0, 1))
    return np.hypot(gy, gx)


def _template_start(stxm: np.ndarray, scale: float, rotation_deg: float, fixed_np: np.ndarray,
                    sigma_fixed: float) -> tuple[np.ndarray, float]:
    """Translation search: normalised cross-correlation of gradient-magnitude images.

    The STXM image is rotated and scaled onto the working grid; the peak of its normalised
    cross-correlation with the SEM working image (edges of both modalities coincide even when their
    contrasts differ) gives the translation. Returns (STXM px → working px matrix, peak NCC).
    """
    from skimage.feature import match_template

    ny, nx = stxm.shape
    m = similarity_matrix(scale, rotation_deg, (0.0, 0.0))
    corners = transform_points(m, np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5],
                                            [nx - 0.5, ny - 0.5]]))
    lo = np.floor(corners.min(0))
    m[:2, 2] -= lo
    size = np.ceil(corners.max(0) - lo).astype(int) + 1
    canvas = warp_to_sem(stxm, m, (size[1], size[0]), order=1)
    inside = np.isfinite(canvas)
    canvas = np.where(inside, canvas, np.nanmean(canvas))
    gm_m = _gradient_magnitude(canvas, sigma_fixed) * ndimage.binary_erosion(inside, iterations=2)
    gm_f = _gradient_magnitude(fixed_np, sigma_fixed)
    pad_y = max(0, gm_m.shape[0] - gm_f.shape[0] + 2)
    pad_x = max(0, gm_m.shape[1] - gm_f.shape[1] + 2)
    gm_f = np.pad(gm_f, ((pad_y, pad_y), (pad_x, pad_x)), mode="constant", constant_values=gm_f.mean())
    ncc = match_template(gm_f, gm_m, pad_input=True)
    iy, ix = np.unravel_index(np.argmax(ncc), ncc.shape)
    # pad_input: ncc[iy, ix] is the match with the template centre at (iy, ix)
    cy, cx = (gm_m.shape[0] - 1) / 2.0, (gm_m.shape[1] - 1) / 2.0
    if gm_m.shape[0] % 2 == 0:
        cy += 0.5
    if gm_m.shape[1] % 2 == 0:
        cx += 0.5
    m[:2, 2] += np.array([ix - pad_x - cx, iy - pad_y - cy])
    return m, float(ncc[iy, ix])


def register_stxm_to_sem(stxm_image: np.ndarray, stxm_pixel_nm: float, sem_image: np.ndarray,
                         sem_pixel_nm: float, initial: np.ndarray | None = None, transform: str = "similarity",
                         *, rotations_deg=(0.0, -4.0, 4.0, -8.0, 8.0), working_pixel_nm: float | None = None,
                         n_bins: int = 32, seed: int = 1, chance_test: bool = True) -> Registration:
    """Automatic multimodal registration of an STXM image onto the SEM image.

    Method: SimpleITK, Mattes mutual information (so any monotone or non-monotone relation of the two
    contrasts is fine), regular-step gradient descent with physical-shift parameter scales, three
    resolution levels (shrink 4, 2, 1 with smoothing). Both images live in nm (spacing = pixel size), so the
    pixel-size ratio is built in. The SEM is first smoothed and resampled to a working pixel of half the
    STXM pixel (the STXM cannot resolve more, and MI is better conditioned on comparable resolutions).
    Starts (unless ``initial`` is given): the image centres aligned, and for each of ``rotations_deg`` a
    translation search by normalised cross-correlation of gradient-magnitude images (edges coincide in
    both modalities whatever their contrast); the three best of these (best NCC first) and the centred start
    are refined by MI on the two coarse levels (shrink 4, 2) and the lowest final metric wins; once two starts
    converge to the same transform (corners within one working pixel) and it is the best so far, the
    remaining starts are skipped. The winner is refined on the working grid (shrink 1). With
    ``transform == "affine"`` it is refined once more with an affine transform. Last, the winner is refined
    once on the SEM at its own pixel (one level, as many metric samples as on the working grid), kept when it
    moves the STXM corners by less than one STXM pixel (``metrics["refined_at_sem_pixel"]`` says what
    happened): the working grid makes the search robust, the full-resolution SEM makes it precise.

    Parameters
    ----------
    stxm_image : ndarray (ny, nx)
        e.g. :func:`contrast_image` of the aligned OD stack.
    stxm_pixel_nm, sem_pixel_nm : float
        Pixel sizes.
    sem_image : ndarray
        SEM grey values.
    initial : ndarray (3, 3), optional
        Starting STXM px → SEM px matrix (e.g. from landmarks or a previous lamella).
    transform : {"similarity", "affine"}
    rotations_deg : sequence of float
        Start rotations tried (ignored when ``initial`` is given: then only the initial).
    working_pixel_nm : float, optional
        Pixel of the SEM working grid; default ``stxm_pixel_nm / 2`` (never finer than the SEM pixel).
    n_bins : int
        Histogram bins of the Mattes metric.
    seed : int
        Seed of the metric's sampling (ITK perturbs the regular sampling grid randomly). Must be
        positive: SimpleITK reads 0 as "seed from the wall clock", which makes runs differ.
    chance_test : bool
        Also test whether the match is better than chance (:func:`registration_chance_test`, result in
        ``metrics["chance"]``; :func:`require_better_than_chance` refuses on it).

    Returns
    -------
    Registration
        ``quality``: symmetric uncertainty ``2·MI/(H_SEM + H_STXM)`` in [0, 1] of the SEM working image
        and the STXM image warped onto it (0: unrelated, 1: one determines the other);
        ``metrics``: final Mattes value, NMI, scale, rotation_deg, translation, start, per-start values,
        ``chance`` (the chance test).

    Raises
    ------
    RegistrationError
        No start converged (e.g. too few metric samples in any overlap).
    """
    import SimpleITK as sitk

    if transform not in ("similarity", "affine"):
        raise ValueError(f"unknown transform {transform!r} (use 'similarity' or 'affine')")
    stxm = np.asarray(stxm_image, float)
    stxm = np.where(np.isfinite(stxm), stxm, np.nanmedian(stxm))
    work_nm = max(float(sem_pixel_nm), float(working_pixel_nm or stxm_pixel_nm / 2.0))
    fixed_np, fixed_px = _prepare_fixed(sem_image, sem_pixel_nm, work_nm)
    fixed = _to_sitk(fixed_np, fixed_px)
    moving = _to_sitk(stxm, stxm_pixel_nm)
    f_center = np.array([(fixed_np.shape[1] - 1) * fixed_px / 2, (fixed_np.shape[0] - 1) * fixed_px / 2])
    m_center = np.array([(stxm.shape[1] - 1) * stxm_pixel_nm / 2, (stxm.shape[0] - 1) * stxm_pixel_nm / 2])

    # matrix in working-fixed pixels ↔ SEM pixels
    w2s = np.diag([fixed_px / sem_pixel_nm, fixed_px / sem_pixel_nm, 1.0])

    starts = []
    if initial is not None:
        starts.append(("initial", np.linalg.inv(w2s) @ np.asarray(initial, float)))
    else:
        # (a) image centres aligned, (b) a translation search per start rotation; the three best
        # translation-search candidates and the centred start are refined by MI
        fwd = np.eye(3)
        fwd[:2, 2] = m_center - f_center
        starts.append(("centre", np.diag([1 / fixed_px, 1 / fixed_px, 1]) @ np.linalg.inv(fwd) @ np.diag(
            [stxm_pixel_nm, stxm_pixel_nm, 1])))
        cands = []
        sigma_f = max(1.0, 0.5 * stxm_pixel_nm / fixed_px)
        for rot in rotations_deg:
            m, peak = _template_start(stxm, stxm_pixel_nm / fixed_px, rot, fixed_np, sigma_f)
            cands.append((peak, rot, m))
        cands.sort(key=lambda c: -c[0])
        for peak, rot, m in cands[:3]:
            starts.append((f"translation search, rotation {rot:+.0f} deg (NCC {peak:.2f})", m))

    def run(kind, m_start, fixed_image=fixed, fpx=fixed_px, centre=f_center, shrink=(4, 2, 1), smooth=(2, 1, 0),
            sampling=0.5):
        tx0 = _matrix_to_itk(m_start, stxm_pixel_nm, fpx, kind, centre)
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=n_bins)
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        if seed <= 0:
            raise ValueError("seed must be positive (0 means wall-clock seeding in SimpleITK)")
        reg.SetMetricSamplingPercentage(float(sampling), seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0 * stxm_pixel_nm, minStep=1e-3,
                                                     numberOfIterations=300, relaxationFactor=0.6,
                                                     gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(shrink))
        reg.SetSmoothingSigmasPerLevel(list(smooth))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(tx0, inPlace=False)
        # One thread for every ITK filter the registration runs (metric, pyramid): partial sums from
        # several threads are added in an order that varies between runs (~1e-8 px), and a workflow
        # that promises reproducible results must give the same matrix every time.
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            out = reg.Execute(fixed_image, moving)
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        final = out.GetNthTransform(0) if hasattr(out, "GetNthTransform") else out
        try:
            final = final.Downcast()
        except AttributeError:
            pass
        return final, float(reg.GetMetricValue()), int(reg.GetOptimizerIteration())

    # The starts exist to escape local optima. They compete on the two coarse levels of the pyramid (shrink 4
    # and 2, a quarter of the samples of the working grid); only the winner is refined on the working grid.
    # The translation-search starts are tried best NCC first, the centred start last; once two starts have
    # converged to the same transform (STXM corners within one working pixel) and it is the best metric so
    # far, that optimum is reached from independent starts and the remaining starts are skipped
    # (``metrics["starts_skipped"]``).
    coarse = len(starts) > 1
    levels = {"shrink": (4, 2), "smooth": (2, 1)} if coarse else {}
    ny_m, nx_m = stxm.shape
    m_corners = np.array([[-0.5, -0.5], [nx_m - 0.5, -0.5], [-0.5, ny_m - 0.5], [nx_m - 0.5, ny_m - 0.5]])
    starts = starts[1:] + starts[:1] if initial is None else starts
    per_start = []
    best = None
    found = []                                       # (working-grid corners, metric) of every converged start
    skipped = []
    for i, (name, m0) in enumerate(starts):
        try:
            tx, value, iters = run("similarity", m0, **levels)
        except RuntimeError as exc:                 # e.g. too few samples in the overlap
            per_start.append({"start": name, "error": str(exc).splitlines()[-1][:200]})
            continue
        per_start.append({"start": name, "metric": value, "iterations": iters})
        corners = transform_points(_itk_to_matrix(tx, stxm_pixel_nm, fixed_px), m_corners)
        same = [v for c, v in found if np.max(np.hypot(*(c - corners).T)) <= 1.0]
        found.append((corners, value))
        if best is None or value < best[1]:
            best = (tx, value, name)
        if same and best[2] == name and i + 1 < len(starts):
            skipped = [n for n, _ in starts[i + 1:]]
            break
    if best is None:
        errors = list(dict.fromkeys(s.get("error", "") for s in per_start))  # distinct, in order
        raise RegistrationError(f"the automatic registration failed from every start ({len(per_start)} tried; "
                                f"ITK: {'; '.join(errors)})")
    tx, value, start_name = best
    if coarse:                                       # the winner on the working grid itself
        try:
            tx, value, _ = run("similarity", _itk_to_matrix(tx, stxm_pixel_nm, fixed_px), shrink=(1,), smooth=(0,))
        except RuntimeError as exc:
            per_start.append({"start": "working-grid refinement", "error": str(exc).splitlines()[-1][:200]})
    m_work = _itk_to_matrix(tx, stxm_pixel_nm, fixed_px)
    method = "sitk-mattes-mi-similarity"
    if transform == "affine":
        try:
            tx_a, value_a, _ = run("affine", m_work)
            m_work = _itk_to_matrix(tx_a, stxm_pixel_nm, fixed_px)
            value = value_a
            method = "sitk-mattes-mi-affine"
        except RuntimeError as exc:
            per_start.append({"start": "affine refinement", "error": str(exc).splitlines()[-1][:200]})
    matrix = w2s @ m_work
    refined = "no (the SEM pixel is not finer than the working pixel)"
    if fixed_px > float(sem_pixel_nm) * 1.01:
        # last step on the SEM at its own pixel: the working grid's anti-aliasing costs a few nm of
        # precision (measured: 1-5 nm of corner error on the examples); two levels, started at the winner
        full_np, _ = _prepare_fixed(sem_image, sem_pixel_nm, sem_pixel_nm)
        full_centre = np.array([(full_np.shape[1] - 1) * sem_pixel_nm / 2, (full_np.shape[0] - 1) * sem_pixel_nm / 2])
        # one level at the SEM pixel (a shrink-2 level would repeat the working grid, ~2 SEM pixels), with as
        # many metric samples as the working level had: the precision comes from the finer pixel
        sampling = min(0.5, 0.5 * fixed_np.size / full_np.size)
        try:
            tx_f, _, iters_f = run(method.rsplit("-", 1)[-1], matrix, _to_sitk(full_np, sem_pixel_nm),
                                   float(sem_pixel_nm), full_centre, shrink=(1,), smooth=(0,), sampling=sampling)
            m_full = _itk_to_matrix(tx_f, stxm_pixel_nm, float(sem_pixel_nm))
            ny, nx = stxm.shape
            corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], float)
            moved_px = np.max(np.hypot(*(transform_points(m_full, corners) - transform_points(matrix, corners)).T))
            if moved_px * sem_pixel_nm <= stxm_pixel_nm:  # a refinement, not a jump to another optimum
                matrix, m_work = m_full, np.linalg.inv(w2s) @ m_full
                refined = f"yes ({iters_f} iterations, corners moved {moved_px * sem_pixel_nm:.1f} nm)"
            else:
                refined = f"rejected (corners would move {moved_px * sem_pixel_nm:.0f} nm)"
        except RuntimeError as exc:
            refined = f"failed ({str(exc).splitlines()[-1][:120]})"
    warped = warp_to_sem(stxm, m_work, fixed_np.shape, order=1)
    su, nmi = _normalised_mi(fixed_np, warped, n_bins)
    a = matrix[:2, :2]
    metrics = {
        "mattes_mi": value, "nmi": nmi, "symmetric_uncertainty": su, "start": start_name,
        "starts": per_start, "starts_skipped": skipped, "scale_sem_px_per_stxm_px": pixel_scale(matrix),
        "rotation_deg": float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))),
        "translation_sem_px": matrix[:2, 2].tolist(), "working_pixel_nm": fixed_px,
        "overlap_fraction": float(np.isfinite(warped).mean()), "refined_at_sem_pixel": refined,
    }
    if chance_test:
        metrics["chance"] = registration_chance_test(stxm, stxm_pixel_nm, sem_image, sem_pixel_nm, matrix)
    return Registration(matrix=matrix, quality=float(su), method=method, metrics=metrics)


CHANCE_ALPHA = 0.01
"""Significance of each of the two statistics of :func:`registration_chance_test` (a match must pass both)."""


def _dihedral_surrogates(image: np.ndarray) -> list:
    """The seven images the STXM image becomes when turned by 90°, 180°, 270° or mirrored (not itself)."""
    return [np.rot90(image, 1), np.rot90(image, 2), np.rot90(image, 3), image[::-1], image[:, ::-1],
            image.T, np.rot90(image, 2).T]


def _prediction_test(values, alpha: float) -> dict:
    """Is ``values[0]`` above the upper ``1 − alpha`` t prediction bound of ``values[1:]``?"""
    from scipy import stats

    observed, null = float(values[0]), np.asarray(values[1:], float)
    null = null[np.isfinite(null)]                  # a copy placed with too small an overlap has no value
    n = null.size
    if n < 3:
        return {"observed": observed, "null": null.tolist(), "better_than_chance": True,
                "note": f"not tested: only {n} of the turned/mirrored copies could be measured"}
    mean, sd = float(null.mean()), float(null.std(ddof=1))
    spread = max(sd, 1e-12) * np.sqrt(1.0 + 1.0 / n)
    threshold = mean + float(stats.t.ppf(1.0 - alpha, n - 1)) * spread
    return {"observed": observed, "null": null.tolist(), "null_mean": mean, "null_sd": sd,
            "threshold": float(threshold), "margin": float(observed - threshold),
            "z": float((observed - mean) / max(sd, 1e-12)),
            "p_value": float(stats.t.sf((observed - mean) / spread, n - 1)),
            "better_than_chance": bool(observed > threshold)}


def registration_chance_test(stxm_image: np.ndarray, stxm_pixel_nm: float, sem_image: np.ndarray,
                             sem_pixel_nm: float, matrix: np.ndarray, alpha: float = CHANCE_ALPHA,
                             n_bins: int = 32) -> dict:
    """Does the STXM image match the SEM better than an STXM image of another place would?

    A registration always finds *some* best match, even between images of two different places, and its
    similarity is a maximum over the search (translations, rotations, scale): compared with the similarity
    of arbitrary placements it always looks good. The null distribution must therefore come from the same
    search applied to images that share every property of the STXM image but their correspondence with the
    SEM. These are the STXM image turned by 90°, 180°, 270° and mirrored (7 surrogates: same content, grey
    values, noise, texture and field size; the registration never turns or mirrors by such angles, so they
    cannot match where the image does, unless the scene is symmetric).

    The same search is run for the image and each surrogate: on a grid of the STXM pixel (the STXM resolves
    no finer), rotated and scaled as the registration found, the translation maximising the normalised
    cross-correlation of the gradient-magnitude images of SEM and STXM (exhaustive, by FFT). Two statistics
    of the placement found:

    * ``edge_correlation``: that peak correlation (edges coincide in both modalities whatever their
      contrasts);
    * ``mutual_information``: the symmetric uncertainty ``2·MI/(H_SEM + H_STXM)`` of the SEM and the image
      placed there (any relation between the grey values of the two modalities); histogram bins from the
      overlap (about 10 samples per joint bin); copies overlapping the SEM less than half as much as the
      image are left out (MI over a small corner is not comparable).

    Each is better than chance when the image's value exceeds the upper ``1 − alpha`` prediction bound of
    the surrogates' values, ``mean + t(1 − alpha, n − 1) · sd · √(1 + 1/n)`` (exact for normally
    distributed values: an image of another place then passes with probability ``alpha``); the registration
    is better than chance when both are (the edge correlation alone when fewer than 3 copies can be measured
    for the MI). Measured on generated, example and real-shape lamellae (docs/bad_input.md): either
    statistic alone let 3 of 38 images of another place through (images sharing a layout, e.g. the vacuum
    on the same side, sit above the turned copies more often than the bound says), both together none of
    38; no true pair of 40 was refused.

    Parameters
    ----------
    stxm_image : ndarray (ny, nx)
        The image registered (NaN-free).
    stxm_pixel_nm, sem_pixel_nm : float
    sem_image : ndarray
    matrix : ndarray (3, 3)
        The registration found (STXM pixel → SEM pixel).
    alpha : float
        Significance of each statistic.
    n_bins : int
        Most histogram bins of the mutual information (fewer on small overlaps: about 10 samples per joint
        bin).

    Returns
    -------
    dict
        ``method`` (in words), ``alpha``, ``mi_bins`` (histogram bins of each image's MI), ``edge_correlation`` and ``mutual_information`` (each:
        ``observed``, ``null`` (the 7 surrogates' values), ``null_mean``, ``null_sd``, ``threshold`` (the
        prediction bound), ``margin`` (observed − threshold), ``z`` ((observed − null_mean) / null_sd),
        ``p_value`` (one-sided, from the prediction distribution), ``better_than_chance``), and
        ``better_than_chance`` (both).
    """
    stxm = np.asarray(stxm_image, float)
    stxm = np.where(np.isfinite(stxm), stxm, np.nanmedian(stxm))
    work_nm = max(float(sem_pixel_nm), float(stxm_pixel_nm))
    fixed_np, fixed_px = _prepare_fixed(sem_image, sem_pixel_nm, work_nm)
    a = np.asarray(matrix, float)[:2, :2]
    scale = pixel_scale(matrix) * float(sem_pixel_nm) / fixed_px          # working px per STXM px
    rotation = float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    sigma = max(1.0, 0.5 * float(stxm_pixel_nm) / fixed_px)
    peaks, mis, bins_used, overlaps = [], [], [], []
    for image in [stxm] + _dihedral_surrogates(stxm):
        m, peak = _template_start(image, scale, rotation, fixed_np, sigma)
        peaks.append(peak)
        warped = warp_to_sem(image, m, fixed_np.shape, order=1)
        # a histogram's MI is biased up by ~(bins − 1)² / 2N for N overlapping pixels: about 10 samples per
        # joint bin keeps that bias the same for every placement, small overlaps and small fields included
        overlaps.append(int(np.isfinite(warped).sum()))
        bins = int(np.clip(np.sqrt(overlaps[-1] / 10.0), 4, n_bins))
        bins_used.append(bins)
        mis.append(_normalised_mi(fixed_np, warped, bins)[0])
    # MI over a few hundred pixels of a partial overlap is not comparable with MI over the whole field (a
    # corner of two images can share a layout by chance): copies placed with less than half the image's
    # overlap do not enter the MI null
    mis = [v if k == 0 or overlaps[k] >= 0.5 * overlaps[0] else np.nan for k, v in enumerate(mis)]
    edges, info = _prediction_test(peaks, alpha), _prediction_test(mis, alpha)
    return {
        "method": "the STXM image and its 7 copies turned by 90/180/270 degrees or mirrored (the null), each "
                  "placed on the SEM (STXM-pixel grid, the registration's rotation and scale) at the translation "
                  "of peak gradient-magnitude correlation; edge correlation and symmetric uncertainty there, "
                  "each above the copies' t prediction bound",
        "alpha": float(alpha), "mi_bins": bins_used, "overlap_px": overlaps, "edge_correlation": edges, "mutual_information": info,
        "better_than_chance": bool(edges["better_than_chance"] and info["better_than_chance"]),
    }


def require_better_than_chance(registration: Registration, stxm_path, sem_path, edge: str = "STXM") -> None:
    """Refuse a registration that matches no better than chance: the files show different places.

    Parameters
    ----------
    registration : Registration
        With ``metrics["chance"]`` (:func:`registration_chance_test`); without it nothing is checked.
    stxm_path, sem_path : str or path-like
        The files, named in the message.
    edge : str

    Raises
    ------
    segment.errors.CeimapInputError
        Naming both files, what was measured, the chance level and the significance.
    """
    from .errors import CeimapInputError

    test = (registration.metrics or {}).get("chance")
    if not test or test["better_than_chance"]:
        return
    parts = []
    for key, name in (("edge_correlation", "edge correlation"), ("mutual_information", "mutual information")):
        t = test[key]
        if "null_mean" not in t:
            parts.append(f"{name}: {t.get('note', 'not tested')}")
            continue
        verdict = "" if t["better_than_chance"] else ", not above"
        parts.append(f"{name} {t['observed']:.2f} vs {t['null_mean']:.2f} ± {t['null_sd']:.2f} for the STXM "
                     f"image turned or mirrored (bound {t['threshold']:.2f}{verdict})")
    raise CeimapInputError(
        f"the {edge} STXM image and the SEM image {sem_path} do not show the same place: their best "
        f"registration matches no better than chance at significance {test['alpha']:g} "
        f"({'; '.join(parts)}); check that the files belong to the same lamella (a small or symmetric field that "
        f"does match: `ceimap run --accept-registration`)", path=stxm_path)


def register_stacks(moving_stack_image: np.ndarray, moving_pixel_nm: float, fixed_stack_image: np.ndarray,
                    fixed_pixel_nm: float, initial: np.ndarray | None = None,
                    transform: str = "similarity", **kwargs) -> Registration:
    """Register one STXM image onto another (e.g. the S-L stack's contrast image onto the Ni-L one).

    Same method as :func:`register_stxm_to_sem`, with the fixed image at its own resolution (no
    downsampling: both are STXM images). The matrix maps moving pixel ``(x, y, 1)`` → fixed pixel.
    """
    kwargs.setdefault("working_pixel_nm", fixed_pixel_nm)
    return register_stxm_to_sem(moving_stack_image, moving_pixel_nm, fixed_stack_image, fixed_pixel_nm,
                                initial=initial, transform=transform, **kwargs)
