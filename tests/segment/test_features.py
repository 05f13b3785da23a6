"""Features of the pixel classifier: declared spec, tiling, physical normalisation."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from ceimap.segment.features import (FEATURE_SPEC_VERSION, FeatureSpec, _smooth, feature_image, features_at,
                              normalise_sem, sem_filter_bank, spectral_maps)
from ceimap.segment.stack import Stack

NI_E = np.linspace(844.0, 858.0, 29)
S_E = np.linspace(156.0, 170.0, 29)


def _peak(e, c, w):
    return np.exp(-0.5 * ((e - c) / w) ** 2)


def scene(seed=0, n=96):
    """SEM image (10 nm px), STXM maps on a 3× coarser grid, and the STXM→SEM matrix."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    nmc = (yy - 40) ** 2 + (xx - 44) ** 2 < 18 ** 2
    void = (yy - 80) ** 2 + (xx - 15) ** 2 < 8 ** 2
    sem = np.where(nmc, 200.0, np.where(void, 30.0, 110.0)) + rng.normal(0, 8, (n, n))
    pores = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.0) > 0.3
    sem -= 60 * (pores & ~nmc & ~void)
    return sem.astype(np.float32), nmc, void


def stacks(ni_amount, s_amount, s_position_ev=163.9):
    ni = ni_amount[None] * (_peak(NI_E, 853.0, 0.8)[:, None, None] + 0.3 * (NI_E > 853)[:, None, None]) + 0.05
    s = s_amount[None] * (_peak(S_E, 163.9, 0.5)[:, None, None] + 0.3 * (S_E > 164)[:, None, None]) + 0.05
    return {"Ni-L": Stack(ni, NI_E, 30.0, kind="od", edge="Ni-L"),
            "S-L": Stack(s, S_E, 30.0, kind="od", edge="S-L")}


def spectral_inputs(ni_amount, s_amount, position_ev):
    ods = stacks(ni_amount, s_amount)
    eg = SimpleNamespace(ratio=np.where(ni_amount > 0.2, 1.5, np.nan), valid=ni_amount > 0.2)
    se = SimpleNamespace(position_ev=np.where(s_amount > 0.2, position_ev, np.nan), valid=s_amount > 0.2)
    return ods, eg, se


def stxm_maps(seed=0, m=34):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:m, 0:m]
    ni = np.clip(1.0 - np.hypot(yy - 13.3, xx - 14.7) / 6.0, 0, 1) * 1.2
    s = np.clip(1.0 - ni, 0, 1) * 0.8 + rng.normal(0, 0.01, (m, m))
    pos = 163.9 + 0.2 * ((ni > 0) & (ni < 0.4)) + rng.normal(0, 0.01, (m, m))
    return ni, s, pos


MATRIX = np.array([[3.0, 0.1, -2.0], [-0.1, 3.0, -1.5], [0.0, 0.0, 1.0]])


def test_spec_names_and_round_trip():
    spec = FeatureSpec()
    d = spec.to_dict()
    assert d["version"] == FEATURE_SPEC_VERSION
    assert FeatureSpec.from_dict(d) == spec
    n_sem = 1 + len(spec.sem_scales_nm) * 5          # gaussian + two Hessian + two structure eigenvalues
    n_spec = (3 * 2 + 1) + (2 * 2 + 1)                # Ni: 3 maps × 2 scales + valid; S: 2 × 2 + valid
    assert len(spec.names) == n_sem + n_spec + 1 == len(set(spec.names))
    assert spec.interphase_features == ("s_shift_ev", "s_shift_ev_150nm", "s_valid")
    d["names"] = d["names"][:-1]
    with pytest.raises(ValueError, match="names"):
        FeatureSpec.from_dict(d)
    assert FeatureSpec(edges=("Ni-L",)).interphase_features == ()


def test_smooth_is_gaussian_of_the_scale():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(60, 60)).astype(np.float32)
    for sigma in (1.0, 3.5):                         # exact kernel below 4 px
        np.testing.assert_allclose(_smooth(img, sigma), ndimage.gaussian_filter(img, sigma, truncate=4.0),
                                   atol=1e-6)
    for sigma in (4.0, 5.2, 7.3, 12.0):              # three boxes: impulse response ≈ Gaussian of variance σ²
        impulse = np.zeros((121, 121), np.float32)
        impulse[60, 60] = 1.0
        k = _smooth(impulse, sigma)
        x = np.arange(121) - 60
        var = np.sum(k.sum(axis=0) * x ** 2)
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        assert var == pytest.approx(sigma ** 2, rel=0.10)
        assert k.max() == pytest.approx(1.0 / (2 * np.pi * sigma ** 2), rel=0.15)


def test_sem_features_do_not_depend_on_brightness_and_contrast():
    sem, _, _ = scene()
    spec = FeatureSpec(edges=())
    a = sem_filter_bank(normalise_sem(sem)[0], 10.0, spec)
    b = sem_filter_bank(normalise_sem(3.0 * sem + 1000.0)[0], 10.0, spec)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_tiled_equals_untiled_and_features_at():
    sem, nmc, _ = scene()
    ni, s, pos = stxm_maps()
    ods, eg, se = spectral_inputs(ni, s, pos)
    spec = FeatureSpec(sem_scales_nm=(10.0, 30.0, 60.0))
    maps = spectral_maps(ods, spec, egt2g=eg, s_edge=se)
    mats = {"Ni-L": MATRIX, "S-L": MATRIX}
    whole = feature_image(sem, 10.0, spec, maps, mats, tile_px=4096)
    tiled = feature_image(sem, 10.0, spec, maps, mats, tile_px=37)
    assert whole.dtype == np.float32 and whole.shape == sem.shape + (len(spec.names),)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
    mask = np.zeros(sem.shape, bool)
    mask[::7, ::5] = True
    np.testing.assert_array_equal(features_at(mask, sem, 10.0, spec, maps, mats, tile_px=37), tiled[mask])


def test_spectral_features_are_physical_and_portable():
    """A thicker lamella (OD × 1.7) and an energy-calibration offset give the same features."""
    ni, s, pos = stxm_maps()
    spec = FeatureSpec()
    ods, eg, se = spectral_inputs(ni, s, pos)
    base = spectral_maps(ods, spec, egt2g=eg, s_edge=se)
    _, _, se2 = spectral_inputs(ni, s, pos + 0.4)
    ods2 = {e: st.with_data(1.7 * st.data) for e, st in ods.items()}
    other = spectral_maps(ods2, spec, egt2g=eg, s_edge=se2)
    for name in ("ni_l3", "ni_absorption", "s_jump", "s_shift_ev", "s_shift_ev_150nm"):
        a, b = base[name][0], other[name][0]
        np.testing.assert_allclose(np.nan_to_num(b), np.nan_to_num(a), atol=0.02, err_msg=name)
    ni_l3 = base["ni_l3"][0]
    assert np.percentile(ni_l3, 99) == pytest.approx(1.0)
    assert abs(np.median(ni_l3[ni == 0])) < 0.02            # no Ni → 0
    shift = base["s_shift_ev"][0]
    interphase = (ni > 0) & (ni < 0.4) & se.valid
    assert np.nanmedian(shift[interphase]) == pytest.approx(0.2, abs=0.03)
    assert np.isnan(base["egt2g"][0][~eg.valid]).all()        # invalid stays NaN until the SEM grid


def test_invalid_ratio_does_not_bleed_into_neighbours():
    """egt2g is 0 off the Ni on the SEM grid, never interpolated towards 0 at the NMC edge."""
    sem, _, _ = scene()
    ni, s, pos = stxm_maps()
    ods, eg, se = spectral_inputs(ni, s, pos)
    spec = FeatureSpec(sem_scales_nm=(10.0,))
    feats = feature_image(sem, 10.0, spec, spectral_maps(ods, spec, egt2g=eg, s_edge=se),
                          {"Ni-L": MATRIX, "S-L": MATRIX})
    col = spec.names.index("egt2g")
    values = feats[..., col]
    assert set(np.unique(np.round(values, 6))) <= {0.0, 1.5}
    assert feats[..., spec.names.index("stxm_field")].mean() > 0.9


def test_pyramid_scales_match_full_resolution():
    """A scale computed on block means and interpolated back ≈ the same scale computed on every pixel."""
    from ceimap.segment.features import _decimation, _scale_filters, _smooth

    rng = np.random.default_rng(3)
    img = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 2.0).astype(np.float32)
    img /= img.std()
    spec = FeatureSpec(sem_scales_nm=(80.0,), edges=())             # σ = 8 px at 10 nm pixels
    assert _decimation(8.0) == 8
    pyr = sem_filter_bank(img, 10.0, spec)[..., 1:]
    full = _scale_filters(img, 8.0, spec.sem_filters, _smooth)
    inner = (slice(40, -40), slice(40, -40))
    # block means keep the smooth image and its curvature; sub-block gradient energy (structure tensor) is lost
    for j, name in enumerate(spec.names[1:-1]):                    # sem_* columns (the last is stxm_field)
        a, b = pyr[inner][..., j], full[inner][..., j]
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert r > {"gaussian": 0.99, "hessian": 0.88, "structure": 0.6}[name.split("_")[1].rstrip("12")], (name, r)
    g = spec.names.index("sem_gaussian_80nm") - 1
    assert np.abs(pyr[inner][..., g] - full[inner][..., g]).mean() < 0.15 * full[inner][..., g].std()


def test_upsample_is_exact_for_a_ramp():
    from ceimap.segment.features import _block_mean, _upsample

    yy, xx = np.mgrid[0:64, 0:48].astype(np.float32)
    ramp = 0.5 * yy - 2.0 * xx
    back = _upsample(_block_mean(ramp, 4)[..., None], 4, ramp.shape)[..., 0]
    np.testing.assert_allclose(back[2:-2, 2:-2], ramp[2:-2, 2:-2], atol=1e-4)


def test_feature_tile_equals_iterated_tiles():
    from ceimap.segment.features import feature_tile, iter_feature_tiles, tile_slices

    sem, _, _ = scene()
    ni, s, pos = stxm_maps()
    ods, eg, se = spectral_inputs(ni, s, pos)
    spec = FeatureSpec(sem_scales_nm=(10.0, 40.0))
    maps = spectral_maps(ods, spec, egt2g=eg, s_edge=se)
    mats = {"Ni-L": MATRIX, "S-L": MATRIX}
    mask = np.zeros(sem.shape, bool)
    mask[70:, :10] = True
    slices = tile_slices(sem.shape, 40, mask)
    assert slices == [(slice(40, 80), slice(0, 40)), (slice(80, 96), slice(0, 40))]
    norm = normalise_sem(sem)[0]
    for (sl, tile), other in zip(iter_feature_tiles(sem, 10.0, spec, maps, mats, tile_px=40, mask=mask), slices):
        assert sl == other
        np.testing.assert_array_equal(tile, feature_tile(norm, sl, 10.0, spec, maps, mats))


@pytest.mark.parametrize("tile_px", [96, 40])
def test_tile_sampler_equals_feature_tile_bit_for_bit(tile_px):
    """Features sampled at chosen pixels (lattice + boundary pixels in prediction) are those of the whole tile,
    exactly; columns not asked for are 0 and the others unchanged."""
    from ceimap.segment.features import feature_tile, sem_pyramid, spectral_sources, tile_sampler, tile_slices

    sem, _, _ = scene()
    ni, s, pos = stxm_maps()
    ods, eg, se = spectral_inputs(ni, s, pos)
    ods["S-L"].metadata["valid_region"] = np.arange(34)[None, :] < 30 + np.zeros((34, 1), bool)
    spec = FeatureSpec(sem_scales_nm=(10.0, 20.0, 40.0))
    maps = spectral_maps(ods, spec, egt2g=eg, s_edge=se)
    mats = {"Ni-L": MATRIX, "S-L": MATRIX @ np.array([[1.0, 0, 0.4], [0, 1.0, -0.3], [0, 0, 1]])}
    norm = normalise_sem(sem)[0]
    pyramid, sources = sem_pyramid(norm, 10.0, spec), spectral_sources(maps)
    rng = np.random.default_rng(1)
    some = [0, 3, 8, len(spec.names) - 4, len(spec.names) - 1]
    lean = sem_pyramid(norm, 10.0, spec, columns=some, n_threads=2)
    for sl in tile_slices(sem.shape, tile_px):
        tile = feature_tile(norm, sl, 10.0, spec, maps, mats, pyramid=pyramid)
        h, w = tile.shape[:2]
        yy, xx = rng.integers(0, h, 500), rng.integers(0, w, 500)
        at = tile_sampler(norm, sl, 10.0, spec, maps, mats, pyramid=pyramid, sources=sources)
        np.testing.assert_array_equal(at(yy, xx), tile[yy, xx])
        part = tile_sampler(norm, sl, 10.0, spec, maps, mats, pyramid=pyramid, sources=sources, columns=some)(yy, xx)
        np.testing.assert_array_equal(part[:, some], tile[yy, xx][:, some])
        others = np.setdiff1d(np.arange(len(spec.names)), some)
        assert not part[:, others].any()
        # a pyramid of the wanted columns only, computed in two threads, serves the same sampler
        again = tile_sampler(norm, sl, 10.0, spec, maps, mats, pyramid=lean, sources=sources, columns=some)(yy, xx)
        np.testing.assert_array_equal(again, part)
