"""Tests of segment.stack: I0 finding and optical density."""

import numpy as np
import pytest

from ceimap.segment.stack import Stack, find_i0, normalised_counts, optical_density


def _lamella_counts(seed=0, i0_level=2000.0, n_e=30, ny=40, nx=50, empty_cols=10):
    """Counts of a lamella covering the field except the first ``empty_cols`` columns (empty)."""
    rng = np.random.default_rng(seed)
    e = np.linspace(845.0, 870.0, n_e)
    yy, xx = np.mgrid[0:ny, 0:nx]
    thickness = np.where(xx >= empty_cols, 0.3 + 0.05 * (yy % 5), 0.0)
    mu = 1.0 + 2.0 * np.exp(-0.5 * (e - 852.0) ** 2)
    od = mu[:, None, None] * thickness[None]
    i0 = i0_level * np.linspace(1.0, 0.7, n_e)
    counts = rng.poisson(i0[:, None, None] * np.exp(-od)).astype(float)
    return Stack(counts, e, 30.0, edge="Ni-L"), i0, od, xx < empty_cols


def test_find_i0_automatic_finds_the_empty_field():
    stack, i0_true, _, empty = _lamella_counts()
    i0, mask = find_i0(stack)
    # every selected pixel is empty, and nearly all empty pixels are selected
    assert not (mask & ~empty).any()
    assert mask.sum() >= 0.95 * empty.sum()
    # mean of ~400 Poisson pixels: relative error ~ 1/sqrt(400*1400) → well below 1 %
    np.testing.assert_allclose(i0, i0_true, rtol=0.01)


def test_find_i0_region_and_monitor_and_ring_current():
    stack, i0_true, _, empty = _lamella_counts()
    region = np.zeros(empty.shape, bool)
    region[5:15, 2:6] = True
    i0, mask = find_i0(stack, region_mask=region)
    np.testing.assert_array_equal(mask, region)
    np.testing.assert_allclose(i0, stack.data[:, region].mean(axis=1))
    mon = np.linspace(5.0, 6.0, stack.n_energy)
    s_mon = stack.with_data(stack.data, monitor=mon, monitor_kind="i0")
    i0m, maskm = find_i0(s_mon)
    np.testing.assert_allclose(i0m, mon)
    assert not maskm.any()
    # ring current: counts are divided by current/mean(current) before I0 is found
    ring = np.linspace(400.0, 300.0, stack.n_energy)
    s_ring = stack.with_data(stack.data * (ring / ring.mean())[:, None, None], monitor=ring,
                             monitor_kind="ring_current")
    np.testing.assert_allclose(normalised_counts(s_ring), stack.data)
    i0r, _ = find_i0(s_ring)
    np.testing.assert_allclose(i0r, i0_true, rtol=0.01)
    with pytest.raises(ValueError):
        find_i0(stack, region_mask=np.zeros(empty.shape, bool))


def test_optical_density_values_and_report():
    stack, i0_true, od_true, empty = _lamella_counts(i0_level=5000.0)
    od, rep = optical_density(stack)
    assert od.kind == "od" and od.data.shape == stack.data.shape
    # Poisson: sd of -ln(I) ~ 1/sqrt(I) ≈ 0.02; mean absolute error over the field well below that
    assert np.abs(od.data - od_true).mean() < 0.02
    assert abs((od.data - od_true).mean()) < 0.003
    assert rep["i0_source"] == "auto" and rep["i0_n_pixels"] == int(rep["i0_mask"].sum())
    assert 0.8 < rep["gain"] < 1.2          # photon counting: variance = mean
    assert rep["n_saturated"] == 0 and rep["n_zero_counts"] == 0
    # negative OD on empty pixels is noise: kept (mean ~0), counted
    assert rep["n_negative_od"] > 0
    assert abs(od.data[:, empty].mean()) < 0.003
    od_clip, rep_clip = optical_density(stack, clip_negative=True)
    assert od_clip.data.min() == 0.0


def test_optical_density_saturation_and_zero_counts():
    stack, i0_true, _, empty = _lamella_counts(i0_level=1000.0)
    data = stack.data.copy()
    data[:, 20, 30] = 0.0            # fully opaque pixel
    data[3, 21, 31] = 2.0            # below the floor of 5 photons at one energy
    data[4, 22, 32] = -3.0           # background-subtracted counts can go negative
    od, rep = optical_density(stack.with_data(data), i0=i0_true)
    ceiling = np.log(i0_true / rep["floor_counts"])
    np.testing.assert_allclose(od.data[:, 20, 30], ceiling)
    np.testing.assert_allclose(od.data[3, 21, 31], ceiling[3])
    np.testing.assert_allclose(od.data[4, 22, 32], ceiling[4])
    assert np.isfinite(od.data).all()
    assert rep["n_zero_counts"] == stack.n_energy + 1
    assert rep["n_saturated"] == stack.n_energy + 2
    assert rep["saturated"][20, 30] and rep["saturated"][21, 31] and rep["zero_counts"][22, 32]
    assert rep["floor_counts"] == 5.0 and rep["i0_source"] == "given"


def test_optical_density_passes_od_through():
    stack = Stack(np.zeros((3, 4, 4)), np.array([1.0, 2.0, 3.0]), 30.0, kind="od")
    out, rep = optical_density(stack)
    assert out is stack and "already" in rep["notes"][0]


def test_find_i0_warns_when_the_bright_region_is_a_fragmented_phase():
    # a film covering the whole field: two phases in a checkerboard-like pattern, no empty area
    rng = np.random.default_rng(3)
    e = np.linspace(280.0, 320.0, 12)
    yy, xx = np.mgrid[0:40, 0:40]
    phase = ((yy // 5 + xx // 5) % 2).astype(bool)
    od = np.where(phase, 0.3, 0.8)[None] * (1 + 0.5 * (e > 285))[:, None, None]
    counts = rng.poisson(3000 * np.exp(-od)).astype(float)
    od_stack, rep = optical_density(Stack(counts, e, 40.0))
    assert any("fragmented" in w for w in rep["warnings"])
    # the lamella-with-empty-margin case does not warn
    stack, *_ = _lamella_counts()
    assert not any("fragmented" in w for w in optical_density(stack)[1]["warnings"])
