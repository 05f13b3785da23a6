"""Particle-level tests: agreement with scipy, calibration on nulls, pseudo-replication, small samples."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ceimap.stats.inference import (combined_surface_test, correlation, correlations, edge_shift, holm_correlations, naive_pixel_test, paired_t,
                             pixel_mixed_model, surface_electrolyte_vs_void, welch_t, wilcoxon_signed_rank)


def particle_means(rng, n=12, effect=0.0, base_sd=0.1, band_sd=0.02):
    base = 1.5 + rng.normal(0, base_sd, n)
    return pd.DataFrame({"particle_id": np.arange(1, n + 1),
                         "egt2g_surface_electrolyte_mean": base + effect + rng.normal(0, band_sd, n),
                         "egt2g_surface_void_mean": base + rng.normal(0, band_sd, n),
                         "egt2g_surface_electrolyte_n": 20, "egt2g_surface_void_n": 20})


def test_paired_and_welch_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.5, 0.1, 9), rng.normal(1.45, 0.1, 9)
    p = paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    assert p["statistic"] == pytest.approx(ref.statistic) and p["p_value"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert p["effect"] == pytest.approx(np.mean(a - b))
    w = welch_t(a, b[:6])
    ref = stats.ttest_ind(a, b[:6], equal_var=False)
    assert w["statistic"] == pytest.approx(ref.statistic) and w["p_value"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high))
    wil = wilcoxon_signed_rank(a, b)
    assert wil["p_value"] == pytest.approx(stats.wilcoxon(a - b).pvalue)


def test_effect_is_detected_with_the_right_sign():
    res = surface_electrolyte_vs_void(particle_means(np.random.default_rng(1), effect=-0.08))
    assert res["method"] == "paired t" and res["n_units"] == 12 and res["n_pairs"] == 12
    assert res["p_value"] < 0.001 and res["wilcoxon"]["p_value"] < 0.01
    assert res["ci_low"] < -0.08 < res["ci_high"] and res["effect"] < 0


def test_false_positive_rate_on_nulls_is_nominal():
    rng = np.random.default_rng(2)
    p = np.array([surface_electrolyte_vs_void(particle_means(rng))["p_value"] for _ in range(200)])
    assert 0.015 <= np.mean(p < 0.05) <= 0.09


def test_pseudo_replication_is_not_significant_at_the_particle_level():
    """Null on average over particles, but particles with many electrolyte-band pixels happen to sit high and
    particles with many void-band pixels low: pixels as units give a wildly significant difference."""
    rng = np.random.default_rng(3)
    rows = []
    for pid in range(1, 13):
        base = 1.5 + rng.normal(0, 0.1)
        offset = 0.04 if pid % 2 else -0.04          # particle-specific band offset, mean zero over particles
        n_e, n_v = (200, 20) if pid % 2 else (20, 200)
        for region, n, shift in (("surface_electrolyte", n_e, offset / 2), ("surface_void", n_v, -offset / 2)):
            noise = rng.normal(0, 0.02, n)
            values = base + shift + noise - noise.mean()    # band means exactly base ± offset/2
            rows += [{"particle_id": pid, "region": region, "egt2g": v} for v in values]
    pixels = pd.DataFrame(rows)
    table = (pixels.groupby(["particle_id", "region"])["egt2g"].agg(["mean", "size"]).unstack("region"))
    table = pd.DataFrame({"particle_id": table.index,
                          "egt2g_surface_electrolyte_mean": table[("mean", "surface_electrolyte")].to_numpy(),
                          "egt2g_surface_void_mean": table[("mean", "surface_void")].to_numpy(),
                          "egt2g_surface_electrolyte_n": table[("size", "surface_electrolyte")].to_numpy(),
                          "egt2g_surface_void_n": table[("size", "surface_void")].to_numpy()})
    ours = surface_electrolyte_vs_void(table)
    naive = naive_pixel_test(pixels)
    assert naive["p_value"] < 1e-10
    assert ours["p_value"] > 0.5 and abs(ours["effect"]) < 1e-9
    mixed = pixel_mixed_model(pixels)
    assert mixed["n_groups"] == 12 and mixed["n_pixels"] == len(pixels)
    assert np.isfinite(mixed["effect"]) and mixed["p_value"] > naive["p_value"]


def test_unpaired_fallback_and_small_samples():
    t = particle_means(np.random.default_rng(4), n=6, effect=-0.1)
    t.loc[:2, "egt2g_surface_void_mean"] = np.nan
    t.loc[3:, "egt2g_surface_electrolyte_mean"] = np.nan
    res = surface_electrolyte_vs_void(t)
    assert res["method"] == "Welch t" and res["n_pairs"] == 0 and res["n_units"] == 6
    assert "unpaired" in res["reason"]
    one = surface_electrolyte_vs_void(t.iloc[:1])
    assert np.isnan(one["p_value"]) and one["method"] == "none" and "too few" in one["reason"]
    empty = surface_electrolyte_vs_void(t.iloc[:0])
    assert np.isnan(empty["p_value"]) and empty["n_units"] == 0


def test_min_pixels_drops_thin_bands():
    t = particle_means(np.random.default_rng(5))
    t.loc[:5, "egt2g_surface_void_n"] = 2
    res = surface_electrolyte_vs_void(t, min_pixels=3)
    assert res["n_pairs"] == 6


def test_correlation_values_and_intervals():
    rng = np.random.default_rng(6)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(scale=0.8, size=30)
    c = correlation(x, y)
    r, p = stats.pearsonr(x, y)
    assert c["r"] == pytest.approx(r) and c["p"] == pytest.approx(p)
    z, se = np.arctanh(r), 1 / np.sqrt(27)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((np.tanh(z - 1.959964 * se), np.tanh(z + 1.959964 * se)))
    assert c["spearman"]["rho"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert c["spearman"]["ci_low"] < c["spearman"]["rho"] < c["spearman"]["ci_high"]
    few = correlation([1.0, 2.0], [2.0, 1.0])
    assert np.isnan(few["r"]) and "at least 3" in few["reason"]
    const = correlation([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0])
    assert np.isnan(const["r"]) and "constant" in const["reason"]


def test_correlations_on_a_particle_table():
    rng = np.random.default_rng(7)
    t = pd.DataFrame({"egt2g_mean": rng.normal(1.5, 0.1, 12), "equivalent_diameter_nm": rng.uniform(500, 2000, 12),
                      "contact_ratio_electrolyte": rng.uniform(0, 1, 12)})
    out = correlations(t)
    assert set(out) == {"egt2g_vs_size", "egt2g_vs_contact_ratio"}
    assert out["egt2g_vs_size"]["r"] == pytest.approx(stats.pearsonr(t.equivalent_diameter_nm, t.egt2g_mean)[0])
    assert out["egt2g_vs_contact_ratio"]["n"] == 12 and out["egt2g_vs_contact_ratio"]["method"] == "pearson"


def test_holm_over_the_correlation_family_matches_statsmodels():
    """p_holm is Holm over the lamella's finite Pearson and Spearman p-values; raw p is kept; NaN stays out."""
    from statsmodels.stats.multitest import multipletests

    corr = {"egt2g_vs_size": {"r": 0.6, "p": 0.015, "spearman": {"rho": 0.5, "p": 0.03}},
            "egt2g_vs_contact_ratio": {"r": 0.1, "p": 0.7, "spearman": {"rho": 0.2, "p": 0.04}}}
    out = holm_correlations(corr)
    raw = [0.015, 0.03, 0.7, 0.04]
    reject, expected, _, _ = multipletests(raw, alpha=0.05, method="holm")
    got = [out["egt2g_vs_size"]["p_holm"], out["egt2g_vs_size"]["spearman"]["p_holm"],
           out["egt2g_vs_contact_ratio"]["p_holm"], out["egt2g_vs_contact_ratio"]["spearman"]["p_holm"]]
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(4 * 0.015)        # smallest of four: times 4
    assert out["egt2g_vs_size"]["p"] == 0.015 and corr["egt2g_vs_size"].get("p_holm") is None  # input untouched
    assert out["egt2g_vs_size"]["significant_holm"] is False and out["egt2g_vs_size"]["holm_family_size"] == 4
    # a raw p of 0.015 is below 0.05 but not after adjustment: exactly the reading the report must not make
    assert out["egt2g_vs_size"]["p"] < 0.05 < out["egt2g_vs_size"]["p_holm"]
    # an undefined correlation (NaN) leaves the family: the others are adjusted over two tests
    corr["egt2g_vs_contact_ratio"] = {"r": np.nan, "p": np.nan, "spearman": {"rho": np.nan, "p": np.nan}}
    out = holm_correlations(corr)
    assert out["egt2g_vs_size"]["holm_family_size"] == 2
    assert out["egt2g_vs_size"]["p_holm"] == pytest.approx(2 * 0.015)
    assert np.isnan(out["egt2g_vs_contact_ratio"]["p_holm"])
    assert out["egt2g_vs_contact_ratio"]["significant_holm"] is None


def test_edge_shift():
    r = edge_shift(163.9, 0.03, 164.1, 0.04)
    assert r["shift_ev"] == pytest.approx(0.2) and r["sigma_ev"] == pytest.approx(0.05)
    assert r["p_value"] == pytest.approx(2 * stats.norm.sf(4.0))
    assert np.isnan(edge_shift(163.9, np.nan, 164.1, 0.04)["p_value"])


def test_combined_surface_test_is_weighted_stouffer():
    """Known numbers: two samples with p = 0.05 and effects of the same sign, n = 9 and 16."""
    res = combined_surface_test({"a": {"p_value": 0.05, "effect": -0.1, "n_units": 9},
                                 "b": {"p_value": 0.05, "effect": -0.2, "n_units": 16},
                                 "c": {"p_value": None, "effect": None, "n_units": 0, "reason": "too few units"}})
    z = stats.norm.isf(0.025)
    expected = -(3 * z + 4 * z) / 5
    assert res["statistic"] == pytest.approx(expected)
    assert res["p_value"] == pytest.approx(2 * stats.norm.sf(abs(expected)))
    assert res["n_samples"] == 2 and res["n_units"] == 25 and res["direction"] == "electrolyte lower"
    assert res["excluded"] == {"c": "too few units"}
    # opposite directions cancel
    res = combined_surface_test({"a": {"p_value": 0.01, "effect": -0.1, "n_units": 9},
                                 "b": {"p_value": 0.01, "effect": 0.1, "n_units": 9}})
    assert res["statistic"] == pytest.approx(0.0, abs=1e-12) and res["p_value"] == pytest.approx(1.0)
    assert combined_surface_test({})["p_value"] is None


def test_combined_surface_test_keeps_the_false_positive_rate_of_its_parts():
    """Null simulation: per-sample paired t tests on 6-15 normal differences with mean 0, combined over 2-4
    samples; the rejection rate at 0.05 stays within the binomial 99.9 % band of 0.05 (2000 draws)."""
    rng = np.random.default_rng(5)
    n_draws, rejections = 2000, 0
    for _ in range(n_draws):
        tests = {}
        for k in range(rng.integers(2, 5)):
            d = rng.normal(0.0, rng.uniform(0.02, 0.1), rng.integers(6, 16))
            t_res = stats.ttest_1samp(d, 0.0)
            tests[k] = {"p_value": float(t_res.pvalue), "effect": float(d.mean()), "n_units": d.size}
        rejections += combined_surface_test(tests)["p_value"] < 0.05
    low, high = stats.binom.ppf([0.0005, 0.9995], n_draws, 0.05) / n_draws
    assert low <= rejections / n_draws <= high
