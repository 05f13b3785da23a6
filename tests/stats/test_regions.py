"""Regions on the SEM grid and on native STXM pixels, on a square particle of exactly known geometry."""

import numpy as np
import pytest
from scipy import stats

from ceimap.stats.regions import (REGION_CODES, REGION_NAMES, contact_classes, default_distances, pixel_table,
                           sem_regions, stxm_regions)
from stats_scenes import NI_MATRIX, lamella_scene

R = REGION_CODES


@pytest.fixture()
def half_and_half():
    """A 200×200 px NMC square (10 nm px) with electrolyte on its left half-plane and void on its right."""
    classes = np.full((400, 400), 3, np.uint8)
    classes[:, 200:] = 4
    classes[100:300, 100:300] = 1
    particles = (classes == 1).astype(np.uint32)
    return classes, particles


def test_default_distances_follow_pixel_and_psf():
    d = default_distances(40.0, 50.0)
    sigma_eff = np.sqrt((50.0 / 2.3548) ** 2 + 40.0 ** 2 / 12)
    assert d["sigma_eff_nm"] == pytest.approx(sigma_eff, rel=1e-4)
    # bands start where less than 1 % of a pixel's signal comes from beyond the NMC edge
    assert stats.norm.sf(d["contamination_nm"] / d["sigma_eff_nm"]) == pytest.approx(0.01, rel=0.01)
    assert d["surface_offset_nm"] == d["contamination_nm"]
    assert d["surface_band_nm"] == 50.0
    assert d["bulk_margin_nm"] == pytest.approx(d["surface_offset_nm"] + 50.0)
    assert default_distances(80.0, 50.0)["surface_band_nm"] == 80.0
    custom = default_distances(40.0, 50.0, surface_band_nm=30.0, surface_offset_nm=0.0)
    assert custom["surface_band_nm"] == 30.0 and custom["bulk_margin_nm"] == 30.0


def test_sem_regions_depth_profile_is_exact(half_and_half):
    classes, particles = half_and_half
    region, owner, params = sem_regions(classes, particles, 10.0, 40.0, 50.0)
    assert params["surface_offset_nm"] == pytest.approx(56.2, abs=0.1)
    # row 200, moving into the particle from its left (electrolyte) edge at column 100: pixel depths
    # 5, 15, …, 55 nm are within the probe's reach of the edge (nmc_edge), 65 … 105 nm form the band
    # [56.2, 106.2), deeper is bulk
    expected = ["nmc_edge"] * 6 + ["surface_electrolyte"] * 5 + ["bulk"] * 4
    assert [REGION_NAMES[c] for c in region[200, 100:115]] == expected
    # mirror image on the right (void) edge at column 299
    expected_void = ["bulk"] * 4 + ["surface_void"] * 5 + ["nmc_edge"] * 6
    assert [REGION_NAMES[c] for c in region[200, 285:300]] == expected_void
    assert region[200, 99] == R["electrolyte"] and region[200, 300] == R["void"]
    assert np.array_equal(owner, particles.astype(np.int64))
    # with a custom, deeper bulk margin a transition zone appears between band and bulk
    deeper, _, _ = sem_regions(classes, particles, 10.0, 40.0, 50.0, bulk_margin_nm=150.0)
    assert [REGION_NAMES[c] for c in deeper[200, 111:117]] == ["nmc_transition"] * 4 + ["bulk"] * 2


def test_pixels_near_both_kinds_are_excluded(half_and_half):
    classes, particles = half_and_half
    region, _, params = sem_regions(classes, particles, 10.0, 40.0, 50.0)
    band_row = region[107, 180:220]      # 75 nm below the top edge, inside the band depth
    # void starts at column 200 above the particle; a band pixel at column c is within the band's outer
    # depth (106.2 nm) of that void while hypot(8, 200 - c) px - 0.5 px < 10.62 px: columns 193…199;
    # mirrored for the electrolyte seen from the void side: 200…206
    cols = np.arange(180, 220)
    assert np.all(band_row[cols <= 192] == R["surface_electrolyte"])
    assert np.all(band_row[(cols >= 193) & (cols <= 206)] == R["surface_excluded"])
    assert np.all(band_row[cols >= 207] == R["surface_void"])


def test_bands_are_symmetric_on_a_mirror_symmetric_scene(half_and_half):
    classes, particles = half_and_half
    # 50 nm STXM pixels whose centres fall on SEM pixel centres 5x + 2: the grid is mirror symmetric
    matrix = np.array([[5.0, 0, 2.0], [0, 5.0, 2.0], [0, 0, 1]])
    maps = stxm_regions(classes, particles, 10.0, matrix, (80, 80), 50.0, 50.0)
    n_e = int(np.sum(maps.region == R["surface_electrolyte"]))
    n_v = int(np.sum(maps.region == R["surface_void"]))
    assert n_e == n_v > 0
    # mirror symmetry of the whole region map, swapping the two kinds
    swap = maps.region.copy()
    for a, b in (("surface_electrolyte", "surface_void"), ("electrolyte", "void")):
        swap[maps.region == R[a]] = R[b]
        swap[maps.region == R[b]] = R[a]
    assert np.array_equal(swap[:, ::-1], maps.region)


def test_stxm_pixels_take_the_region_under_their_centre(half_and_half):
    classes, particles = half_and_half
    maps = stxm_regions(classes, particles, 10.0, NI_MATRIX, (100, 100), 40.0, 50.0)
    # STXM column x has its centre at SEM column 4x + 1.5 → SEM pixel 4x + 2:
    # column 24 → 98 (electrolyte), 25 → 102 (depth 25 nm), 26 → 106 (65 nm), 27 → 110 (105 nm), 28 → 114
    assert [REGION_NAMES[c] for c in maps.region[50, 24:29]] == [
        "electrolyte", "nmc_edge", "surface_electrolyte", "surface_electrolyte", "bulk"]
    assert maps.particle_id[50, 27] == 1 and maps.particle_id[50, 24] == 0
    # every bulk STXM pixel's centre lies at least the bulk margin inside the particle
    yy, xx = np.nonzero(maps.region == R["bulk"])
    sem_y, sem_x = 4 * yy + 2, 4 * xx + 2
    depth_nm = (np.minimum.reduce([sem_y - 99, 300 - sem_y, sem_x - 99, 300 - sem_x]) - 0.5) * 10.0
    assert depth_nm.min() >= maps.parameters["bulk_margin_nm"]
    # STXM pixels beyond the SEM image are outside
    far = stxm_regions(classes, particles, 10.0, NI_MATRIX, (110, 110), 40.0, 50.0)
    assert np.all(far.region[100:, :] == R["outside"]) and np.all(far.particle_id[:, 100:] == 0)


def test_interphase_goes_to_nearest_particle():
    classes = np.full((60, 120), 3, np.uint8)
    classes[:, 50:70] = 2
    classes[20:40, 10:50] = 1
    classes[20:40, 70:110] = 1
    particles = np.zeros(classes.shape, np.uint32)
    particles[20:40, 10:50] = 1
    particles[20:40, 70:110] = 2
    _, owner, _ = sem_regions(classes, particles, 10.0, 40.0, 50.0)
    assert np.all(owner[30, 50:60] == 1)
    assert np.all(owner[30, 60:70] == 2)


def test_pixel_table_has_one_row_per_native_pixel():
    scene = lamella_scene(3)
    maps = stxm_regions(scene["classes"], scene["particles"], 10.0, NI_MATRIX, scene["egt2g"].shape, 40.0)
    table = pixel_table(maps, scene["egt2g"], scene["egt2g_sigma"], scene["egt2g_valid"])
    n_inside = int(np.sum(maps.region != R["outside"]))
    assert len(table) == n_inside
    assert not table.duplicated(["x", "y"]).any()
    assert list(table.columns) == ["x", "y", "particle_id", "region", "egt2g", "egt2g_sigma"]
    row = table.iloc[len(table) // 2]
    assert row.egt2g == pytest.approx(scene["egt2g"][row.y, row.x]) or not scene["egt2g_valid"][row.y, row.x]
    # invalid pixels carry NaN, valid ones their value
    invalid = ~scene["egt2g_valid"][table.y, table.x]
    assert table.egt2g[invalid].isna().all() and table.egt2g[~invalid].notna().all()
    assert set(table.particle_id[table.region == "bulk"]) == set(range(1, 13))


def test_thin_rim_between_nmc_and_void_does_not_make_an_electrolyte_contact(half_and_half):
    classes, particles = half_and_half
    rimmed = classes.copy()
    rim = (np.abs(np.arange(400)[:, None] - 199.5) < 102) & (np.abs(np.arange(400)[None, :] - 199.5) < 102)
    rimmed[rim & (classes != 1) & (classes == 4)] = 3          # a 1-2 px electrolyte rim around the void side
    cleaned = contact_classes(rimmed, particles, 10.0, 56.0)
    away = np.zeros_like(rim)
    away[:, 220:] = True                                         # away from the real electrolyte/void border
    assert np.all(cleaned[rim & (classes == 4) & away] == 4)     # the rim goes back to void
    assert np.array_equal(cleaned[classes == 1], rimmed[classes == 1])
    r_raw, _, _ = sem_regions(classes, particles, 10.0, 40.0, 50.0)
    r_rim, _, _ = sem_regions(rimmed, particles, 10.0, 40.0, 50.0)
    nmc_away = (classes == 1) & away
    assert np.array_equal(r_raw[nmc_away], r_rim[nmc_away])
    assert np.sum(r_rim == R["surface_void"]) >= 0.9 * np.sum(r_raw == R["surface_void"]) > 0
    # a genuine electrolyte/void border far from thin rims is unchanged
    assert np.array_equal(contact_classes(classes, particles, 10.0, 56.0)[:50], classes[:50])


# ---- where the surface bands start: derived from the lamella (stats.regions.surface_start_from_data) ----

def _start(scene, **kwargs):
    from ceimap.stats.regions import surface_start_from_data

    return surface_start_from_data(scene["classes"], scene["particles"], 10.0, NI_MATRIX, 40.0, 50.0,
                                   scene["egt2g"], scene["egt2g_sigma"], scene["egt2g_valid"],
                                   scene["amplitude_t2g"], scene["amplitude_eg"], **kwargs)


@pytest.fixture(scope="module")
def starts_by_interphase():
    """Null scenes (no NMC surface effect) whose interphase differs only in its ratio or its Ni amount."""
    cases = {"same_ratio": dict(interphase_ratio=1.5, interphase_ni=0.35),
             "ni_0.1": dict(interphase_ratio=1.0, interphase_ni=0.1),
             "ni_0.35": dict(interphase_ratio=1.0, interphase_ni=0.35),
             "ni_0.8": dict(interphase_ratio=1.0, interphase_ni=0.8)}
    return {name: _start(lamella_scene(1, effect=0.0, base_sd=0.0, **kw), criterion="pixel")
            for name, kw in cases.items()}


def test_surface_start_measures_the_interphase_it_corrects_for(starts_by_interphase):
    # the class amounts and ratios come out of the fitted heights: the scene's interphase holds 0.35 of NMC's Ni
    # per unit area at ratio 1.0 (NMC 1.5); tolerances cover the Gaussian approximation of probe ⊗ pixel
    r = starts_by_interphase["ni_0.35"]
    assert r["rule"] == "bias ≤ k·SE" and r["reason"] is None and r["criterion"] == "pixel"
    assert r["interphase_ni_fraction"] == pytest.approx(0.35, abs=0.03)
    assert r["ratio"]["interphase"] == pytest.approx(1.0, abs=0.05)
    assert r["ratio"]["nmc"] == pytest.approx(1.5, abs=0.01)
    assert r["n_pairs"] == 12
    # the bound at the chosen start is within the tolerance, the one a pixel shallower is not
    depths = np.asarray(r["depths_nm"])
    j = int(np.argmin(np.abs(depths - r["surface_offset_nm"])))
    assert r["bias_bound"][j] <= r["tolerance"] < r["bias_bound"][j - 1]


def test_surface_start_is_shallow_when_the_interphase_reads_like_nmc(starts_by_interphase):
    same = starts_by_interphase["same_ratio"]
    sigma = default_distances(40.0, 50.0)["sigma_eff_nm"]
    # no ratio contrast: only the small ratio-of-noisy-heights term is left (bound ≤ 0.003 at the NMC edge,
    # against 0.1 for an interphase of ratio 1.0), so the bands start near the edge, far short of the 1 % depth
    assert max(same["bias_bound"]) < 0.003
    assert same["surface_offset_nm"] <= 1.5 * sigma < default_distances(40.0, 50.0)["contamination_nm"]
    assert starts_by_interphase["ni_0.35"]["bias_bound"][0] > 0.05
    assert starts_by_interphase["ni_0.35"]["surface_offset_nm"] > same["surface_offset_nm"] + 2 * 10.0


def test_surface_start_is_monotone_in_the_interphase_ni(starts_by_interphase):
    names = ["ni_0.1", "ni_0.35", "ni_0.8"]
    starts = [starts_by_interphase[n]["surface_offset_nm"] for n in names]
    assert starts == sorted(starts)
    # and so is the bias bound at every depth short of where it vanishes
    bounds = np.array([starts_by_interphase[n]["bias_bound"][:5] for n in names])
    assert np.all(np.diff(bounds, axis=0) > 0)


def test_surface_start_falls_back_when_the_data_cannot_tell():
    c1 = default_distances(40.0, 50.0)["contamination_nm"]
    no_interphase = _start(lamella_scene(1, effect=0.0, band_px=0))
    assert no_interphase["surface_offset_nm"] == pytest.approx(c1)
    assert no_interphase["rule"].startswith("fallback") and "interphase" in no_interphase["reason"]
    # a given offset overrides the rule, and without Ni heights the 1 % depth is used
    scene = lamella_scene(1, effect=0.0)
    ni_map = {k: scene[k] for k in ("egt2g", "egt2g_sigma", "egt2g_valid", "amplitude_t2g", "amplitude_eg")}
    fixed = stxm_regions(scene["classes"], scene["particles"], 10.0, NI_MATRIX, scene["egt2g"].shape, 40.0,
                         surface_offset_nm=20.0, ni_map=ni_map)
    assert fixed.parameters["surface_offset_nm"] == 20.0
    assert fixed.parameters["surface_offset_rule"]["rule"].startswith("fixed")
    plain = stxm_regions(scene["classes"], scene["particles"], 10.0, NI_MATRIX, scene["egt2g"].shape, 40.0)
    assert plain.parameters["surface_offset_nm"] == pytest.approx(c1)
    derived = stxm_regions(scene["classes"], scene["particles"], 10.0, NI_MATRIX, scene["egt2g"].shape, 40.0,
                           ni_map=ni_map)
    # bulk keeps the conservative margin whatever the band start
    assert derived.parameters["bulk_margin_nm"] >= plain.parameters["bulk_margin_nm"] - 1e-9


def test_bias_tolerance_keeps_the_false_positive_rate():
    """A bias of k·SE on a paired t test with n pairs rejects at α = 0.05 at the rate max_fpr (simulated)."""
    from ceimap.stats.regions import bias_tolerance

    n, fpr = 8, 0.06
    k = bias_tolerance(n, fpr)
    assert bias_tolerance(1000, fpr) == pytest.approx(0.295, abs=0.005)   # normal limit: P(|Z + k| > 1.96)
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 1.0, (40000, n))
    d += k / np.sqrt(n)            # bias = k · (true SE of the mean difference)
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    rate = float(np.mean(p < 0.05))
    # binomial sd of the rate over 40000 draws ≈ 0.0012; the non-central t is exact for the true SE
    assert rate == pytest.approx(fpr, abs=0.004)


def test_surface_start_from_the_band_mean_bias(starts_by_interphase):
    """criterion="band_mean" bounds the bias the paired difference of band means carries: Δ averaged over the
    band's depths (weighted by NMC pixels per depth). The interphase's pull decays with depth, so the band
    mean's bias is below that of its shallowest pixels: its bound is lower where the bias dominates and the
    bands may start shallower; the start is still the first depth whose bound (and every deeper one) fits."""
    scene = lamella_scene(1, effect=0.0, base_sd=0.0, interphase_ratio=1.0, interphase_ni=0.35)
    pixel = starts_by_interphase["ni_0.35"]
    mean = _start(scene, criterion="band_mean")
    assert mean["rule"] == "bias ≤ k·SE (band mean)" and mean["criterion"] == "band_mean"
    assert mean["tolerance"] == pytest.approx(pixel["tolerance"])        # same SE and k: only the bias differs
    bound_px, bound_mean = np.asarray(pixel["bias_bound"]), np.asarray(mean["bias_bound"])
    strong = bound_px > 3 * pixel["tolerance"]                            # depths where the bias dominates
    assert strong[:3].all() and np.all(bound_mean[strong] < bound_px[strong])
    assert mean["surface_offset_nm"] < pixel["surface_offset_nm"]
    depths = np.asarray(mean["depths_nm"])
    j = int(np.argmin(np.abs(depths - mean["surface_offset_nm"])))
    assert np.all(bound_mean[j:] <= mean["tolerance"]) and bound_mean[j - 1] > mean["tolerance"]
    with pytest.raises(ValueError, match="criterion"):
        _start(scene, criterion="deepest")
