"""Tests of segment.interphase: the interphase thickness and band seen through the STXM probe."""

import numpy as np

from ceimap.segment.classifier import macro_f1
from ceimap.segment.interphase import (fit_interphase_thickness, interphase_band, interphase_thickness_map,
                                     stxm_view)


def test_fit_interphase_thickness_recovers_band_through_psf():
    # SEM 10 nm pixels, STXM 40 nm, 50 nm probe; a 90 nm band along a straight NMC surface; the
    # chemistry measures its fraction only where NMC covers less than half the STXM pixel
    sem_px, stxm_px, psf = 10.0, 40.0, 50.0
    shape = (200, 200)
    nmc = np.zeros(shape, bool)
    nmc[:, :80] = True
    band = ~nmc & (np.mgrid[:200, :200][1] < 89)
    matrix = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]])
    stxm_shape = (50, 50)
    sigma = np.hypot(psf / 2.3548, stxm_px / np.sqrt(12))
    f_band = stxm_view(band.astype(float), matrix, stxm_shape, sigma, sem_px)
    f_nmc = stxm_view(nmc.astype(float), matrix, stxm_shape, sigma, sem_px)
    measured = (f_nmc < 0.5) & (f_band > 0.02)
    t = fit_interphase_thickness(nmc, ~nmc, np.where(measured, f_band, 0), measured, matrix, sem_px, stxm_px,
                                 psf, smooth_nm=50.0)
    surface = t[40:160, 79]
    assert abs(np.median(surface) - 90.0) < 9.0


def test_thickness_map_carries_measured_amount_past_the_field_edge():
    # a 50 nm band along a straight surface, measured only for rows < 100: with the field's certainty the
    # thickness stays 50 nm up to the field edge and one smoothing sigma beyond; without it, the unmeasured
    # half reads as "no interphase" and drags the amount down near the edge
    px = 10.0
    nmc = np.zeros((200, 60), bool)
    nmc[:, :20] = True
    frac = np.zeros(nmc.shape)
    frac[:100, 20:25] = 1.0
    known = np.zeros(nmc.shape)
    known[:100] = 1.0
    t_known = interphase_thickness_map(nmc, ~nmc, frac, px, smooth_nm=100.0, certainty=known)
    t_blind = interphase_thickness_map(nmc, ~nmc, frac, px, smooth_nm=100.0)
    assert np.allclose(t_known[:100, 19], 50.0, atol=0.5)
    assert np.allclose(t_known[100:108, 19], 50.0, atol=0.5)        # within 0.8 sigma: carried over
    assert (t_known[125:, 19] == 0).all()                            # beyond the reach: unknown, no band
    assert t_blind[99, 19] < 30.0


def _band_scene(thickness_px=6, unmeasured_right=False):
    """Two NMC disks in electrolyte on a 10 nm SEM grid, each with a band of ``thickness_px``; the chemistry grid
    is 3× coarser and measures the band's fraction through a 50 nm probe (optionally not the right half)."""
    n = 150
    yy, xx = np.mgrid[0:n, 0:n]
    dist = np.min([np.hypot(yy - 75, xx - 35), np.hypot(yy - 75, xx - 115)], axis=0)
    nmc = dist < 20
    band = (dist >= 20) & (dist < 20 + thickness_px)
    matrix = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]])
    shape = (n // 3, n // 3)
    sigma_nm = np.hypot(50.0 / 2.3548, 30.0 / np.sqrt(12.0))
    fraction = np.clip(stxm_view(band.astype(float), matrix, shape, sigma_nm, 10.0), 0, 1)
    known = np.ones(shape, bool)
    if unmeasured_right:
        known[:, shape[1] // 2:] = False
    measured = known & (fraction > 0.02)
    chem = (np.where(measured, fraction, 0.0), measured, known)     # interphase fraction, measured, known
    return nmc, band, chem, matrix


def test_interphase_band_reproduces_the_measured_band():
    """The band whose view through the probe matches the measured fractions is the band that was measured
    (60 nm here); a 10 nm band, below half the probe, is not drawn (a sharp edge's partial-volume residual)."""
    nmc, band, chem, matrix = _band_scene(6)
    out = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0, psf_fwhm_nm=50.0)
    assert macro_f1(out["band"].astype(np.uint8) + 1, band.astype(np.uint8) + 1, classes=(2,))[0] >= 0.85
    surface = out["thickness_nm"] > 0
    assert abs(np.median(out["thickness_nm"][surface]) - 60.0) <= 10.0
    assert out["beyond_field_nm"] is None and not np.any(out["band"] & nmc)
    thin_nmc, _, thin, _ = _band_scene(1)
    assert not interphase_band(thin_nmc, ~thin_nmc, *thin, matrix, 10.0, 30.0, psf_fwhm_nm=50.0)["band"].any()


def test_interphase_band_beyond_the_field_and_support():
    """Beyond the measured field a surface gets the measured surfaces' median thickness (only when asked);
    pieces of band holding none of the ``support`` are not drawn."""
    nmc, band, chem, matrix = _band_scene(6, unmeasured_right=True)
    right = np.zeros_like(nmc)
    right[:, 100:] = True               # the right disk's far side: the thickness is carried ~1 sigma into it
    inside = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0)
    assert not np.any(inside["band"] & right) and np.any(inside["band"] & ~right)
    beyond = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0, beyond_field=True)
    assert abs(beyond["beyond_field_nm"] - 60.0) <= 10.0 and beyond["beyond_field_surface"] > 0
    assert macro_f1(beyond["band"][:, 100:].astype(np.uint8) + 1, band[:, 100:].astype(np.uint8) + 1,
                    classes=(2,))[0] >= 0.85
    np.testing.assert_array_equal(beyond["band"][:, :70], inside["band"][:, :70])
    # no support on the left disk: its band is dropped, its surface bare, and the median beyond the field is 0
    nmc, band, chem, matrix = _band_scene(6)
    left = band.copy()
    left[:, 75:] = False                # the left disk's band (the disks are 80 px apart, their bands 16 px)
    kept = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0, support=band & right)
    assert not np.any(kept["band"] & left) and np.any(kept["band"] & right)
    full = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0)
    np.testing.assert_array_equal(kept["band"][:, 75:], full["band"][:, 75:])   # the supported piece is whole
    none = interphase_band(nmc, ~nmc, *chem, matrix, 10.0, 30.0, support=np.zeros_like(nmc), beyond_field=True)
    assert not none["band"].any()
