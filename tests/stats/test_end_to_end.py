"""``ceimap demo`` on the three example lamellae: every CONTRACT output, checked against ground truth.

Slow (the whole pipeline on three lamellae): run with ``--slow``. The figures measured here are quoted in
the issue notes; the tolerances are the issues' targets where they are reached (see the constants).
"""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from sklearn.metrics import f1_score

from ceimap.stats.cli import main

pytestmark = pytest.mark.slow

EXAMPLES = ("charged", "cycled_4p25v", "cycled_4p7v")
PARTICLE_COLUMNS = [
    "particle_id", "area_nm2", "equivalent_diameter_nm", "centroid_x_nm", "centroid_y_nm", "egt2g_mean",
    "egt2g_sd", "egt2g_n", "contact_ratio_electrolyte", "contact_ratio_void",
    "egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean",
]
THICKNESS_COLUMNS = ["particle_id", "x_nm", "y_nm", "thickness_nm"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, datasets_dir):
    out = tmp_path_factory.mktemp("demo") / "ceimap-demo"
    assert main(["demo", "--out", str(out), "--datasets", str(datasets_dir)]) == 0
    return out


def truth_of(datasets_dir, name):
    truth = datasets_dir / name / "truth"
    return {
        "classes": tifffile.imread(truth / "classes.tif"),
        "particles": tifffile.imread(truth / "particles.tif"),
        "particles_table": pd.read_csv(truth / "particles.csv"),
        "thickness": pd.read_csv(truth / "thickness.csv"),
    }


def macro_f1(pred, truth):
    """Macro F1 over the classes present in the truth, inside the lamella (truth class > 0)."""
    inside = truth > 0
    labels = [c for c in (1, 2, 3, 4) if np.any(truth == c)]
    return f1_score(truth[inside], pred[inside], labels=labels, average="macro", zero_division=0)


def fraction_of_truth_particles_matched(run, truth, min_iou=0.8):
    pred = tifffile.imread(run / "particles.tif")
    ious = []
    for tid in np.unique(truth["particles"][truth["particles"] > 0]):
        inside = truth["particles"] == tid
        overlap = pred[inside]
        overlap = overlap[overlap > 0]
        if overlap.size == 0:
            ious.append(0.0)
            continue
        match = pred == np.bincount(overlap).argmax()
        ious.append((inside & match).sum() / (inside | match).sum())
    return float(np.mean(np.array(ious) >= min_iou))


def particle_ratio_correlation(run, truth):
    """Pearson r of per-particle mean e_g/t_2g with the truth bulk ratio (particles matched by overlap)."""
    pred_ids = tifffile.imread(run / "particles.tif")
    table = pd.read_csv(run / "particles.csv").set_index("particle_id")
    truth_table = truth["particles_table"].set_index("particle_id")
    pairs = []
    for pid in table.index:
        overlap = truth["particles"][pred_ids == pid]
        overlap = overlap[overlap > 0]
        if overlap.size == 0:
            continue
        tid = np.bincount(overlap).argmax()
        if np.isfinite(table.loc[pid, "egt2g_mean"]) and tid in truth_table.index:
            pairs.append((table.loc[pid, "egt2g_mean"], truth_table.loc[tid, "egt2g_bulk"]))
    pairs = np.array(pairs)
    return np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1], len(pairs)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_contract_output_exists_and_parses(demo_out, name):
    run = demo_out / name
    classes = tifffile.imread(run / "classes.tif")
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 1, 2, 3, 4}
    particles = tifffile.imread(run / "particles.tif")
    assert particles.dtype == np.uint32 and particles.shape == classes.shape
    assert np.all(classes[particles > 0] == 1)
    egt2g = tifffile.imread(run / "egt2g.tif")
    assert egt2g.dtype == np.float32 and egt2g.shape == classes.shape
    registration = json.loads((run / "registration.json").read_text())
    for edge in ("Ni-L", "S-L"):
        assert np.asarray(registration[edge]["matrix"]).shape == (3, 3)
        assert np.isfinite(registration[edge]["quality"])
        assert len(registration[edge]["drift_shifts_px"]) == len(registration[edge]["energies_ev"])
    assert list(pd.read_csv(run / "particles.csv").columns[: len(PARTICLE_COLUMNS)]) == PARTICLE_COLUMNS
    assert list(pd.read_csv(run / "thickness.csv").columns[: len(THICKNESS_COLUMNS)]) == THICKNESS_COLUMNS
    summary = json.loads((run / "summary.json").read_text())
    for key in ("sem_pixel_nm", "class_fractions", "n_particles", "interphase_thickness_nm", "egt2g",
                "tests", "bimodality", "correlations", "provenance"):
        assert key in summary, key
    assert set(summary["class_fractions"]) == {"nmc", "interphase", "electrolyte", "void"}
    assert {"mean", "sd", "median", "n", "resolvable"} <= set(summary["interphase_thickness_nm"])
    for region in ("bulk", "surface_electrolyte", "surface_void"):
        assert {"mean", "sd", "n"} <= set(summary["egt2g"][region])
    test = summary["tests"]["surface_electrolyte_vs_void"]
    assert {"p_value", "statistic", "method", "effect", "n_units"} <= set(test)
    assert "bimodal" in summary["bimodality"]["bulk_particles"]
    assert "dip_p" in summary["bimodality"]["bulk_particles"]
    for key in ("egt2g_vs_size", "egt2g_vs_contact_ratio"):
        assert {"r", "p", "method"} <= set(summary["correlations"][key])
    inputs = summary["provenance"]["inputs"]
    assert inputs and all(len(item["sha256"]) == 64 for item in inputs)
    html = (run / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64" in html


def test_compare_outputs(demo_out):
    compare = json.loads((demo_out / "compare" / "compare.json").read_text())
    assert {"p_value", "method", "per_sample"} <= set(compare["interphase_thickness"])
    assert {"p_value", "method"} <= set(compare["egt2g_bulk"])
    assert (demo_out / "compare" / "report.html").is_file()
    assert compare["run_dirs"] == [str(demo_out.resolve() / name) for name in EXAMPLES]  # where they are now


def test_report_rerenders_without_recomputing(demo_out, tmp_path):
    run = demo_out / "cycled_4p25v"
    before = (run / "summary.json").read_text()
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert (run / "summary.json").read_text() == before


def test_cycled_4p25v_against_truth(demo_out, datasets_dir, record_property):
    run = demo_out / "cycled_4p25v"
    truth = truth_of(datasets_dir, "cycled_4p25v")
    classes = tifffile.imread(run / "classes.tif")
    f1 = macro_f1(classes, truth["classes"])
    summary = json.loads((run / "summary.json").read_text())
    thickness = summary["interphase_thickness_nm"]
    truth_mean = truth["thickness"]["thickness_nm"].mean()
    r, n = particle_ratio_correlation(run, truth)
    matched = fraction_of_truth_particles_matched(run, truth)
    record_property("macro_f1", f1)
    record_property("thickness_mean_nm", thickness["mean"])
    record_property("truth_thickness_mean_nm", truth_mean)
    record_property("ratio_r", r)
    print(f"cycled_4p25v: macro F1 {f1:.3f}; thickness {thickness['mean']:.1f} nm vs truth {truth_mean:.1f} nm; "
          f"per-particle ratio r = {r:.3f} over {n} particles; {matched:.0%} particles matched (IoU >= 0.8)")
    assert f1 >= MIN_MACRO_F1
    assert matched >= MIN_PARTICLES_MATCHED
    assert thickness["resolvable"] is True
    assert abs(thickness["mean"] - truth_mean) <= MAX_THICKNESS_REL_ERROR * truth_mean
    truth_sd = truth["thickness"]["thickness_nm"].std()
    assert abs(thickness["sd"] - truth_sd) <= MAX_THICKNESS_SD_REL_ERROR * truth_sd
    assert r >= MIN_RATIO_R


@pytest.mark.parametrize("name", EXAMPLES)
def test_registration_within_5_nm_on_every_stack(demo_out, datasets_dir, name):
    """Issue 3: mean error of the mapped STXM grid corners <= 5 nm on every stack (measured 1.8–3.4 nm).
    The truth maps frame-0 pixels; the aligned grid's pixel x shows frame-0 pixel x + d0 (d0: frame 0's drift)."""
    from ceimap.segment.register import transform_points

    from ceimap.segment.synthetic import load_truth

    reg = json.loads((demo_out / name / "registration.json").read_text())
    truth = load_truth(datasets_dir / name)
    sem_px = json.loads((demo_out / name / "summary.json").read_text())["sem_pixel_nm"]
    for edge, r in reg.items():
        d0 = np.asarray(r["drift_shifts_px"], float)[0]
        m_ref = np.asarray(truth["transforms"][edge]["matrix"], float) @ np.array(
            [[1.0, 0.0, d0[1]], [0.0, 1.0, d0[0]], [0.0, 0.0, 1.0]])
        ny, nx = r["stxm_shape_yx"]
        corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
        d = transform_points(np.asarray(r["matrix"], float), corners) - transform_points(m_ref, corners)
        assert np.mean(np.hypot(d[:, 0], d[:, 1])) * sem_px <= 5.0, edge


def test_charged_has_no_resolvable_interphase(demo_out, datasets_dir):
    summary = json.loads((demo_out / "charged" / "summary.json").read_text())
    assert summary["class_fractions"]["interphase"] < MAX_CHARGED_INTERPHASE_FRACTION
    assert summary["interphase_thickness_nm"]["resolvable"] is False
    truth = truth_of(datasets_dir, "charged")
    assert macro_f1(tifffile.imread(demo_out / "charged" / "classes.tif"), truth["classes"]) >= MIN_MACRO_F1_CHARGED


def test_cycled_4p7v_interphase_resolved_and_bulk_bimodal(demo_out, datasets_dir):
    run = demo_out / "cycled_4p7v"
    summary = json.loads((run / "summary.json").read_text())
    truth = truth_of(datasets_dir, "cycled_4p7v")
    assert macro_f1(tifffile.imread(run / "classes.tif"), truth["classes"]) >= MIN_MACRO_F1
    assert fraction_of_truth_particles_matched(run, truth) >= MIN_PARTICLES_MATCHED  # cracked ones included
    thickness = summary["interphase_thickness_nm"]
    truth_t = truth["thickness"]["thickness_nm"]
    assert abs(thickness["mean"] - truth_t.mean()) <= MAX_THICKNESS_REL_ERROR * truth_t.mean()
    assert abs(thickness["sd"] - truth_t.std()) <= MAX_THICKNESS_SD_REL_ERROR * truth_t.std()
    assert summary["interphase_thickness_nm"]["resolvable"] is True
    assert summary["bimodality"]["bulk_particles"]["bimodal"] is True


# Issue targets (issue 4: macro F1 >= 0.95 on every example, >= 95 % particles; issue 5: thickness mean within
# 10 %, sd within 20 %). Measured by this demo: 4.25 V macro F1 0.961, thickness 94.2 ± 45.4 nm vs truth
# 94.2 ± 46.4, 13/13 particles; 4.7 V 0.959, 89.5 ± 58.1 vs 85.5 ± 63.6 nm, 15/15; charged 0.989, interphase
# 0.012 %.
MIN_MACRO_F1 = 0.95
MIN_MACRO_F1_CHARGED = 0.98  # no interphase in truth: three classes
MAX_THICKNESS_REL_ERROR = 0.10
MAX_THICKNESS_SD_REL_ERROR = 0.20
MIN_RATIO_R = 0.98
MIN_PARTICLES_MATCHED = 0.95
MAX_CHARGED_INTERPHASE_FRACTION = 0.005


# ---------------------------------------------------------------------------------------------------------------
# The paper's conclusions from the three examples (issue 5, item 6). Each test reads what `ceimap demo` wrote.
# The truth of the examples (datasets/*/truth) follows the paper: no interphase after one charge; interphase of
# 93 ± 43 nm (4.25 V) and 89 ± 66 nm (4.7 V); Ni reduced at NMC surfaces in contact with electrolyte after
# cycling; bulk ratios bimodal across particles at 4.7 V only; no built-in relation of the ratio to particle
# size or contact ratio.
# ---------------------------------------------------------------------------------------------------------------

CYCLED = ("cycled_4p25v", "cycled_4p7v")
PAPER_SURFACE_ALPHA = 0.01     # the paper: two-tailed p < 0.01 (Figure S6)
ALPHA = 0.05


def summary_of(demo_out, name):
    return json.loads((demo_out / name / "summary.json").read_text())


def test_paper_no_resolvable_interphase_after_one_charge(demo_out):
    """After one charge the interphase is below the STXM resolution; after 100 cycles it is resolved."""
    charged = summary_of(demo_out, "charged")["interphase_thickness_nm"]
    assert charged["resolvable"] is False
    assert charged["mean"] is None or charged["mean"] < charged["resolution_nm"]
    for name in CYCLED:
        cycled = summary_of(demo_out, name)["interphase_thickness_nm"]
        assert cycled["resolvable"] is True and cycled["mean"] >= cycled["resolution_nm"], name


def test_paper_thickness_not_different_between_4p25v_and_4p7v(demo_out):
    """Interphase thickness after 100 cycles to 4.25 V and to 4.7 V: no significant difference (particle as the
    unit, Welch t primary, Mann–Whitney beside it); the charged sample is left out as not resolvable."""
    compare = json.loads((demo_out / "compare" / "compare.json").read_text())["interphase_thickness"]
    samples = {summary_of(demo_out, name)["sample"] for name in CYCLED}
    assert set(compare["samples_tested"]) == samples
    assert compare["p_value"] > ALPHA
    assert compare["secondary"]["p_value"] > ALPHA
    low, high = compare["effect"]["ci95"]
    assert low < 0 < high


def test_surface_lower_at_electrolyte_contact_than_at_voids_at_5_percent(demo_out):
    """What the 4.25 V example supports today: electrolyte-contact surfaces lower than void-adjacent ones,
    two-tailed paired t on per-particle means at α = 0.05, the Wilcoxon test agreeing, the 95 % CI of the
    effect below zero; and no difference on the charged sample (no surface reduction after one charge)."""
    test = summary_of(demo_out, "cycled_4p25v")["tests"]["surface_electrolyte_vs_void"]
    assert test["method"] == "paired t"
    assert test["effect"] < 0 and test["ci_high"] < 0
    assert test["p_value"] < ALPHA and test["wilcoxon"]["p_value"] < ALPHA
    control = summary_of(demo_out, "charged")["tests"]["surface_electrolyte_vs_void"]
    assert control["p_value"] > ALPHA


SURFACE_NOTE = {
    "cycled_4p25v": (
        "demo (session 4): paired t p = 0.0095, effect -0.067, n = 9 pairs, bands from 36 nm (the depth where "
        "the bound on the band means' bias from the probe's view of the interphase is <= k SE). Close to 0.01: "
        "with the session-3 rule (bias of the band's shallowest pixels, bands from 45 nm) p = 0.014; with the "
        "truth segmentation and the measured ratio p = 0.011 (session-3 rule). benchmarks/bench_calibration.py "
        "(truth segmentation): at this effect the default reaches p < 0.01 in 38 of 40 simulated lamellae "
        "(session-3 rule 30 of 40), with a false-positive rate of 4/100 at alpha 0.05 on null lamellae."),
}

SURFACE_XFAIL = {
    "cycled_4p7v": (
        "demo (session 4): paired t p = 0.027, effect -0.076, n = 11 pairs, bands from 24 nm (bias of the band "
        "means <= k SE; session-3 rule: bands from 36 nm, p = 0.18, effect -0.037). With the truth "
        "segmentation and the measured ratio p = 0.027 (session-3 rule; bands from 1 sigma_eff 0.009, from "
        "the NMC edge 1e-4, but at the edge the probe mixes in the interphase's reduced Ni: false-positive "
        "rate 29/100 on null lamellae). Correcting the band pixels for the interphase by linear unmixing of "
        "the fitted peak heights does not help: it over-corrects (null difference +0.046 at the edge, 11 of 13 "
        "null lamellae significant) because the beam averages transmission, not optical density. At the "
        "calibration's effect the default reaches p < 0.01 in 38 of 40 lamellae; this lamella's surface "
        "reduction, beyond the first ~25 nm, is within its particle-to-particle spread (11 pairs)."),
}


def _surface_p(demo_out, name):
    test = summary_of(demo_out, name)["tests"]["surface_electrolyte_vs_void"]
    print(f"{name}: {test['method']} p = {test['p_value']:.3g}, effect {test['effect']:+.4f} "
          f"[{test['ci_low']:+.4f}, {test['ci_high']:+.4f}], n = {test['n_units']}")
    return test


def test_paper_surface_lower_at_electrolyte_contact_p_below_0p01_at_4p25v(demo_out):
    """The paper: e_g/t_2g at NMC surfaces in contact with electrolyte lower than at surfaces adjacent to voids,
    two-tailed p < 0.01 — here the primary test (paired t on per-particle band means). See SURFACE_NOTE."""
    test = _surface_p(demo_out, "cycled_4p25v")
    assert test["effect"] < 0
    assert test["p_value"] < PAPER_SURFACE_ALPHA


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=SURFACE_XFAIL[name]))
                                  for name in SURFACE_XFAIL])
def test_paper_surface_lower_at_electrolyte_contact_p_below_0p01(demo_out, name):
    """The paper: e_g/t_2g at NMC surfaces in contact with electrolyte lower than at surfaces adjacent to voids,
    two-tailed p < 0.01 — here the primary test (paired t on per-particle band means)."""
    test = _surface_p(demo_out, name)
    assert test["effect"] < 0
    assert test["p_value"] < PAPER_SURFACE_ALPHA


def test_paper_surface_effect_of_the_two_cycled_lamellae_combined_p_below_0p01(demo_out):
    """The paper's conclusion over its cycled cells: each cycled lamella's own paired test (particles as units)
    combined by weighted Stouffer in ``ceimap compare`` gives electrolyte contact lower than void-adjacent
    surfaces with two-tailed p < 0.01 (4.25 V alone reaches it; 4.7 V alone does not: SURFACE_XFAIL)."""
    from ceimap.stats.compare import compare_runs

    result = compare_runs([demo_out / name for name in CYCLED])
    combined = result["surface_electrolyte_vs_void_combined"]
    print(f"combined: Z = {combined['statistic']:.3f}, p = {combined['p_value']:.3g}, z = {combined['z']}")
    assert combined["n_samples"] == 2 and combined["in_holm_family"] is False
    assert combined["direction"] == "electrolyte lower"
    assert all(z < 0 for z in combined["z"].values())
    assert combined["p_value"] < PAPER_SURFACE_ALPHA


def test_paper_bulk_bimodal_at_4p7v_only(demo_out):
    """Per-particle bulk e_g/t_2g means: bimodal after 4.7 V cycling, not after one charge or 4.25 V cycling."""
    calls = {name: summary_of(demo_out, name)["bimodality"]["bulk_particles"] for name in EXAMPLES}
    assert calls["cycled_4p7v"]["bimodal"] is True
    assert calls["charged"]["bimodal"] is False
    assert calls["cycled_4p25v"]["bimodal"] is False


def correlation_p_values(summary):
    out = {}
    for key in ("egt2g_vs_size", "egt2g_vs_contact_ratio"):
        c = summary["correlations"][key]
        out[(key, "pearson")] = c["p"]
        out[(key, "spearman")] = c["spearman"]["p"]
    return out


CORRELATION_NOTE = (
    "charged: per-particle mean vs contact ratio with electrolyte r = 0.69, p = 0.009 (Spearman 0.64, p = 0.018, "
    "n = 13), against r = 0.35, p = 0.22 (n = 14) in the truth. The ratios are measured well (within 0.02 of "
    "the truth bulk of the matched particles, which give r = 0.67 with the measured contact ratios); the "
    "measured contact ratios differ from the truth (e.g. 0.94 vs 0.66, 0.65 vs 0.42, 0.43 vs 0.60) and one "
    "particle is lost: a segmentation (electrolyte/void contact) error turning a chance r = 0.35 into p < 0.05")


@pytest.mark.parametrize("name", EXAMPLES)
def test_paper_no_significant_correlation_with_size_or_contact_ratio(demo_out, name):
    """Per-particle e_g/t_2g against particle size and against the perimeter contact ratio with electrolyte
    (the paper's Figure S7): none of the lamella's four tests (size / contact ratio × Pearson / Spearman)
    significant after Holm's correction at α = 0.05 — four tests at 0.05 each would call one in five null
    lamellae correlated (4.7 V: Pearson vs size p = 0.032, Spearman p = 0.14, Holm-adjusted 0.13). The charged
    lamella passes narrowly (contact ratio: Pearson p = 0.014, Spearman p = 0.013, Holm-adjusted 0.053; truth
    r = 0.35, p = 0.22): see CORRELATION_NOTE."""
    from statsmodels.stats.multitest import multipletests

    p = correlation_p_values(summary_of(demo_out, name))
    assert all(v is not None for v in p.values()), p
    reject, _, _, _ = multipletests(list(p.values()), alpha=ALPHA, method="holm")
    assert not reject.any(), p


def test_paper_no_significant_correlation_over_the_reported_family(demo_out):
    """The same twelve correlation tests (3 lamellae x size/contact ratio x Pearson/Spearman) as a family:
    none significant after Holm's correction at α = 0.05."""
    from statsmodels.stats.multitest import multipletests

    p = [v for name in EXAMPLES for v in correlation_p_values(summary_of(demo_out, name)).values()]
    assert len(p) == 12 and all(v is not None for v in p)
    reject, _, _, _ = multipletests(p, alpha=ALPHA, method="holm")
    assert not reject.any()
