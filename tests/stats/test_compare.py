"""Tests of stats.compare: between-sample statistics with the particle as the unit."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ceimap.segment.errors import CeimapInputError
from ceimap.stats.compare import compare_runs, location_test, spread_test, write_compare

# evenly spaced standard-normal quantiles: deterministic samples with exactly known shape
Z10 = st.norm.ppf((np.arange(10) + 0.5) / 10)


def make_run(out, sample, bulk_means, thickness_means, *, pixels_per_particle=40, pixel_sd=0.02,
             resolvable=True, with_pixels=True, name=None):
    """A run folder with what compare reads: summary.json, thickness.csv, pixels.csv, particles.csv."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(len(bulk_means))
    pix, th, parts = [], [], []
    for i, (m, t) in enumerate(zip(bulk_means, thickness_means), start=1):
        vals = m + pixel_sd * rng.standard_normal(pixels_per_particle)
        for k, v in enumerate(vals):
            pix.append((k, i, i, "bulk", v, 0.05))
        for k in range(6):
            pix.append((k, 100 + i, i, "surface_electrolyte", m - 0.2 + pixel_sd * rng.standard_normal(), 0.05))
            pix.append((k, 200 + i, i, "surface_void", m + pixel_sd * rng.standard_normal(), 0.05))
        for k in range(15):
            th.append((i, 10.0 * k, 10.0 * i, t + 5 * rng.standard_normal()))
        parts.append({"particle_id": i, "egt2g_mean": float(np.mean(vals)), "egt2g_sd": float(np.std(vals)),
                      "egt2g_surface_electrolyte_mean": m - 0.2, "egt2g_surface_void_mean": m})
    if with_pixels:
        pd.DataFrame(pix, columns=["x", "y", "particle_id", "region", "egt2g", "egt2g_sigma"]).to_csv(
            out / "pixels.csv", index=False)
    pd.DataFrame(th, columns=["particle_id", "x_nm", "y_nm", "thickness_nm"]).to_csv(out / "thickness.csv",
                                                                                    index=False)
    pd.DataFrame(parts).to_csv(out / "particles.csv", index=False)
    summary = {"sample": sample, "n_particles": len(bulk_means), "sem_pixel_nm": 10.0,
               "interphase_thickness_nm": {"mean": float(np.mean(thickness_means)), "sd": 1.0,
                                           "median": 1.0, "n": 15 * len(bulk_means), "resolvable": resolvable},
               "bimodality": {"bulk_particles": {"bimodal": False, "dip_p": 0.8}}}
    if name:
        summary["name"] = name
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_clearly_different_samples_give_small_p_and_contract_keys(tmp_path):
    a = make_run(tmp_path / "a", "100 cycles to 4.25 V", 1.5 + 0.05 * Z10, 90 + 10 * Z10)
    b = make_run(tmp_path / "b", "100 cycles to 4.7 V", 1.9 + 0.05 * Z10, 150 + 10 * Z10)
    res = compare_runs([a, b])
    assert res["samples"] == ["100 cycles to 4.25 V", "100 cycles to 4.7 V"]
    th = res["interphase_thickness"]
    assert th["method"] == "Welch t test"
    assert th["p_value"] < 1e-6
    assert set(th["per_sample"]) == set(res["samples"])
    for v in th["per_sample"].values():
        assert {"mean", "sd", "n_units"} <= set(v)
        assert v["n_units"] == 10  # the particle is the unit
    # per-particle means of 15 points around 90 + 10 z: mean of means within noise of 90
    assert th["per_sample"]["100 cycles to 4.25 V"]["mean"] == pytest.approx(90, abs=2)
    assert th["effect"]["difference"] == pytest.approx(60, abs=3)
    lo, hi = th["effect"]["ci95"]
    assert lo < 60 < hi
    bulk = res["egt2g_bulk"]
    assert {"p_value", "method", "location", "spread"} <= set(bulk)
    assert bulk["p_value"] < 1e-6 and bulk["method"] == "Welch t test"
    assert bulk["per_sample"]["100 cycles to 4.7 V"]["mean"] == pytest.approx(1.9, abs=0.01)
    assert bulk["spread"]["method"].startswith("Brown-Forsythe")
    assert res["egt2g_bulk_spread"]["p_value"] > 0.5  # same spread of particle means
    # Holm: adjusted p never below the raw p, family lists the tests
    fam = res["multiple_comparisons"]
    assert fam["method"] == "Holm" and "interphase_thickness" in fam["tests"]
    for key in fam["tests"]:
        assert res[key]["p_holm"] >= res[key]["p_value"]
    json.dumps(res, allow_nan=False)  # strict JSON


def test_same_distribution_is_not_significant_although_pixel_test_would_be(tmp_path):
    # particles differ a lot from each other (sd 0.15), little within (0.02); the samples share the
    # particle distribution up to 0.03: a pixel-level test calls this a difference, the particle-level must not
    means = 1.6 + 0.15 * Z10
    a = make_run(tmp_path / "a", "A", means, 90 + 10 * Z10, pixels_per_particle=200)
    b = make_run(tmp_path / "b", "B", means[::-1] + 0.03, 90 + 10 * Z10[::-1], pixels_per_particle=200)
    res = compare_runs([a, b])
    pa = pd.read_csv(a / "pixels.csv").query("region == 'bulk'")["egt2g"]
    pb = pd.read_csv(b / "pixels.csv").query("region == 'bulk'")["egt2g"]
    assert st.ttest_ind(pa, pb, equal_var=False).pvalue < 1e-4  # the naive pixel-level test
    assert res["egt2g_bulk"]["p_value"] > 0.3
    assert res["egt2g_bulk"]["location"]["secondary"]["p_value"] > 0.3  # Mann-Whitney too
    assert res["interphase_thickness"]["p_value"] > 0.3
    assert res["egt2g_bulk_spread"]["p_value"] > 0.5


def test_spread_difference_is_found_by_brown_forsythe(tmp_path):
    a = make_run(tmp_path / "a", "narrow", 1.6 + 0.05 * Z10, 90 + 10 * Z10)
    b = make_run(tmp_path / "b", "broad", 1.6 + 0.30 * Z10, 90 + 10 * Z10)
    res = compare_runs([a, b])
    assert res["egt2g_bulk_spread"]["p_value"] < 0.01
    assert res["egt2g_bulk"]["spread"]["p_value"] == res["egt2g_bulk_spread"]["p_value"]
    assert res["egt2g_bulk"]["p_value"] > 0.9  # same centre


def test_three_samples_use_anova_and_tukey(tmp_path):
    dirs = [make_run(tmp_path / n, n, m + 0.05 * Z10, t + 10 * Z10)
            for n, m, t in (("s1", 1.5, 90), ("s2", 1.5, 90), ("s3", 2.0, 150))]
    res = compare_runs(dirs)
    bulk = res["egt2g_bulk"]["location"]
    assert bulk["method"] == "Welch one-way ANOVA" and bulk["p_value"] < 1e-6
    assert bulk["secondary"]["method"] == "Kruskal-Wallis H"
    pairs = {(p["a"], p["b"]): p for p in bulk["pairwise"]["pairs"]}
    assert len(pairs) == 3
    assert not pairs[("s1", "s2")]["reject"] and pairs[("s1", "s3")]["reject"] and pairs[("s2", "s3")]["reject"]
    assert pairs[("s1", "s3")]["difference"] == pytest.approx(0.5, abs=0.02)
    assert res["interphase_thickness"]["method"] == "Welch one-way ANOVA"


def test_unresolvable_sample_is_left_out_of_thickness_test_and_names(tmp_path):
    c = make_run(tmp_path / "charged", "charged", 1.7 + 0.05 * Z10, 20 + 2 * Z10, resolvable=False)
    a = make_run(tmp_path / "run_a", "cycled", 1.5 + 0.05 * Z10, 90 + 10 * Z10)
    b = make_run(tmp_path / "run_b", "cycled", 1.5 + 0.05 * Z10, 92 + 10 * Z10)
    res = compare_runs([c, a, b])
    assert res["samples"] == ["charged", "cycled (run_a)", "cycled (run_b)"]
    th = res["interphase_thickness"]
    assert "charged" in th["excluded"] and "not resolvable" in th["excluded"]["charged"]
    assert th["samples_tested"] == ["cycled (run_a)", "cycled (run_b)"]
    assert th["method"] == "Welch t test"
    assert th["per_sample"]["charged"]["resolvable"] is False
    res2 = compare_runs([a, b], names=["x", "y"])
    assert res2["samples"] == ["x", "y"]
    with pytest.raises(CeimapInputError, match="at least two"):
        compare_runs([a])
    with pytest.raises(CeimapInputError, match="no summary.json"):
        compare_runs([a, tmp_path])
    with pytest.raises(CeimapInputError, match="unique"):
        compare_runs([a, b], names=["x", "x"])


def test_falls_back_to_particles_csv_without_pixel_table(tmp_path):
    a = make_run(tmp_path / "a", "A", 1.5 + 0.05 * Z10, 90 + 10 * Z10, with_pixels=False)
    b = make_run(tmp_path / "b", "B", 1.9 + 0.05 * Z10, 90 + 10 * Z10, with_pixels=False)
    res = compare_runs([a, b])
    assert res["egt2g_bulk"]["p_value"] < 1e-6
    assert res["per_sample_summary"]["A"]["sources"]["egt2g_bulk"] == "particles.csv:egt2g_mean"
    assert res["egt2g_surface_electrolyte"]["per_sample"]["A"]["n_units"] == 10


def test_location_and_spread_tests_not_testable_cases():
    r = location_test({"a": [1.0], "b": [2.0, 2.1]})
    assert r["p_value"] is None and "not testable" in r["method"] and "a" in r["excluded"]
    r = spread_test({"a": [1.0, 1.2, 0.9], "b": []})
    assert r["p_value"] is None
    # Welch t agrees with scipy
    x, y = [1.0, 1.2, 0.9, 1.1], [1.5, 1.7, 1.4, 1.9, 1.6]
    r = location_test({"x": x, "y": y})
    assert r["p_value"] == pytest.approx(st.ttest_ind(y, x, equal_var=False).pvalue)
    assert r["effect"]["difference"] == pytest.approx(np.mean(y) - np.mean(x))


def test_write_compare_writes_json_and_report(tmp_path):
    a = make_run(tmp_path / "a", "100 cycles to 4.25 V", 1.5 + 0.05 * Z10, 90 + 10 * Z10)
    b = make_run(tmp_path / "b", "100 cycles to 4.7 V", 1.6 + 0.2 * Z10, 95 + 30 * Z10)
    html_path = write_compare([a, b], tmp_path / "cmp")
    assert html_path == tmp_path / "cmp" / "report.html"
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {"interphase_thickness", "egt2g_bulk"} <= set(data)
    text = html_path.read_text(encoding="utf-8")
    assert "Tests between samples" in text and "Welch t test" in text and "Holm" in text
    assert "Bulk e<sub>g</sub>/t<sub>2g</sub> (location): <b>no significant difference</b>" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2
    assert not re.search(r'(src|href)="(https?:|//)', text)
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.json", "report.html"]
