"""The interphase on the SEM grid: a band on the electrolyte side of NMC as thick as the chemistry measured.

The interphase is a band on the electrolyte side of the NMC surface whose local thickness is fitted so that the
band, seen through the STXM (probe ⊗ pixel footprint, sampled on the STXM grid, restricted to the pixels where
the fraction was measured), gives the interphase amount the chemistry measured there
(:func:`fit_interphase_thickness`, :func:`interphase_band`); the amount per unit of NMC surface is
:func:`interphase_thickness_map`. Bands thinner than half the probe are not drawn (unresolvable).
:func:`tolerant_f1` scores such a thin band against a truth with a spatial tolerance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .register import warp_to_sem

__all__ = [
    "MIN_THICKNESS_CERTAINTY",
    "interphase_thickness_map",
    "stxm_view",
    "fit_interphase_thickness",
    "interphase_band",
    "tolerant_f1",
]


MIN_THICKNESS_CERTAINTY = 0.16
"""Least measured share of the along-surface smoothing weight for a thickness (one smoothing sigma beyond the
last measured pixel of a straight surface; :func:`interphase_thickness_map`)."""


def interphase_thickness_map(nmc: np.ndarray, electrolyte: np.ndarray, interphase_fraction: np.ndarray,
                             pixel_size_nm: float, *, max_nm: float = 450.0,
                             smooth_nm: float = 50.0, certainty: np.ndarray | None = None,
                             min_certainty: float = MIN_THICKNESS_CERTAINTY) -> np.ndarray:
    """Local interphase thickness at each NMC surface pixel from an interphase-fraction map.

    Every electrolyte-side pixel within ``max_nm`` of NMC hands its interphase fraction to its nearest
    NMC pixel; the sum times the pixel size is the thickness there (area per unit boundary length: the
    amount is conserved when the STXM PSF blurs a band), smoothed along the surface over ``smooth_nm``.

    Where the fraction was not measured everywhere (the edge of the STXM field cuts the surface), the
    smoothing is a *normalised convolution*: each surface pixel weighs in with the measured share of its
    electrolyte-side pixels (its certainty), so unmeasured pixels count as unknown rather than as "no
    interphase"; the amount is thereby carried along the surface into the unmeasured part as far as the
    smoothing reaches — where the measured share of the smoothing weight is at least ``min_certainty``
    (0.16: one smoothing sigma beyond the last measured pixel of a straight surface). Beyond, 0.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-textured (electrolyte or interphase) pixels.
    interphase_fraction : ndarray, shape (ny, nx)
        Fraction of interphase in each pixel (0–1), e.g. upsampled from STXM.
    pixel_size_nm : float
    max_nm : float
        Farthest an interphase pixel may be from NMC.
    smooth_nm : float
        Gaussian smoothing along the surface (sigma).
    certainty : ndarray, shape (ny, nx), optional
        Share (0–1) of each pixel that was measured; default everywhere measured.
    min_certainty : float
        Least measured share of the smoothing weight for a surface pixel to get a thickness.

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        Thickness in nm on NMC surface pixels (0 elsewhere).

    Examples
    --------
    >>> nmc = np.zeros((20, 40), bool); nmc[:, :20] = True
    >>> frac = np.zeros((20, 40)); frac[:, 20:25] = 1.0          # a 5-pixel band
    >>> t = interphase_thickness_map(nmc, ~nmc, frac, 10.0, smooth_nm=20.0)
    >>> float(np.round(t[10, 19], 6))
    50.0
    """
    geometry = _thickness_geometry(nmc, electrolyte, pixel_size_nm, max_nm=max_nm, smooth_nm=smooth_nm,
                                   certainty=certainty, min_certainty=min_certainty)
    return _thickness_from_geometry(geometry, interphase_fraction)


def _thickness_geometry(nmc, electrolyte, pixel_size_nm, *, max_nm, smooth_nm, certainty, min_certainty,
                        nearest=None) -> dict:
    """What :func:`interphase_thickness_map` computes from the class masks alone (not from the fractions):
    which electrolyte-side pixel hands its fraction to which NMC surface pixel, and the normalisation of
    the smoothing. Computed once, it serves every fraction map on the same masks
    (:func:`fit_interphase_thickness` evaluates one per iteration). ``nearest``: the precomputed
    ``distance_transform_edt(~nmc, return_indices=True)``."""
    px = float(pixel_size_nm)
    dist, (iy, ix) = nearest if nearest is not None else ndimage.distance_transform_edt(~nmc, return_indices=True)
    cand = electrolyte & ~nmc & (dist * px <= max_nm)
    flat_near = (iy * nmc.shape[1] + ix)[cand]
    surface = nmc & ~ndimage.binary_erosion(nmc, border_value=1)
    # only the surface pixels that received something from the electrolyte side count as that surface
    n_in = np.bincount(flat_near, minlength=nmc.size).reshape(nmc.shape)
    receiving = (n_in > 0) & surface
    if certainty is None:
        cert = receiving.astype(float)
    else:
        c = np.clip(np.nan_to_num(np.asarray(certainty, dtype=float)[cand]), 0.0, 1.0)
        n_meas = np.bincount(flat_near, weights=c, minlength=nmc.size).reshape(nmc.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            cert = np.where(receiving, n_meas / np.maximum(n_in, 1), 0.0)
    sig = max(smooth_nm / px, 0.5)
    den = ndimage.gaussian_filter(cert, sig, mode="constant")
    reach = ndimage.gaussian_filter(receiving.astype(float), sig, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        known = receiving & (den > 1e-6) & (den >= min_certainty * reach)
    return {"px": px, "shape": nmc.shape, "cand": cand, "flat_near": flat_near, "sigma_px": sig, "den": den,
            "known": known}


def _thickness_from_geometry(geometry: dict, interphase_fraction: np.ndarray) -> np.ndarray:
    """:func:`interphase_thickness_map` of one fraction map on precomputed :func:`_thickness_geometry`."""
    px, shape, cand = geometry["px"], geometry["shape"], geometry["cand"]
    acc = np.bincount(geometry["flat_near"], weights=np.clip(interphase_fraction[cand], 0, 1) * px,
                      minlength=cand.size).reshape(shape)
    num = ndimage.gaussian_filter(acc, geometry["sigma_px"], mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(geometry["known"], num / geometry["den"], 0.0)
    return t.astype(np.float32)


def stxm_view(sem_map: np.ndarray, matrix: np.ndarray, stxm_shape, sigma_nm: float,
              sem_pixel_nm: float) -> np.ndarray:
    """What an STXM pixel sees of an SEM-grid map: blurred by the effective probe, sampled at pixel centres.

    Parameters
    ----------
    sem_map : ndarray, shape (ny_sem, nx_sem)
        Values on the SEM grid (e.g. an indicator of one class).
    matrix : ndarray, shape (3, 3)
        STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``.
    stxm_shape : (int, int)
    sigma_nm : float
        Gaussian sigma of the effective probe (zone-plate spot ⊗ pixel footprint).
    sem_pixel_nm : float

    Returns
    -------
    ndarray, shape ``stxm_shape``
    """
    blurred = ndimage.gaussian_filter(np.asarray(sem_map, dtype=float), sigma_nm / float(sem_pixel_nm))
    m = np.asarray(matrix, dtype=float)
    yy, xx = np.mgrid[0:stxm_shape[0], 0:stxm_shape[1]].astype(float)
    xs = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    ys = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    return ndimage.map_coordinates(blurred, [ys, xs], order=1, mode="nearest")


def fit_interphase_thickness(nmc: np.ndarray, electrolyte: np.ndarray, interphase_fraction: np.ndarray,
                             measured: np.ndarray, matrix: np.ndarray, sem_pixel_nm: float,
                             stxm_pixel_nm: float, psf_fwhm_nm: float, *, max_nm: float = 450.0,
                             smooth_nm: float = 100.0, n_iter: int = 6,
                             known: np.ndarray | None = None) -> np.ndarray:
    """Local interphase thickness whose band, seen through the STXM, reproduces the measured amounts.

    The band drawn on the SEM grid is blurred by the effective probe (spot FWHM ⊗ pixel footprint),
    sampled at the STXM pixel centres, restricted to the pixels where the chemistry measured an interphase
    fraction, and brought back to the SEM grid exactly like the measurement; the amount per unit of NMC
    surface (:func:`interphase_thickness_map`) of this prediction is compared with that of the measured
    fractions, and the thickness corrected by the difference (a Landweber iteration). What the PSF spreads
    over NMC pixels or outside the measured pixels, what bilinear resampling and curved surfaces do to the
    amount, is thereby accounted for instead of being lost.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-textured pixels on the SEM grid.
    interphase_fraction : ndarray, shape (ny_stxm, nx_stxm)
        Measured interphase fraction on the STXM grid.
    measured : ndarray of bool, shape (ny_stxm, nx_stxm)
        STXM pixels where the fraction was measured (elsewhere it is 0 by construction).
    matrix : ndarray, shape (3, 3)
        STXM pixel → SEM pixel.
    sem_pixel_nm, stxm_pixel_nm, psf_fwhm_nm : float
    max_nm : float
        Thickest band.
    smooth_nm : float
        Smoothing of the amounts along the surface (Gaussian sigma).
    n_iter : int
    known : ndarray of bool, shape (ny_stxm, nx_stxm), optional
        STXM pixels inside the measured field (where a fraction of 0 means "no interphase"); outside, the
        amounts are unknown and the thickness is carried along the surface from the measured part
        (:func:`interphase_thickness_map`'s normalised convolution). Default: the whole grid.

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        Thickness (nm) on NMC surface pixels, 0 elsewhere.
    """
    shape = nmc.shape
    stxm_shape = interphase_fraction.shape
    measured = np.asarray(measured, bool)

    # the share of each SEM pixel that the chemistry measured, resampled like the fractions, so that the
    # amounts are normalised by it (unmeasured is unknown, not "no interphase")
    known = np.ones(stxm_shape, bool) if known is None else np.asarray(known, bool)
    certainty = warp_to_sem(known.astype(float), matrix, shape, order=1, cval=0.0)
    nearest = ndimage.distance_transform_edt(~nmc, return_indices=True)
    dist, (iy, ix) = nearest
    # the masks do not change between iterations: what depends on them alone is computed once
    geometry = _thickness_geometry(nmc, electrolyte, sem_pixel_nm, max_nm=max_nm, smooth_nm=smooth_nm,
                                   certainty=certainty, min_certainty=MIN_THICKNESS_CERTAINTY, nearest=nearest)

    def amount(f_stxm):
        f_sem = warp_to_sem(np.where(measured, f_stxm, 0.0), matrix, shape, order=1, cval=0.0)
        return _thickness_from_geometry(geometry, np.nan_to_num(f_sem))

    a_meas = amount(interphase_fraction)
    surface = a_meas > 0
    sigma_nm = np.hypot(psf_fwhm_nm / 2.3548, stxm_pixel_nm / np.sqrt(12.0))
    depth_nm = (dist - 0.5) * sem_pixel_nm
    t = a_meas.astype(float)
    for _ in range(n_iter):
        band = electrolyte & (depth_nm <= t[iy, ix])
        a_pred = amount(stxm_view(band.astype(float), matrix, stxm_shape, sigma_nm, sem_pixel_nm))
        t = np.where(surface, np.clip(t + (a_meas - a_pred), 0.0, max_nm), 0.0)
    return t.astype(np.float32)


def interphase_band(nmc: np.ndarray, electrolyte: np.ndarray, interphase_fraction: np.ndarray,
                    measured: np.ndarray, known: np.ndarray, matrix: np.ndarray, sem_pixel_nm: float,
                    stxm_pixel_nm: float, *, psf_fwhm_nm: float = 50.0,
                    interphase_max_nm: float = 400.0, support: np.ndarray | None = None,
                    beyond_field: bool = False) -> dict:
    """The interphase on the SEM grid: a band on the electrolyte side of NMC as thick as the chemistry measured.

    The local thickness is the one whose band, seen through the STXM probe, reproduces the interphase
    fractions :func:`~ceimap.segment.chemistry.classify_stxm` measured (:func:`fit_interphase_thickness`);
    electrolyte-side pixels within that thickness of their nearest NMC pixel are the band. A band thinner than
    half the probe is not drawn: below the resolution the measured amount cannot be told from the
    partial-volume residual of a sharp NMC edge (no interphase after one charge). This is how
    :func:`~ceimap.segment.assign.segment_lamella` places the interphase (with the defaults ``support=None,
    beyond_field=False``); any NMC / electrolyte masks on the SEM grid will do, e.g. a trained classifier's.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-like (electrolyte or interphase) pixels on the SEM grid.
    interphase_fraction, measured, known : ndarray, shape (ny_stxm, nx_stxm)
        On the chemistry grid: the interphase fraction, the pixels where it was measured and the pixels inside the
        measured field (:class:`~ceimap.segment.chemistry.StxmChemistry`'s ``interphase_fraction``,
        ``interphase_measured``, ``known``).
    matrix : ndarray, shape (3, 3)
        Chemistry-grid pixel → SEM pixel.
    sem_pixel_nm, stxm_pixel_nm : float
        Pixel sizes of the SEM and of the chemistry grid.
    psf_fwhm_nm : float
        STXM probe width.
    interphase_max_nm : float
        Thickest interphase expected (the band reaches at most this plus the probe width).
    support : ndarray of bool, shape (ny, nx), optional
        Where another method found interphase (e.g. a classifier): connected pieces of the band (8-connected)
        that hold none of it are not drawn, and their surfaces count as bare.
    beyond_field : bool
        Give NMC surfaces outside the measured STXM field (too far from measured pixels for
        :func:`interphase_thickness_map` to carry a thickness to them along the surface) the median thickness
        of the measured surfaces (bare ones included) instead of none: the STXM field, not the lamella, ends
        there. A lamella whose measured median is below half the probe gets no band beyond the field.

    Returns
    -------
    dict
        ``band`` (bool, (ny, nx)), ``thickness_nm`` (float32 on NMC surface pixels),
        ``p_interphase`` (float32: on electrolyte-like pixels, a logistic in depth around the band's edge, one
        SEM pixel wide; 0 where no band is drawn), ``beyond_field_nm`` (the thickness given to surfaces beyond
        the field, None unless ``beyond_field``), ``beyond_field_surface`` (how many surface pixels got it).
    """
    nmc = np.asarray(nmc, bool)
    electrolyte = np.asarray(electrolyte, bool)
    shape = nmc.shape
    sem_px = float(sem_pixel_nm)
    out = {"band": np.zeros(shape, bool), "thickness_nm": np.zeros(shape, np.float32),
           "p_interphase": np.zeros(shape, np.float32), "beyond_field_nm": None, "beyond_field_surface": 0}
    fraction = np.asarray(interphase_fraction)
    if not nmc.any() or not fraction.max() > 0:
        return out
    max_nm, smooth_nm = interphase_max_nm + psf_fwhm_nm, 2.0 * psf_fwhm_nm
    thickness = fit_interphase_thickness(nmc, electrolyte, fraction, measured, matrix,
                                         sem_px, stxm_pixel_nm, psf_fwhm_nm, max_nm=max_nm,
                                         smooth_nm=smooth_nm, known=known)
    nearest = ndimage.distance_transform_edt(~nmc, return_indices=True)
    dist, (iy, ix) = nearest
    depth_nm = (dist - 0.5) * sem_px
    min_band_nm = max(0.5 * psf_fwhm_nm, 0.5 * sem_px)

    def draw(t):
        t_here = t[iy, ix]
        return electrolyte & (depth_nm <= t_here) & (t_here >= min_band_nm), t_here

    if support is not None:
        band, _ = draw(thickness)
        pieces, _ = ndimage.label(band, structure=np.ones((3, 3), bool))
        held = np.unique(pieces[band & np.asarray(support, bool)])
        dropped = band & ~np.isin(pieces, held)
        if dropped.any():
            # surfaces that feed only dropped pieces are bare
            feeds_kept = np.zeros(shape, bool)
            kept = band & ~dropped
            feeds_kept[iy[kept], ix[kept]] = True
            bare = np.zeros(shape, bool)
            bare[iy[dropped], ix[dropped]] = True
            thickness = np.where(bare & ~feeds_kept, 0.0, thickness).astype(np.float32)
    if beyond_field:
        certainty = warp_to_sem(np.asarray(known, float), matrix, shape, order=1, cval=0.0)
        geometry = _thickness_geometry(nmc, electrolyte, sem_px, max_nm=max_nm, smooth_nm=smooth_nm,
                                       certainty=certainty, min_certainty=MIN_THICKNESS_CERTAINTY, nearest=nearest)
        receiving = np.zeros(nmc.size, bool)
        receiving[geometry["flat_near"]] = True
        receiving = receiving.reshape(shape) & nmc
        unmeasured = receiving & ~geometry["known"]
        if geometry["known"].any():
            typical = float(np.median(thickness[geometry["known"]]))
            thickness = np.where(unmeasured, np.float32(typical), thickness).astype(np.float32)
            out["beyond_field_nm"] = typical
            out["beyond_field_surface"] = int(unmeasured.sum())
    band, t_here = draw(thickness)
    with np.errstate(over="ignore"):          # far beyond the band edge: exp → inf, the logistic → 0
        p_int = np.where(electrolyte, 1.0 / (1.0 + np.exp((depth_nm - t_here) / sem_px)), 0.0).astype(np.float32)
    p_int[t_here < min_band_nm] = 0.0
    out.update(band=band, thickness_nm=thickness, p_interphase=p_int)
    return out


def tolerant_f1(pred: np.ndarray, truth: np.ndarray, tolerance_px: float) -> dict:
    """F1 of a thin structure (e.g. the interphase band) with a spatial tolerance.

    A predicted pixel is a true positive when a truth pixel lies within ``tolerance_px`` of it (precision);
    a truth pixel is found when a predicted pixel lies within ``tolerance_px`` (recall).

    Parameters
    ----------
    pred, truth : ndarray of bool, shape (ny, nx)
    tolerance_px : float
        Tolerance in pixels of these maps (e.g. one STXM pixel in SEM pixels).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (NaN when both maps are empty), ``n_pred``, ``n_true``.

    Examples
    --------
    >>> t = np.zeros((1, 10), bool); t[0, 4] = True
    >>> p = np.zeros((1, 10), bool); p[0, 6] = True
    >>> tolerant_f1(p, t, 2)["f1"], tolerant_f1(p, t, 1)["f1"]
    (1.0, 0.0)
    """
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    n_p, n_t = int(pred.sum()), int(truth.sum())
    if n_p == 0 and n_t == 0:
        return {"precision": np.nan, "recall": np.nan, "f1": np.nan, "n_pred": 0, "n_true": 0}
    d_truth = ndimage.distance_transform_edt(~truth) if n_t else np.full(truth.shape, np.inf)
    d_pred = ndimage.distance_transform_edt(~pred) if n_p else np.full(pred.shape, np.inf)
    precision = float(np.mean(d_truth[pred] <= tolerance_px)) if n_p else 0.0
    recall = float(np.mean(d_pred[truth] <= tolerance_px)) if n_t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": float(f1), "n_pred": n_p, "n_true": n_t}
