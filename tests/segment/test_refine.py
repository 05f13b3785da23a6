"""Tests of segment.refine: SEM boundary refinement (cracks, thin rims, boundaries at half coverage)."""

import numpy as np
import pytest
from scipy import ndimage

from ceimap import Class
from ceimap.segment.refine import (_gaussian_filter_fft, mark_cracks, refine_empty_boundaries, refine_nmc_boundaries,
                                  refine_sem_boundaries, resolve_thin_rims, snap_nmc_boundaries)


def test_resolve_thin_rims_splits_rim_between_nmc_and_void():
    lab = np.full((20, 40), 3)
    lab[:, :15] = 1
    lab[:, 18:30] = 4                                        # 3-px (30 nm) rim between NMC and a void
    out = resolve_thin_rims(lab, 10.0, max_width_nm=50.0)
    assert set(np.unique(out[:, 15:18])) <= {1, 4}
    assert (out[:, 30:] == 3).all()                          # electrolyte beyond the void untouched
    lab[:, 18:30] = 3
    lab[:, 24:30] = 4                                        # a 90 nm electrolyte layer is resolved: kept
    assert (resolve_thin_rims(lab, 10.0, max_width_nm=50.0)[:, 15:24] == 3).all()


def test_mark_cracks_thin_grey_gap_inside_nmc_is_void():
    lab = np.full((80, 120), 3)
    lab[10:70, 10:110] = 1
    lab[10:70, 59:61] = 3                                     # 20 nm crack read as electrolyte
    sem = np.where(lab == 1, 1.0, 0.5)
    sem[0:5, 0:5] = 0.0                                       # some vacuum in the image
    out = mark_cracks(lab, sem, 10.0, max_width_nm=90.0, gap_nm=60.0)
    assert (out[15:65, 59:61] == Class.VOID).all()
    assert (out[:8, 20:100] == 3).all()


def _area_rendered(inside_fine: np.ndarray, k: int) -> np.ndarray:
    """Area fraction of each coarse pixel covered by a k×-oversampled mask (a pixel sees its whole area)."""
    ny, nx = inside_fine.shape[0] // k, inside_fine.shape[1] // k
    return inside_fine[:ny * k, :nx * k].reshape(ny, k, nx, k).mean(axis=(1, 3))


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.6])
def test_snap_nmc_boundaries_puts_crack_and_pore_edges_at_half_coverage(offset):
    # NMC (bright) with a 4.5-pixel crack and a void pore, rendered with partial-volume pixels at a
    # sub-pixel offset; the first label map has both voids one pixel too wide on each side (the NMC-vs-
    # electrolyte midpoint), as the earlier boundary steps leave them
    k = 10
    yy, xx = np.mgrid[0:80 * k, 0:120 * k] / k
    crack = np.abs(xx - (40.0 + offset)) < 2.25
    pore = np.hypot(yy - 40.0, xx - (90.0 + offset)) < 12.0
    void_cov = _area_rendered(crack | pore, k)
    rng = np.random.default_rng(1)
    sem = 0.2 + 0.8 * (1.0 - void_cov) + rng.normal(0, 0.04, void_cov.shape)
    truth_void = void_cov > 0.5
    label = np.where(ndimage.binary_dilation(truth_void), Class.VOID, 1)
    out = snap_nmc_boundaries(label, sem, 10.0)
    assert np.mean((out == Class.VOID) != truth_void) < 0.002
    width = (out[10:70, 30:50] == Class.VOID).sum(axis=1)
    assert abs(np.median(width) - 4.5) <= 0.5


def test_snap_nmc_boundaries_keeps_sharp_boundaries_in_place():
    lab = np.full((40, 60), 3)
    lab[:, :20] = 1
    lab[:, 40:] = Class.VOID
    sem = np.where(lab == 1, 1.0, np.where(lab == 3, 0.6, 0.1))
    out = snap_nmc_boundaries(lab, sem, 10.0)
    assert np.array_equal(out, lab)


@pytest.mark.parametrize("offset", [0.2, 0.35, 0.8])
def test_snap_nmc_boundaries_against_the_interphase_level(offset):
    # NMC (1.0) | 6-pixel interphase (0.45) | electrolyte (0.6), partial-volume pixels at a sub-pixel
    # offset; the first map put the NMC edge one pixel inside (threshold against the electrolyte level and
    # a blur): the snap moves it to half coverage
    k = 10
    xx = np.mgrid[0:60 * k, 0:80 * k][1] / k
    nmc_cov = _area_rendered(xx < 30.0 + offset, k)
    int_cov = _area_rendered((xx >= 30.0 + offset) & (xx < 36.0 + offset), k)
    rng = np.random.default_rng(2)
    sem = 1.0 * nmc_cov + 0.45 * int_cov + 0.6 * (1 - nmc_cov - int_cov) + rng.normal(0, 0.03, nmc_cov.shape)
    truth_nmc = nmc_cov > 0.5
    label = np.where(ndimage.binary_erosion(truth_nmc, border_value=1), 1, 3)
    out = snap_nmc_boundaries(label, sem, 10.0)
    assert np.mean((out == 1) != truth_nmc) < 0.002


@pytest.mark.parametrize("shape, sigma", [((120, 90), 11.3), ((40, 33), 9.0), ((12, 15), 9.0), ((50, 60), 0.8)])
def test_gaussian_filter_fft_equals_the_direct_filter(shape, sigma):

    rng = np.random.default_rng(4)
    image = ndimage.gaussian_filter(rng.random(shape), 2.0) * 50.0 + (rng.random(shape) > 0.7)
    direct = ndimage.gaussian_filter(image, sigma)           # mode "reflect", truncate 4 (kernel wider than
    fast, = _gaussian_filter_fft([image], sigma)             # the image in two cases)
    assert np.max(np.abs(fast - direct)) <= 1e-12 * np.max(np.abs(direct))


def test_refine_sem_boundaries_is_the_chain_with_or_without_the_crack_step():
    lab = np.full((80, 120), 3)
    lab[10:70, 10:110] = 1
    lab[10:70, 59:61] = 3                                     # 20 nm crack read as electrolyte
    lab[30:40, 20:30] = 4
    rng = np.random.default_rng(5)
    sem = np.where(lab == 1, 1.0, np.where(lab == 4, 0.1, 0.5)) + rng.normal(0, 0.03, lab.shape)
    sem[0:5, 0:5] = 0.0
    out = {}
    for crack_max_nm in (None, 90.0):
        expected = refine_nmc_boundaries(lab, sem, 10.0, band_nm=90.0)
        expected = refine_empty_boundaries(expected, sem, 10.0, band_nm=90.0)
        if crack_max_nm is not None:
            expected = mark_cracks(expected, sem, 10.0, max_width_nm=crack_max_nm)
        expected = snap_nmc_boundaries(resolve_thin_rims(expected, 10.0, max_width_nm=50.0), sem, 10.0)
        out[crack_max_nm] = refine_sem_boundaries(lab, sem, 10.0, band_nm=90.0, psf_fwhm_nm=50.0,
                                                  crack_max_nm=crack_max_nm)
        np.testing.assert_array_equal(out[crack_max_nm], expected)
    crack = np.s_[15:65, 59:61]
    assert np.sum(out[90.0][crack] == Class.VOID) > np.sum(out[None][crack] == Class.VOID)
