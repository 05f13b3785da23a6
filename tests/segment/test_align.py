"""Tests of segment.align: drift estimation across contrast inversion and at low counts."""

import numpy as np
import pytest
from scipy import ndimage

from ceimap.segment.align import align_frames, apply_shifts, estimate_drift, valid_region
from ceimap.segment.stack import Stack


def _phantom(ny, nx, rng, n_blobs=12):
    return [(rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(3, 8), k % 2) for k in range(n_blobs)]


def _maps(ny, nx, blobs, dy, dx):
    """Two phases (smooth-edged discs) and a lamella edge, rendered analytically at a displacement."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    yy, xx = yy - dy, xx - dx
    a, b = np.zeros((ny, nx)), np.zeros((ny, nx))
    for cy, cx, r, ph in blobs:
        m = 1.0 / (1.0 + np.exp((np.hypot(yy - cy, xx - cx) - r) / 0.7))
        if ph:
            a = np.maximum(a, m)
        else:
            b = np.maximum(b, m)
    b *= 1 - a
    lam = 1.0 / (1.0 + np.exp(-(yy - 4 - 0.05 * xx) / 0.7)) / (1.0 + np.exp(-(xx - 3) / 0.7))
    return a * lam, b * lam, lam


def make_drifting_stack(i0, seed=0, n_e=16, ny=40, nx=44, drift_sd=1.5):
    """Counts stack whose phase B is resonant: its contrast against phase A inverts across the edge."""
    rng = np.random.default_rng(seed)
    e = np.linspace(845, 870, n_e)
    mu_a = 1.2 + 0.2 * (e - 845) / 25
    mu_b = 0.3 + 3.0 * np.exp(-(e - 852) ** 2 / 2.0) + 1.0 / (1 + np.exp(-(e - 853)))
    mu_m = 0.15 + 0.05 * (e - 845) / 25
    drift = rng.normal(0, drift_sd, (n_e, 2))
    drift -= np.median(drift, axis=0)
    blobs = _phantom(ny, nx, rng)
    frames = []
    for k in range(n_e):
        a, b, lam = _maps(ny, nx, blobs, *drift[k])
        od = mu_a[k] * a + mu_b[k] * b + mu_m[k] * lam
        frames.append(rng.poisson(i0 * np.exp(-od)).astype(float))
    return Stack(np.array(frames), e, 35.0, edge="Ni-L"), drift


def _residual(est, true):
    r = est - true
    return np.abs(r - r.mean(axis=0))


def test_phantom_inverts_contrast():
    # phase B absorbs less than phase A before the edge and more at the peak
    stack, _ = make_drifting_stack(1e9, n_e=4)
    e = np.linspace(845, 870, 24)
    mu_a = 1.2 + 0.2 * (e - 845) / 25
    mu_b = 0.3 + 3.0 * np.exp(-(e - 852) ** 2 / 2.0) + 1.0 / (1 + np.exp(-(e - 853)))
    assert (mu_b < mu_a)[0] and (mu_b > mu_a)[np.argmin(abs(e - 852))]


@pytest.mark.parametrize("i0, mean_tol, max_tol", [(3000.0, 0.02, 0.08), (60.0, 0.06, 0.25)])
def test_estimate_drift_recovers_subpixel_shifts(i0, mean_tol, max_tol):
    stack, drift = make_drifting_stack(i0)
    shifts, details = estimate_drift(stack, return_details=True)
    res = _residual(shifts, drift)
    assert res.mean() < mean_tol and res.max() < max_tol
    np.testing.assert_allclose(np.median(shifts, axis=0), 0.0, atol=1e-9)
    # reported (noise-only) standard errors are of the order of the actual errors
    assert 0.3 < res.mean() / (0.8 * details["sigma_px"].mean()) < 5.0


def test_estimate_drift_on_od_and_large_drift():
    # drifts of up to ~9 px on a 64 px field, given as OD
    stack, drift = make_drifting_stack(3000.0, seed=3, drift_sd=2.5, ny=64, nx=64)
    assert np.abs(drift).max() > 8
    od = stack.with_data(-np.log(np.maximum(stack.data, 0.5) / 3000.0), kind="od")
    res = _residual(estimate_drift(od), drift)
    assert res.mean() < 0.03 and res.max() < 0.15


def test_apply_shifts_convention_and_valid_region():
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.normal(size=(40, 40)), 2.0)
    shifts = np.array([[0.0, 0.0], [1.5, -2.0], [-0.5, 0.25]])
    # frame k shows the sample displaced by shifts[k]
    frames = np.array([ndimage.shift(base, s, order=3, mode="nearest") for s in shifts])
    st = Stack(frames, np.array([1.0, 2.0, 3.0]), 30.0, kind="od")
    out = apply_shifts(st, shifts)
    valid = out.metadata["valid_region"]
    inner = valid & ndimage.binary_erosion(valid, iterations=4)
    for k in range(3):
        assert np.abs(out.data[k] - base)[inner].max() < 0.02 * np.abs(base).max()
    assert out.metadata["drift_px"] == shifts.tolist()
    expected = np.zeros((40, 40), bool)
    expected[1:38, 2:39] = True          # 0 <= y + dy <= 39 and 0 <= x + dx <= 39 for all frames
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_array_equal(valid_region((40, 40), np.zeros((3, 2))), np.ones((40, 40), bool))


def test_align_frames_returns_aligned_stack():
    stack, drift = make_drifting_stack(3000.0, seed=1, n_e=10)
    aligned, shifts = align_frames(stack)
    assert aligned.data.shape == stack.data.shape and shifts.shape == (10, 2)
    assert _residual(shifts, drift).mean() < 0.03
    assert len(aligned.metadata["drift_sigma_px"]) == 10
    single = Stack(stack.data[:1], stack.energies_ev[:1], 35.0)
    _, s1 = align_frames(single)
    np.testing.assert_array_equal(s1, np.zeros((1, 2)))


def test_shift_frames_equals_scipy_cubic_spline_shift():
    """The separable evaluation of precomputed spline coefficients is scipy's cubic-spline shift (to rounding),
    for small and large, positive and negative shifts (beyond the coefficient margin it falls back to scipy)."""
    from ceimap.segment.align import _shift_frames, _spline_coefficients

    rng = np.random.default_rng(4)
    frames = rng.normal(size=(6, 40, 47)).cumsum(axis=1)
    shifts = np.array([[0.3, -0.7], [2.5, 3.25], [-9.9, 9.7], [-10.2, 0.1], [15.0, -20.0], [0.0, 0.0]])
    expected = np.array([ndimage.shift(f, (-d[0], -d[1]), order=3, mode="nearest") for f, d in zip(frames, shifts)])
    for coef in (None, _spline_coefficients(frames)):
        np.testing.assert_allclose(_shift_frames(frames, shifts, coef), expected, rtol=0, atol=1e-10)
