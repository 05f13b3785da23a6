"""Energy-frame alignment of an STXM stack (drift correction).

Between energy frames the sample drifts by a few pixels, and its absorption contrast changes — even
inverts — across the edge, so aligning every frame to one reference frame fails. The method here:

1. **coarse** — images that keep their shape when contrast inverts: the gradient magnitude of each
   (lightly smoothed) OD frame. Two initialisations: every frame cross-correlated with the mean gradient
   image (iterated), and a chain of neighbour-to-neighbour correlations, accumulated (for drifts large
   against the features). Each is refined by Gauss–Newton against the mean gradient image, and the one
   whose corrected gradient images agree best is kept.
2. **fine** — a low-rank model of the stack: the corrected OD stack is decomposed by SVD and truncated at
   the Gavish–Donoho optimal hard threshold (noise level from the median singular value; components that
   are merely gradients of stronger ones — shift artefacts — are dropped). Its reconstruction of frame *k*
   has frame *k*'s own contrast (inversions included) with most of the noise removed, at the common
   geometry. Each original frame is matched to its model frame by Gauss–Newton least squares on
   ``F(x + d) ≈ a·M(x) + b`` (gain ``a`` of either sign, offset ``b``) over the pixels that stay inside
   the field, giving a sub-pixel shift and its (noise-only) standard error. Model and shifts alternate
   until the updates fall below a quarter of the standard errors. A group of frames misaligned together
   can be absorbed by an extra model component, so the refinement is run twice — with the full rank from
   the start, and with the rank capped at 2 for the first rounds — and the result whose corrected stack
   has less energy outside its leading components (the low-rank alignment criterion of RASL) is kept.

Shifts are applied with cubic splines (``scipy.ndimage.shift(order=3, mode="nearest")``): linear
interpolation would smooth each frame by an amount that depends on its sub-pixel shift and bias peak
ratios. Shifts are referenced to the median frame position (the median of each component is zero).
Cost: each stack is prefiltered into spline coefficients once and every later shift is a separable 4-tap
evaluation of them (:func:`_shift_frames`), and the frames' FFTs of the coarse step are computed once.

Convention (CONTRACT.md): ``shifts[k] = (dy, dx)`` in STXM pixels is the displacement of the sample image in
frame *k* relative to the reference; correcting shifts frame *k* by ``(−dy, −dx)``.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage
from skimage.filters import window

from .stack import Stack

__all__ = ["estimate_drift", "apply_shifts", "align_frames", "valid_region"]


def _od_like(stack: Stack) -> np.ndarray:
    """Frames on an OD-like (log) scale: OD as is; counts as ``−ln`` of counts over the frame mean."""
    data = np.asarray(stack.data, dtype=float)
    if stack.kind == "od":
        out = data.copy()
    else:
        c = np.maximum(data, 0.0) + 0.5
        out = -np.log(c / c.mean(axis=(1, 2), keepdims=True))
    bad = ~np.isfinite(out)
    if bad.any():
        med = np.nanmedian(np.where(bad, np.nan, out), axis=(1, 2), keepdims=True)
        out = np.where(bad, np.broadcast_to(med, out.shape), out)
    return out


_SPLINE_PAD = 12
"""Edge-replicated margin (pixels) around each frame before its cubic-spline prefilter (scipy's own
prepadding for ``mode="nearest"``); shifts up to ``_SPLINE_PAD − 2`` pixels are applied from these
coefficients, larger ones by :func:`scipy.ndimage.shift` itself."""


def _spline_coefficients(frames: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of each frame (edge-padded by :data:`_SPLINE_PAD`), computed once per stack.

    The prefilter is the expensive part of a spline shift and does not depend on the shift, so the
    iterations that shift the same frames again and again reuse these coefficients.
    """
    p = _SPLINE_PAD
    padded = np.pad(np.asarray(frames, dtype=float), ((0, 0), (p, p), (p, p)), mode="edge")
    padded = ndimage.spline_filter1d(padded, 3, axis=1, mode="nearest")
    return ndimage.spline_filter1d(padded, 3, axis=2, mode="nearest")


def _bspline3_weights(t: float) -> np.ndarray:
    """Cubic B-spline weights of the four coefficients around a sample at fractional offset ``t`` ∈ [0, 1)."""
    return np.array([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4, -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1, t ** 3]) / 6.0


def _shift_frames(frames: np.ndarray, shifts: np.ndarray, coef: np.ndarray | None = None) -> np.ndarray:
    """Correct frames for ``shifts`` (displacements): output_k(x) = frame_k(x + d_k), cubic spline.

    The same interpolant as ``scipy.ndimage.shift(frame, −d, order=3, mode="nearest")`` (equal to rounding):
    a translation samples every pixel at the same fractional offset, so the 4×4 spline evaluation separates
    into four weighted rows and four weighted columns of the prefiltered coefficients (``coef``, from
    :func:`_spline_coefficients`; computed here when not given).
    """
    out = np.empty(frames.shape, dtype=float)
    n_e, ny, nx = frames.shape
    p = _SPLINE_PAD
    for k, d in enumerate(np.asarray(shifts, dtype=float)):
        if abs(d[0]) <= 1e-8 and abs(d[1]) <= 1e-8:
            out[k] = frames[k]
            continue
        fy, fx = int(np.floor(d[0])), int(np.floor(d[1]))
        if not (-p + 1 <= fy <= p - 2 and -p + 1 <= fx <= p - 2) or not np.all(np.isfinite(d)):
            out[k] = ndimage.shift(np.asarray(frames[k], float), (-d[0], -d[1]), order=3, mode="nearest")
            continue
        if coef is None:
            coef = _spline_coefficients(frames)
        wy, wx = _bspline3_weights(d[0] - fy), _bspline3_weights(d[1] - fx)
        y0, x0 = p + fy - 1, p + fx - 1
        c = coef[k]
        rows = wy[0] * c[y0:y0 + ny] + wy[1] * c[y0 + 1:y0 + 1 + ny] + wy[2] * c[y0 + 2:y0 + 2 + ny] \
            + wy[3] * c[y0 + 3:y0 + 3 + ny]
        out[k] = wx[0] * rows[:, x0:x0 + nx] + wx[1] * rows[:, x0 + 1:x0 + 1 + nx] \
            + wx[2] * rows[:, x0 + 2:x0 + 2 + nx] + wx[3] * rows[:, x0 + 3:x0 + 3 + nx]
    return out


def valid_region(shape_yx, shifts: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Pixels that every corrected frame measured (not filled from beyond the field).

    Parameters
    ----------
    shape_yx : (int, int)
    shifts : ndarray, shape (n_energy, 2)
        ``(dy, dx)`` displacements.
    margin : float
        Extra pixels to drop on each side.

    Returns
    -------
    ndarray of bool, shape (ny, nx)
    """
    ny, nx = shape_yx
    shifts = np.asarray(shifts, dtype=float).reshape(-1, 2)
    ymin = max(0.0, -shifts[:, 0].min()) + margin
    ymax = min(ny - 1.0, ny - 1.0 - shifts[:, 0].max()) - margin
    xmin = max(0.0, -shifts[:, 1].min()) + margin
    xmax = min(nx - 1.0, nx - 1.0 - shifts[:, 1].max()) - margin
    yy = np.arange(ny)[:, None]
    xx = np.arange(nx)[None, :]
    return (yy >= ymin - 1e-9) & (yy <= ymax + 1e-9) & (xx >= xmin - 1e-9) & (xx <= xmax + 1e-9)


def _gradient_magnitude(frames: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(frames)
    for k, f in enumerate(frames):
        gy = ndimage.gaussian_filter(f, sigma, order=(1, 0))
        gx = ndimage.gaussian_filter(f, sigma, order=(0, 1))
        g = np.hypot(gy, gx)
        out[k] = g - g.mean()
    return out


def _gn_round(frames_aligned: np.ndarray, models: np.ndarray, shifts: np.ndarray, weight: np.ndarray,
              max_step: float = 2.0):
    """One Gauss–Newton update of every frame's shift against its model frame."""
    n_e = frames_aligned.shape[0]
    new = shifts.copy()
    se = np.full((n_e, 2), np.inf)
    gains = np.zeros(n_e)
    idx = np.flatnonzero(np.asarray(weight).ravel() > 0)
    shared = models.strides[0] == 0          # one model for every frame (broadcast): its gradient once
    shared_grad = np.gradient(models[0]) if shared else None
    for k in range(n_e):
        delta, se_k, a = _gauss_newton_step(frames_aligned[k], models[k], weight, grads=shared_grad, idx=idx)
        if np.all(np.isfinite(delta)) and np.all(np.abs(delta) <= max_step):
            new[k] = shifts[k] + delta
            se[k], gains[k] = se_k, a
    new -= np.median(new, axis=0)
    return new, se, gains


def _windowed_fft(image: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Real FFT of the mean-removed, windowed image (one side of :func:`_xcorr_shift`)."""
    return scipy_fft.rfft2((image - image.mean()) * win)


def _xcorr_shift(ref_f: np.ndarray, mov_f: np.ndarray, shape: tuple, max_shift: float) -> np.ndarray:
    """Displacement of the moving image relative to the reference, both given as :func:`_windowed_fft`, from
    the cross-correlation peak within ``max_shift`` pixels, refined by a parabola per axis."""
    ny, nx = shape
    cc = scipy_fft.irfft2(np.conj(ref_f) * mov_f, s=shape)
    dy = np.fft.fftfreq(ny) * ny
    dx = np.fft.fftfreq(nx) * nx
    allowed = (np.abs(dy)[:, None] <= max_shift) & (np.abs(dx)[None, :] <= max_shift)
    cc_m = np.where(allowed, cc, -np.inf)
    iy, ix = np.unravel_index(np.argmax(cc_m), cc.shape)

    def parabola(c_m, c_0, c_p):
        den = c_m + c_p - 2 * c_0
        return 0.0 if den >= 0 else float(np.clip(0.5 * (c_m - c_p) / den, -0.5, 0.5))

    oy = parabola(cc[(iy - 1) % ny, ix], cc[iy, ix], cc[(iy + 1) % ny, ix])
    ox = parabola(cc[iy, (ix - 1) % nx], cc[iy, ix], cc[iy, (ix + 1) % nx])
    return np.array([dy[iy] + oy, dx[ix] + ox])


def _consistency(g: np.ndarray, shifts: np.ndarray, coef: np.ndarray | None = None) -> float:
    """Mean correlation of each corrected gradient image with the sum of the others."""
    ga = _shift_frames(g, shifts, coef)
    keep = valid_region(g.shape[1:], shifts, margin=2.0)
    if keep.sum() < 16:
        return -np.inf
    x = ga[:, keep]
    x = x - x.mean(axis=1, keepdims=True)
    tot = x.sum(axis=0)
    xx = (x * x).sum(axis=1)
    xt = x @ tot
    dots = xt - xx                                   # x_k · (tot − x_k)
    norms_o = np.sqrt(np.maximum(tot @ tot - 2 * xt + xx, 1e-300))
    return float(np.mean(dots / (np.sqrt(xx) * norms_o + 1e-300)))


def _coarse_drift(od: np.ndarray, sigma: float, n_refine: int = 4, max_shift: float | None = None):
    """Coarse drift from gradient-magnitude images (their shape survives contrast inversion).

    Two integer-to-sub-pixel initialisations are made: (a) every frame against the mean gradient image,
    iterated (no accumulated error; works while the drift is small against the features), and (b) a chain
    of neighbour-to-neighbour correlations, accumulated (works for large drifts, neighbours look alike).
    Each is refined by Gauss–Newton against the mean gradient image of the corrected frames, and the one
    whose corrected gradient images agree best (mean correlation with the others) is kept.
    """
    n_e, ny, nx = od.shape
    if max_shift is None:
        max_shift = 0.25 * min(ny, nx)
    g = _gradient_magnitude(od, sigma)
    win = window("hann", (ny, nx))
    g_coef = _spline_coefficients(g)                       # prefiltered once, shifted many times
    g_f = np.array([_windowed_fft(gk, win) for gk in g])   # the frames' FFTs do not change between rounds

    def to_mean(shifts, n):
        for _ in range(n):
            ref_f = _windowed_fft(_shift_frames(g, shifts, g_coef).mean(axis=0), win)
            shifts = np.array([_xcorr_shift(ref_f, g_f[k], (ny, nx), max_shift) for k in range(n_e)])
            shifts -= np.median(shifts, axis=0)
        return shifts

    def refine(shifts):
        for _ in range(n_refine):
            ga = _shift_frames(g, shifts, g_coef)
            keep = valid_region((ny, nx), shifts, margin=2.0)
            if keep.sum() < 0.25 * ny * nx:
                keep = np.ones((ny, nx), bool)
            mean_g = ga.mean(axis=0)
            shifts, _, _ = _gn_round(ga, np.broadcast_to(mean_g, ga.shape), shifts, keep.astype(float))
        return shifts

    cand_a = refine(to_mean(np.zeros((n_e, 2)), 3))
    steps = np.zeros((n_e, 2))
    for k in range(1, n_e):
        steps[k] = _xcorr_shift(g_f[k - 1], g_f[k], (ny, nx), max_shift)
    chain = np.cumsum(steps, axis=0)
    chain -= np.median(chain, axis=0)
    cand_b = refine(to_mean(chain, 1))
    score_a, score_b = _consistency(g, cand_a, g_coef), _consistency(g, cand_b, g_coef)
    return (cand_a, "mean-reference") if score_a >= score_b else (cand_b, "neighbour-chain")


def _gd_rank(sv: np.ndarray, n_rows: int, n_cols: int, max_rank: int) -> int:
    """Gavish–Donoho optimal hard-threshold rank for unknown noise (median singular value)."""
    beta = min(n_rows, n_cols) / max(n_rows, n_cols)
    omega = 0.56 * beta ** 3 - 0.95 * beta ** 2 + 1.82 * beta + 1.43
    tau = omega * np.median(sv)
    return int(np.clip(np.sum(sv > tau), 1, max_rank))


def _low_rank_model(aligned: np.ndarray, max_rank: int, artefact_r2: float = 0.5) -> tuple[np.ndarray, int]:
    """Low-rank model of the stack without drift-artefact components.

    Truncated SVD of the stack (frame means removed; SVD through the small Gram matrix), rank by the
    Gavish–Donoho optimal hard threshold (at most ``max_rank`` and ``n_energy // 2``). Residual
    misalignment of a group of frames shows up as components whose spatial maps are derivatives of
    stronger components (the sub-pixel-shift artefacts that contaminate PCA); a model containing them
    reproduces the misalignment and the shift estimate stalls. So each component whose map is explained
    by the x and y gradients of the stronger kept components with R² > ``artefact_r2`` is dropped.
    Returns the model and the number of kept components.
    """
    n_e, ny, nx = aligned.shape
    x = aligned.reshape(n_e, -1)
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    evals, evecs = np.linalg.eigh(xc @ xc.T)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    r = _gd_rank(np.sqrt(evals), *xc.shape, max_rank=min(max_rank, max(1, n_e // 2)))
    maps = (evecs[:, :r].T @ xc) / np.sqrt(np.maximum(evals[:r], 1e-300))[:, None]   # (r, npix) orthonormal
    keep = [0]
    grads = []
    for j in range(1, r):
        for i in keep[len(grads) // 2:]:
            gy, gx = np.gradient(maps[i].reshape(ny, nx))
            grads += [gy.ravel(), gx.ravel()]
        d = np.array(grads).T
        coef, *_ = np.linalg.lstsq(d, maps[j], rcond=None)
        r2 = 1.0 - np.sum((maps[j] - d @ coef) ** 2) / np.sum((maps[j] - maps[j].mean()) ** 2)
        if r2 <= artefact_r2:
            keep.append(j)
    v = maps[keep]
    model = (xc @ v.T) @ v + mu
    return model.reshape(aligned.shape), len(keep)


def _gauss_newton_step(frame: np.ndarray, model: np.ndarray, weight: np.ndarray, *, grads=None, idx=None):
    """Shift update δ (dy, dx) such that frame(x + δ) ≈ a·model(x) + b; its standard errors; gain a.

    Linearisation ``frame ≈ a M + b + c_y ∂_y M + c_x ∂_x M ≈ a M(x + c/a) + b`` solved by (unweighted)
    least squares over the pixels with ``weight > 0``; the frame content sits at ``+c/a`` relative to the
    model, so the drift estimate grows by ``δ = −c/a``. Standard errors from ``s² (JᵀJ)⁻¹``.
    ``grads`` (``np.gradient(model)``) and ``idx`` (flat indices of ``weight > 0``) may be passed precomputed.
    """
    if idx is None:
        idx = np.flatnonzero(weight.ravel() > 0)
    gy, gx = np.gradient(model) if grads is None else grads
    whole = idx.size == model.size                     # every pixel: plain views, no gather
    cols = np.empty((4, idx.size))
    cols[0] = model.ravel() if whole else model.ravel()[idx]
    cols[1] = 1.0
    cols[2] = gy.ravel() if whole else gy.ravel()[idx]
    cols[3] = gx.ravel() if whole else gx.ravel()[idx]
    f = frame.ravel() if whole else frame.ravel()[idx]
    jtj = cols @ cols.T
    jtf = cols @ f
    try:
        jtj_inv = np.linalg.inv(jtj)
    except np.linalg.LinAlgError:
        return np.zeros(2), np.full(2, np.inf), 0.0
    coef = jtj_inv @ jtf
    a, b, cy, cx = coef
    if not np.isfinite(a) or abs(a) < 1e-12:
        return np.zeros(2), np.full(2, np.inf), 0.0
    rss = max(float(f @ f - coef @ jtf), 0.0)
    s2 = rss / max(1, f.size - 4)
    delta = -np.array([cy, cx]) / a
    se = np.sqrt(np.abs(s2 * np.array([jtj_inv[2, 2], jtj_inv[3, 3]]))) / abs(a)
    return delta, se, float(a)


def _fine(od: np.ndarray, shifts: np.ndarray, caps, n_iter: int, max_rank: int, tol_px: float,
          coef: np.ndarray | None = None):
    """Alternate low-rank model and Gauss–Newton shifts; ``caps`` limits the rank of the first rounds.
    ``coef``: :func:`_spline_coefficients` of ``od`` (computed when not given)."""
    if coef is None:
        coef = _spline_coefficients(od)
    n_e, ny, nx = od.shape
    se = np.zeros((n_e, 2))
    gains = np.ones(n_e)
    rank = 0
    it = 0
    for it in range(1, n_iter + 1):
        aligned = _shift_frames(od, shifts, coef)
        keep = valid_region((ny, nx), shifts, margin=2.0)
        if keep.sum() < 0.25 * ny * nx:
            keep = np.ones((ny, nx), bool)
        fill = aligned[:, keep].mean(axis=1)[:, None, None]
        cap = caps[it - 1] if it <= len(caps) else max_rank
        model, rank = _low_rank_model(np.where(keep, aligned, fill), cap)
        new, se, gains = _gn_round(aligned, model, shifts, keep.astype(float))
        change = float(np.max(np.abs(new - shifts)))
        shifts = new
        # stop (after the capped rounds) when updates are far below the statistical error of the shifts
        finite_se = se[np.isfinite(se)]
        noise_floor = 0.25 * float(np.median(finite_se)) if finite_se.size else 0.0
        if it > len(caps) and change < max(tol_px, noise_floor):
            break
    return shifts, se, gains, rank, it


def _tail_energy(od: np.ndarray, shifts: np.ndarray, rank: int, coef: np.ndarray | None = None) -> float:
    """Energy of the corrected stack outside its best rank-``rank`` approximation, per pixel."""
    n_e, ny, nx = od.shape
    keep = valid_region((ny, nx), shifts, margin=3.0)
    if keep.sum() < 16:
        keep = np.ones((ny, nx), bool)
    x = _shift_frames(od, shifts, coef)[:, keep]
    x = x - x.mean(axis=1, keepdims=True)
    ev = np.sort(np.linalg.eigvalsh(x @ x.T))[::-1]
    return float(ev[rank:].sum() / keep.sum())


def estimate_drift(stack: Stack, *, smooth_px: float | None = None, n_iter: int = 10, max_rank: int = 8,
                   tol_px: float = 0.001, return_details: bool = False):
    """Sub-pixel drift of every energy frame relative to the median frame position.

    Parameters
    ----------
    stack : Stack
        Counts or OD.
    smooth_px : float, optional
        Gaussian σ (pixels) of the gradient images of the coarse step; default 1 pixel (the STXM spot is
        about one to two pixels wide, so this keeps edges while taming shot noise).
    n_iter : int
        Maximum model/shift refinement rounds.
    max_rank : int
        Upper bound of the low-rank model (its rank is chosen by the Gavish–Donoho threshold).
    tol_px : float
        Stop when no shift changes by more than this (pixels).
    return_details : bool
        Also return a dict with ``sigma_px`` (n_energy, 2) standard errors, ``gain`` per frame, ``rank``,
        ``iterations``, ``coarse_shifts``.

    Returns
    -------
    shifts : ndarray, shape (n_energy, 2)
        ``(dy, dx)`` displacement of each frame, median zero.
    details : dict
        Only with ``return_details``.
    """
    n_e, ny, nx = stack.data.shape
    details = {"sigma_px": np.zeros((n_e, 2)), "gain": np.ones(n_e), "rank": 0, "iterations": 0,
               "coarse_shifts": np.zeros((n_e, 2))}
    if n_e < 2:
        shifts = np.zeros((n_e, 2))
        return (shifts, details) if return_details else shifts
    od = _od_like(stack)
    sigma = 1.0 if smooth_px is None else float(smooth_px)
    shifts, coarse_method = _coarse_drift(od, sigma)
    details["coarse_shifts"] = shifts.copy()
    details["coarse_method"] = coarse_method
    coef = _spline_coefficients(od)
    runs = {}
    for name, caps in (("model rank by Gavish-Donoho", ()), ("rank 2 first, then Gavish-Donoho", (2, 2, 2))):
        runs[name] = _fine(od, shifts, caps, n_iter, max_rank, tol_px, coef)
    # choose the run whose aligned stack is closest to low rank: misalignment puts energy outside the
    # leading components (the criterion of low-rank joint alignment, e.g. RASL)
    r_min = min(run[3] for run in runs.values())
    tails = {name: _tail_energy(od, run[0], r_min, coef) for name, run in runs.items()}
    best = min(tails, key=tails.get)
    shifts, se, gains, rank, it = runs[best]
    details["fine_method"] = best
    details["tail_energy"] = tails
    details.update(sigma_px=se, gain=gains, rank=rank, iterations=it)
    return (shifts, details) if return_details else shifts


def apply_shifts(stack: Stack, shifts: np.ndarray) -> Stack:
    """Correct each frame for its drift with a cubic-spline shift.

    Parameters
    ----------
    stack : Stack
    shifts : ndarray, shape (n_energy, 2)
        ``(dy, dx)`` displacement of the sample in each frame; frame *k* is shifted by ``(−dy, −dx)``.

    Returns
    -------
    Stack
        Same kind; ``metadata["drift_px"]`` holds the shifts (list) and ``metadata["valid_region"]`` a
        bool (ny, nx) mask of the pixels every frame measured (outside it, values were extended from the
        nearest measured pixel and should not be used for spectra).
    """
    shifts = np.asarray(shifts, dtype=float).reshape(stack.n_energy, 2)
    data = _shift_frames(np.asarray(stack.data, dtype=float), shifts)
    meta = dict(stack.metadata)
    meta["drift_px"] = shifts.tolist()
    meta["valid_region"] = valid_region(stack.shape_yx, shifts)
    return stack.with_data(data, metadata=meta)


def align_frames(stack: Stack, **kwargs) -> tuple[Stack, np.ndarray]:
    """Estimate and correct the energy-frame drift of a stack.

    Parameters
    ----------
    stack : Stack
    **kwargs
        Passed to :func:`estimate_drift`.

    Returns
    -------
    aligned : Stack
        See :func:`apply_shifts`; ``metadata["drift_sigma_px"]`` and ``metadata["drift_model_rank"]`` too.
    shifts : ndarray, shape (n_energy, 2)
        ``(dy, dx)`` displacement of each frame relative to the median frame position.
    """
    kwargs.pop("return_details", None)
    shifts, details = estimate_drift(stack, return_details=True, **kwargs)
    aligned = apply_shifts(stack, shifts)
    aligned.metadata["drift_sigma_px"] = np.asarray(details["sigma_px"]).tolist()
    aligned.metadata["drift_model_rank"] = int(details["rank"])
    return aligned, shifts
