"""Tests of segment.spectra: e_g/t_2g maps, S edge positions, mean spectra by label."""

import numpy as np
import pytest

from ceimap.segment.spectra import (
    arctan_step,
    egt2g_map,
    fit_s_edge,
    gaussian,
    mean_spectra_by_label,
    s_edge_map,
)
from ceimap.segment.stack import Stack

NI_E = np.round(np.concatenate([np.arange(844, 848, 0.5), np.arange(848, 855, 0.2),
                                np.arange(855, 858.1, 0.5)]), 3)
S_E = np.round(np.concatenate([np.arange(158, 161, 0.5), np.arange(161, 167, 0.1),
                               np.arange(167, 180, 0.5)]), 3)


def ni_stack(noise, seed=0, ny=30, nx=40, centre_offset_ev=0.0):
    """Ni L3 OD: Ni content rising along x, e_g/t_2g rising along y from 0.8 to 2.2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    ni = np.clip((xx - 5) / 25, 0, 1)
    ratio = 0.8 + 1.4 * yy / (ny - 1)
    a_t, a_e = 1.25 / (1 + ratio), 1.25 * ratio / (1 + ratio)
    e = NI_E
    c = centre_offset_ev
    od = (0.3 * (e / 850) ** -2.6)[:, None, None] + ni * (
        0.22 * arctan_step(e, 851 + c, 0.45)[:, None, None] + a_t * gaussian(e, 850 + c, 0.5)[:, None, None]
        + a_e * gaussian(e, 852 + c, 0.62)[:, None, None])
    return Stack(od + rng.normal(0, noise, od.shape), e, 30.0, kind="od", edge="Ni-L"), ratio, ni


def s_spectrum(e, c):
    """Argyrodite-like S L-edge: 2p doublet at c, c+1.2, step, broad features above, background."""
    return (0.42 * arctan_step(e, c + 0.6, 0.5) + 0.5 * gaussian(e, c, 0.32) + 0.32 * gaussian(e, c + 1.2, 0.32)
            + 0.22 * gaussian(e, c + 3.6, 0.9) + 0.28 * gaussian(e, c + 7.5, 1.8) + 0.32 * (e / 160) ** -2.5)


def test_egt2g_map_recovers_ratio_noise_free():
    st, ratio, ni = ni_stack(0.0)
    m = egt2g_map(st)
    has_ni = ni > 0
    np.testing.assert_array_equal(m.valid, has_ni)          # noise-free: any Ni is measurable
    strong = ni > 0.1
    np.testing.assert_allclose(m.ratio[strong], ratio[strong], rtol=3e-3)
    np.testing.assert_allclose(m.params["centres_ev"], (850.0, 852.0), atol=0.01)
    np.testing.assert_allclose(m.params["widths_ev"], (0.5, 0.62), atol=0.01)
    assert np.isnan(m.ratio[~has_ni]).all()


def test_egt2g_map_noise_uncertainty_and_validity():
    st, ratio, ni = ni_stack(0.02, seed=1)
    m = egt2g_map(st)
    v = m.valid
    # valid = strong enough Ni: SNR >= 1/sqrt(0.02); the weakest Ni columns are excluded
    assert v[:, 20:].all() and not v[:, :6].any()
    assert (m.snr_t2g[v] >= m.params["min_snr_t2g"]).all()
    z = (m.ratio[v] - ratio[v]) / m.sigma[v]
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.25     # honest error bars
    assert np.corrcoef(m.ratio[v], ratio[v])[0, 1] > 0.95


def test_egt2g_map_follows_an_energy_calibration_offset():
    st, ratio, ni = ni_stack(0.0, centre_offset_ev=0.4)
    m = egt2g_map(st)
    np.testing.assert_allclose(m.params["centres_ev"], (850.4, 852.4), atol=0.01)
    np.testing.assert_allclose(m.ratio[ni > 0.05], ratio[ni > 0.05], rtol=3e-3)


def test_egt2g_map_respects_mask_and_rejects_wrong_edge():
    st, ratio, ni = ni_stack(0.0)
    mask = np.ones(ni.shape, bool)
    mask[:, 30:] = False
    m = egt2g_map(st, mask=mask)
    assert not m.valid[:, 30:].any() and m.valid[:, 10:30].all()
    s = Stack(np.zeros((5, 4, 4)), np.linspace(160, 170, 5), 30.0, kind="od")
    with pytest.raises(ValueError):
        egt2g_map(s)


@pytest.mark.parametrize("centre", [163.9, 164.1])
def test_fit_s_edge_position_and_uncertainty(centre):
    rng = np.random.default_rng(4)
    pos, sig = [], []
    for _ in range(8):
        r = fit_s_edge(S_E, s_spectrum(S_E, centre) + rng.normal(0, 0.01, S_E.size), sigma=0.01)
        pos.append(r["position_ev"])
        sig.append(r["sigma_ev"])
    pos = np.array(pos)
    assert abs(pos.mean() - centre) < 0.02
    assert 0.5 < pos.std() / np.mean(sig) < 2.0
    assert 0.5 < r["reduced_chi2"] < 2.0 and r["success"]


def test_fit_s_edge_recovers_a_shift():
    a = fit_s_edge(S_E, s_spectrum(S_E, 163.9))
    b = fit_s_edge(S_E, s_spectrum(S_E, 164.1))
    assert abs((b["position_ev"] - a["position_ev"]) - 0.2) < 0.005


def test_s_edge_map_two_regions():
    rng = np.random.default_rng(5)
    ny, nx = 24, 30
    yy, xx = np.mgrid[0:ny, 0:nx]
    pos = np.where(xx < 15, 163.9, 164.1)
    amount = np.clip(yy / 8.0, 0, 1)           # no sulfur in the first rows
    od = s_spectrum(S_E[:, None, None], pos[None]) * amount[None] + 0.1
    od = od + rng.normal(0, 0.03, od.shape)
    m = s_edge_map(Stack(od, S_E, 30.0, kind="od", edge="S-L"))
    assert not m.valid[0].any() and m.valid[10:].all()
    left, right = m.position_ev[10:, :15], m.position_ev[10:, 15:]
    assert abs(np.nanmean(right) - np.nanmean(left) - 0.2) < 0.02
    z = (m.position_ev[10:] - pos[10:]) / m.sigma_ev[10:]
    assert 0.6 < np.nanstd(z) < 1.6


def test_mean_spectra_by_label():
    data = np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3)
    st = Stack(data, np.array([1.0, 2.0]), 30.0, kind="od")
    labels = np.array([[0, 1, 1], [2, 2, 2]])
    out = mean_spectra_by_label(st, labels)
    assert set(out) == {0, 1, 2}
    mean1, sd1, n1 = out[1]
    np.testing.assert_allclose(mean1, [1.5, 7.5])
    np.testing.assert_allclose(sd1, [np.sqrt(0.5)] * 2)
    assert n1 == 2 and out[2][2] == 3 and np.isnan(out[0][1]).all()
    mask = np.ones((2, 3), bool)
    mask[1, 0] = False
    assert mean_spectra_by_label(st, labels, mask=mask)[2][2] == 2
