"""SEM boundary refinement: class boundaries of a first label map snapped to the SEM contrast.

NMC and empty boundaries are re-decided with local thresholds (:func:`refine_nmc_boundaries`,
:func:`refine_empty_boundaries`); thin dark pieces enclosed by NMC, and gaps between NMC on both sides no wider
than a crack, are cracks → void (:func:`mark_cracks`); electrolyte-grey rims thinner than the resolution
between NMC and a void are the SEM edge effect and are split between the two (:func:`resolve_thin_rims`); NMC
boundaries are finally placed at the midpoint grey level between NMC and the phase it meets
(:func:`snap_nmc_boundaries`). :func:`refine_sem_boundaries` runs the chain.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import Class

__all__ = [
    "refine_nmc_boundaries",
    "refine_empty_boundaries",
    "mark_cracks",
    "resolve_thin_rims",
    "snap_nmc_boundaries",
    "refine_sem_boundaries",
]


def _gaussian_filter_fft(images, sigma_px: float, truncate: float = 4.0):
    """``ndimage.gaussian_filter(image, sigma_px)`` (mode ``"reflect"``, kernel truncated at ``truncate``
    sigma) of each 2-D image in ``images``, by FFT: the same truncated, normalised kernel and the same
    boundary extension, equal to the direct filter up to rounding (~1e-15 relative), at a cost independent
    of the kernel width (the direct filter's grows with it: 2·4σ + 1 taps per pixel and axis)."""
    from scipy import fft

    images = [np.asarray(im, dtype=float) for im in images]
    radius = int(truncate * float(sigma_px) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    phi = np.exp(-0.5 / float(sigma_px) ** 2 * x ** 2)
    phi /= phi.sum()
    ny, nx = images[0].shape
    # the reflect extension (d c b a | a b c d | d c b a) is numpy's "symmetric" pad; a circular
    # convolution as long as the padded image wraps nothing into the pixels kept
    n0, n1 = fft.next_fast_len(ny + 2 * radius), fft.next_fast_len(nx + 2 * radius, real=True)
    kernel = fft.fft(phi, n0)[:, None] * fft.rfft(phi, n1)[None, :]
    out = []
    for im in images:
        padded = np.pad(im, radius, mode="symmetric")
        conv = fft.irfft2(fft.rfft2(padded, (n0, n1)) * kernel, (n0, n1))
        out.append(conv[2 * radius:2 * radius + ny, 2 * radius:2 * radius + nx])
    return out


def _local_level(image, mask, sigma_px):
    """Local mean of ``image`` over ``mask`` (Gaussian-weighted, width ``sigma_px``); global median where
    the mask has no weight nearby. (The level only ever decides which side of a threshold a pixel is on:
    the Gaussians are taken by FFT, :func:`_gaussian_filter_fft`, since they are tens of pixels wide.)"""
    num, den = _gaussian_filter_fft([np.where(mask, image, 0.0), mask.astype(float)], sigma_px)
    glob = float(np.median(image[mask]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-3, num / den, glob)


def _local_contrast(smoothed, region, surroundings, band_px, *, inner_margin_px):
    """Which pixels lie on ``region``'s side of the local midpoint grey level between it and its surroundings.

    The region's level is taken over its pixels deeper than ``inner_margin_px``, the surroundings' level
    over ``surroundings`` pixels farther than ``band_px`` from the region, both as local means (width
    ``4 * band_px``); contrast of either sign works.

    Returns
    -------
    (region_side, d_in, d_out, level_surroundings) or None
        Boolean map of the region's side, the distance maps inside / outside the region (px) and the
        local surroundings level; None when either reference has fewer than 10 pixels.
    """
    d_in = ndimage.distance_transform_edt(region)
    d_out = ndimage.distance_transform_edt(~region)
    inner = region & (d_in > inner_margin_px)
    outer = surroundings & (d_out > band_px)
    if inner.sum() < 10 or outer.sum() < 10:
        return None
    sigma_px = 4.0 * band_px
    level_in, level_out = _local_level(smoothed, inner, sigma_px), _local_level(smoothed, outer, sigma_px)
    region_side = np.sign(level_in - level_out) * (smoothed - 0.5 * (level_in + level_out)) > 0
    return region_side, d_in, d_out, level_out


def refine_nmc_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                          band_nm: float = 90.0) -> np.ndarray:
    """Snap the NMC boundary to the SEM contrast with a local threshold.

    Near the NMC boundary of a first label map (within ``band_nm``) and inside NMC, a pixel is NMC when
    its lightly smoothed SEM grey value lies on the NMC side of the midpoint between the local NMC level
    (NMC pixels deeper than ``band_nm``) and the local level of its surroundings (electrolyte-textured
    pixels farther than ``band_nm``). Contrast of either sign works. Pixels that leave NMC become void
    when darker than the midpoint between the surroundings and the darkest (vacuum) level of the image
    — thin dark cracks —, else electrolyte.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_nm : float
        Half-width of the band where the boundary may move (about the STXM pixel + PSF).

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    nmc = label == Class.NMC
    if not nmc.any() or nmc.all():
        return label
    r = max(band_nm / float(pixel_size_nm), 1.0)
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.0)
    contrast = _local_contrast(sm, nmc, label == Class.ELECTROLYTE, r, inner_margin_px=r)
    if contrast is None:
        return label
    nmc_side, d_in, d_out, lvl_out = contrast
    candidate = nmc | (d_out <= r)
    new_nmc = candidate & nmc_side & (label != Class.VOID) | (nmc & nmc_side)
    # keep NMC pieces of a meaningful size (bigger than the band), fill pinholes
    lab, n = ndimage.label(new_nmc)
    if n:
        sizes = np.bincount(lab.ravel())
        new_nmc &= sizes[lab] >= np.pi * r ** 2
    out = label.copy()
    gained = new_nmc & ~nmc
    lost = nmc & ~new_nmc
    out[gained] = Class.NMC
    dark = float(np.percentile(sm, 1.0))
    void_thr = 0.5 * (lvl_out + dark)
    darker = np.sign(lvl_out - dark) * (void_thr - sm) > 0
    out[lost & darker] = Class.VOID
    out[lost & ~darker] = Class.ELECTROLYTE
    # pieces that left NMC and are mostly rimmed by NMC are cracks (empty), however grey the blur
    lost_lab, n_lost = ndimage.label(lost)
    if n_lost:
        rim = ndimage.binary_dilation(lost) & ~lost
        near = ndimage.grey_dilation(lost_lab, size=3)
        tot = np.bincount(near[rim], minlength=n_lost + 1)
        on_nmc = np.bincount(near[rim & new_nmc], minlength=n_lost + 1)
        crack = on_nmc >= 0.6 * np.maximum(tot, 1)
        crack[0] = False
        out[crack[lost_lab] & lost] = Class.VOID
    return out


def refine_empty_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                            band_nm: float = 90.0) -> np.ndarray:
    """Snap the boundary between empty (void / vacuum) and electrolyte-textured pixels to the SEM contrast.

    Within ``band_nm`` of the empty regions of a first label map, a pixel is empty when its smoothed SEM
    grey value is on the empty side of the midpoint between the local empty level and the local
    electrolyte level; only pixels connected to the first empty regions can join them (isolated dark
    electrolyte pores stay electrolyte).

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_nm : float

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    empty = label == Class.VOID
    ely = label == Class.ELECTROLYTE
    if empty.sum() < 10 or ely.sum() < 10:
        return label
    r = max(band_nm / float(pixel_size_nm), 1.0)
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.5)
    contrast = _local_contrast(sm, empty, ely, r, inner_margin_px=0.25 * r)
    if contrast is None:
        return label
    empty_side, d_in, d_out, _ = contrast
    candidate = empty | (ely & (d_out <= r))
    new_empty = candidate & empty_side
    new_empty = ndimage.binary_propagation(new_empty & empty, mask=new_empty)
    out = label.copy()
    out[new_empty & ~empty] = Class.VOID
    out[empty & ~new_empty & (d_in <= r)] = Class.ELECTROLYTE
    return out


def mark_cracks(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                max_width_nm: float = 90.0, nmc_rim_fraction: float = 0.6,
                gap_nm: float = 60.0) -> np.ndarray:
    """Label thin dark pieces enclosed by NMC (cracks) as empty.

    Non-NMC pixels that disappear under a morphological opening with a disc of ``max_width_nm`` diameter
    are thin structures; a connected thin piece whose rim is at least ``nmc_rim_fraction`` NMC and whose
    darkest fifth is darker than the midpoint between the electrolyte level and the darkest level of the
    image is a crack. Electrolyte-filled gaps between particles are as thin but electrolyte-grey, and stay.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    max_width_nm : float
    nmc_rim_fraction : float
    gap_nm : float
        Widest gap between NMC on both sides taken for a crack whatever its grey level (transverse cracks
        are 20–60 nm wide: thinner than the STXM resolution, no electrolyte layer there can be confirmed).

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    from skimage.morphology import disk

    nmc = label == Class.NMC
    ely = label == Class.ELECTROLYTE
    if not nmc.any() or not ely.any():
        return label
    r = max(int(round(max_width_nm / 2.0 / pixel_size_nm)), 1)
    non = ~nmc
    opened = ndimage.binary_opening(np.pad(non, r + 1, constant_values=True), structure=disk(r))
    thin = non & ~opened[r + 1:-r - 1, r + 1:-r - 1]
    lab, n = ndimage.label(thin)
    if n == 0:
        return label
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.0)
    ely_level = float(np.median(sm[ely]))
    dark_level = float(np.percentile(sm, 1.0))
    thr = 0.5 * (ely_level + dark_level)
    sign = np.sign(ely_level - dark_level)
    rim = ndimage.binary_dilation(thin) & ~thin
    near = ndimage.grey_dilation(lab, size=3)
    tot = np.bincount(near[rim], minlength=n + 1)
    on_nmc = np.bincount(near[rim & nmc], minlength=n + 1)
    order = np.argsort(lab.ravel(), kind="stable")
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    vals = sm.ravel()[order]
    out = label.copy()
    for i in range(1, n + 1):
        if counts[i] < 3 or on_nmc[i] < nmc_rim_fraction * max(tot[i], 1):
            continue
        piece = vals[starts[i]:starts[i + 1]]
        dark = np.percentile(piece, 20) if sign > 0 else np.percentile(piece, 80)
        if sign * (thr - dark) > 0:
            out[lab == i] = Class.VOID
    # a crack that runs out to the particle surface joins the electrolyte there, so its thin piece is not
    # rimmed by NMC; and a crack thinner than the SEM blur is no darker than electrolyte. A gap with NMC on
    # both sides no wider than a crack (``gap_nm``: NMC closed by a disc that wide) cannot hold a
    # resolvable electrolyte layer: it is a crack, whatever its grey
    r_gap = max(int(round(gap_nm / 2.0 / pixel_size_nm)), 1)
    closed = ndimage.binary_closing(np.pad(nmc, r_gap + 1), structure=disk(r_gap))
    gap = ~nmc & closed[r_gap + 1:-r_gap - 1, r_gap + 1:-r_gap - 1]
    out[gap & (label == Class.ELECTROLYTE)] = Class.VOID
    return out


def resolve_thin_rims(label: np.ndarray, pixel_size_nm: float, *, max_width_nm: float = 50.0) -> np.ndarray:
    """Split electrolyte-textured rims thinner than the resolution between NMC and empty space.

    The SEM draws a bright edge along every solid/empty boundary and blurs it over a few pixels, so a
    boundary between NMC and a void often reads as a thin rim of electrolyte-like grey. A layer of
    electrolyte thinner than ``max_width_nm`` (the STXM resolution: the chemistry cannot confirm it) lying
    between NMC and empty pixels is taken for that boundary: each of its pixels joins the nearer of the two.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    pixel_size_nm : float
    max_width_nm : float
        Widest rim (NMC-to-empty gap) resolved this way.

    Returns
    -------
    ndarray, same shape and dtype as ``label``

    Examples
    --------
    >>> lab = np.full((5, 12), 4); lab[:, :5] = 1; lab[:, 5:7] = 3
    >>> resolve_thin_rims(lab, 10.0)[0].tolist()
    [1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4]
    """
    nmc = label == Class.NMC
    empty = label == Class.VOID
    if not nmc.any() or not empty.any():
        return label
    d_nmc = ndimage.distance_transform_edt(~nmc)
    d_empty = ndimage.distance_transform_edt(~empty)
    rim = (label == Class.ELECTROLYTE) & (d_nmc + d_empty <= 1.0 + max_width_nm / float(pixel_size_nm))
    out = label.copy()
    out[rim & (d_empty < d_nmc)] = Class.VOID
    out[rim & (d_empty >= d_nmc)] = Class.NMC
    return out


def _noise_matched_sigma(image: np.ndarray, contrast: float) -> float:
    """Gaussian sigma (pixels, 0.5–2) that brings the image's white noise to 1/2.326 of half ``contrast``.

    Smoothing with a Gaussian of sigma ``s`` divides white noise by ``2·sqrt(pi)·s``; the noise is the MAD of
    the 4-neighbour Laplacian. A midpoint threshold between two levels ``contrast`` apart then errs on 1 % of
    the pure pixels.
    """
    lap = ndimage.laplace(np.asarray(image, dtype=float))[1:-1, 1:-1] / np.sqrt(20.0)
    noise = 1.4826 * float(np.median(np.abs(lap - np.median(lap))))
    return float(np.clip(2.326 * noise / (0.5 * max(abs(contrast), 1e-12)) / (2.0 * np.sqrt(np.pi)), 0.5, 2.0))


def snap_nmc_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                        band_px: float = 2.0) -> np.ndarray:
    """Place every NMC boundary at the midpoint grey level between NMC and the phase it actually meets.

    A pixel covered more than half by NMC is brighter (or darker, for reversed contrast) than the midpoint
    between the pure NMC level and the pure level of its neighbour. The earlier boundary steps threshold NMC
    against the level of its surroundings at large (electrolyte beyond the interphase), which is the wrong
    neighbour twice: where NMC meets a void or a crack, that midpoint lies too close to the NMC level and
    every void grows by a pixel (a thin crack by a pixel on each side); where it meets an interphase, the
    interphase's own level is the right one. Pixels within ``band_px`` of an NMC–empty boundary are
    re-decided against the pure empty level (median of empty pixels more than two pixels from any other
    class; the image's 1st percentile when there are too few), then pixels within ``band_px`` of an
    NMC–electrolyte boundary against the local level of the electrolyte-side pixels just beyond the band
    (``band_px`` to ``2·band_px + 1`` pixels from NMC: the interphase where there is one). The NMC level is
    the local mean of NMC deeper than 90 nm. The image is smoothed only as much as its noise needs for a
    1 % error rate at each contrast (:func:`_noise_matched_sigma`).

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_px : float
        How far (SEM pixels) a boundary may move: the spread of an edge between two thresholds.

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    image = np.asarray(sem_image, dtype=float)
    out = label.copy()
    nmc = out == Class.NMC
    r = max(90.0 / float(pixel_size_nm), 1.0)
    inner = nmc & (ndimage.distance_transform_edt(nmc) > r)
    if inner.sum() < 10:
        return out
    lvl_inner = float(np.median(image[inner]))
    for other in (Class.VOID, Class.ELECTROLYTE):
        nmc = out == Class.NMC
        mine = out == other
        if mine.sum() < 10:
            continue
        d_nmc = ndimage.distance_transform_edt(~nmc)
        if other == Class.VOID:
            deep = mine & (ndimage.distance_transform_edt(mine) > 2)
            lvl = float(np.median(image[deep])) if deep.sum() >= 20 else float(np.percentile(image, 1.0))
            sm = ndimage.gaussian_filter(image, _noise_matched_sigma(image, lvl_inner - lvl))
        else:
            shell = mine & (d_nmc > band_px) & (d_nmc <= 2 * band_px + 1)
            if shell.sum() < 10:
                continue
            sm = ndimage.gaussian_filter(image, _noise_matched_sigma(image, lvl_inner - np.median(image[shell])))
            lvl = _local_level(sm, shell, 4.0 * r)
        lvl_nmc = _local_level(sm, inner, 4.0 * r)
        band = (nmc & (ndimage.distance_transform_edt(~mine) <= band_px)) | (mine & (d_nmc <= band_px))
        nmc_side = np.sign(lvl_nmc - lvl) * (sm - 0.5 * (lvl_nmc + lvl)) > 0
        out[band & nmc_side] = Class.NMC
        out[band & ~nmc_side] = other
    return out


def refine_sem_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *, band_nm: float,
                          psf_fwhm_nm: float, crack_max_nm: float | None = None) -> np.ndarray:
    """A first texture map's boundaries re-decided on the SEM: the refinement chain both class-map paths run.

    In order: NMC boundaries (:func:`refine_nmc_boundaries`) and empty boundaries
    (:func:`refine_empty_boundaries`) snapped to the local SEM contrast within ``band_nm``; with
    ``crack_max_nm``, thin dark pieces and narrow gaps enclosed by NMC marked as cracks (:func:`mark_cracks`);
    electrolyte-grey rims thinner than the probe between NMC and a void split between the two
    (:func:`resolve_thin_rims`); NMC boundaries placed at the midpoint grey level between NMC and the phase it
    meets (:func:`snap_nmc_boundaries`).

    The crack step is what differs between the paths. The unsupervised path
    (:func:`ceimap.segment.assign.segment_lamella`) runs it: its SEM texture forest is trained on pixels whose
    chemistry is confident and far from STXM class boundaries, so it never sees a crack narrower than the STXM
    resolution and reads one as electrolyte. A trained classifier's map
    (:func:`ceimap.segment.classifier.refine_boundaries`) is refined without it (``crack_max_nm=None``): its voids
    come from the annotations, and its accuracy figures (``benchmarks/README.md``) were measured that way; whether
    the crack step would help it has not been measured.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (``Class.NMC``, ``Class.ELECTROLYTE`` for electrolyte-like, ``Class.VOID`` for empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
        SEM pixel size.
    band_nm : float
        Half-width of the band where NMC and empty boundaries may move (one STXM pixel plus the probe width).
    psf_fwhm_nm : float
        STXM probe width: the widest rim resolved by :func:`resolve_thin_rims`.
    crack_max_nm : float, optional
        Widest thin dark piece inside NMC taken for a crack; None: no crack step.

    Returns
    -------
    ndarray, same shape as ``label``
    """
    label = refine_nmc_boundaries(label, sem_image, pixel_size_nm, band_nm=band_nm)
    label = refine_empty_boundaries(label, sem_image, pixel_size_nm, band_nm=band_nm)
    if crack_max_nm is not None:
        label = mark_cracks(label, sem_image, pixel_size_nm, max_width_nm=crack_max_nm)
    label = resolve_thin_rims(label, pixel_size_nm, max_width_nm=psf_fwhm_nm)
    return snap_nmc_boundaries(label, sem_image, pixel_size_nm)
