"""Tests of segment.interphase: the interphase thickness and band seen through the STXM probe."""

import numpy as np

from ceimap.segment.interphase import fit_interphase_thickness, interphase_thickness_map, stxm_view


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
