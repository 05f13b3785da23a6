"""Calibration of the particle-level statistics on hierarchical simulations (no images; seconds).

A lamella is simulated the way STXM pixels of NMC particles behave: every particle has its own state of
charge (a particle random effect, the spread of per-particle bulk means between particles), the ratio varies
smoothly inside a particle (an autocorrelated field along the surface, correlation length ≈ 7 STXM pixels ≈
300 nm at 40 nm pixels), and every pixel has its own fitting noise. The electrolyte- and void-adjacent surface
bands of a particle are two stretches of its perimeter. Under the null both bands follow the same law.

Pixels of one band are therefore neither independent nor exchangeable with the pixels of another particle:
a pixel-level test rejects a true null most of the time, while the paired test on per-particle band means
(ceimap's primary test) keeps its level. The full-lamella version of these figures (perfect segmentation,
measured e_g/t_2g from simulated stacks) is ``benchmarks/bench_calibration.py``.

Tolerances: with R simulations at a true rate of 0.05 the rejection count is Binomial(R, 0.05); its sd is
0.011 for R = 400. The level assertions allow 0.05 + 1.8 sd = 0.07 above and require the Wilson 95 %
interval of the observed rate to contain 0.05 (neither anti-conservative nor grossly conservative).
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.signal import lfilter

from ceimap.stats.distributions import bimodality
from ceimap.stats.inference import naive_pixel_test, surface_electrolyte_vs_void, welch_t

ALPHA = 0.05
N_NULL = 400


def wilson(k, n):
    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
    return ci.low, ci.high


def ar1(rng, n, corr_px, sd):
    """Stationary Gaussian AR(1) sequence: correlation exp(−lag / corr_px) between pixels ``lag`` apart."""
    rho = np.exp(-1.0 / corr_px)
    e = rng.normal(0.0, sd * np.sqrt(1 - rho ** 2), n)
    e[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -rho], e)


def hierarchical_lamella(rng, effect=0.0, particle_sd=0.09, field_sd=0.04, corr_px=7.0, pixel_sd=0.06):
    """Native pixels of the two surface bands of 10–16 particles, and the per-particle table of band means.

    ``pixels`` holds the pixel values of each band (arrays) and ``frame()``, the pixel table as
    :func:`ceimap.stats.regions.pixel_table` has it (built on demand: pandas is the slow part of these simulations).

    Per particle: a random effect ``N(0, particle_sd²)``, an AR(1) field along its perimeter (sd ``field_sd``,
    correlation length ``corr_px`` pixels) on which the electrolyte band (5–60 pixels) and, a gap further,
    the void band (5–60 pixels) lie; pixel noise ``N(0, pixel_sd²)``; ``effect`` added to electrolyte-band
    pixels. One particle in eight has only one of the bands (they enter no paired test).
    """
    n_particles = int(rng.integers(10, 17))
    ids, regions, values = [], [], []
    means = np.full((n_particles, 2), np.nan)
    counts = np.zeros((n_particles, 2), int)
    for k in range(n_particles):
        base = 1.85 + rng.normal(0.0, particle_sd)
        n_e, n_v, gap = (int(v) for v in rng.integers(5, 61, 3))
        if rng.random() < 1 / 8:
            n_e, n_v = (n_e, 0) if rng.random() < 0.5 else (0, n_v)
        field = ar1(rng, n_e + gap + n_v, corr_px, field_sd)
        v = base + field + rng.normal(0.0, pixel_sd, field.size)
        v[:n_e] += effect
        for j, (band, name) in enumerate(((v[:n_e], "surface_electrolyte"), (v[n_e + gap:], "surface_void"))):
            if band.size:
                means[k, j], counts[k, j] = band.mean(), band.size
                ids.append(np.full(band.size, k + 1))
                regions.append(np.full(band.size, name, dtype=object))
                values.append(band)
    regions, values = np.concatenate(regions), np.concatenate(values)
    pixels = {"surface_electrolyte": values[regions == "surface_electrolyte"],
              "surface_void": values[regions == "surface_void"],
              "frame": lambda: pd.DataFrame({"particle_id": np.concatenate(ids), "region": regions,
                                             "egt2g": values})}
    table = pd.DataFrame({"particle_id": np.arange(1, n_particles + 1),
                          "egt2g_surface_electrolyte_mean": means[:, 0], "egt2g_surface_void_mean": means[:, 1],
                          "egt2g_surface_electrolyte_n": counts[:, 0], "egt2g_surface_void_n": counts[:, 1]})
    return pixels, table


@pytest.fixture(scope="module")
def null_p_values():
    rng = np.random.default_rng(20260)
    ours, naive, methods = [], [], []
    for _ in range(N_NULL):
        pixels, table = hierarchical_lamella(rng)
        res = surface_electrolyte_vs_void(table)
        ours.append(res["p_value"])
        methods.append(res["method"])
        # naive_pixel_test(pixels["frame"]()) is this Welch test over the pixels of the two bands
        naive.append(welch_t(pixels["surface_electrolyte"], pixels["surface_void"])["p_value"])
    return np.array(ours), np.array(naive), methods


def test_particle_level_test_holds_its_level(null_p_values):
    ours, _, methods = null_p_values
    assert set(methods) == {"paired t"}
    k = int(np.sum(ours < ALPHA))
    lo, hi = wilson(k, N_NULL)
    print(f"paired t on particle means: false-positive rate {k}/{N_NULL} = {k / N_NULL:.3f} "
          f"(Wilson 95 % CI {lo:.3f}–{hi:.3f})")
    assert k / N_NULL <= 0.07
    assert lo <= ALPHA <= hi
    # p-values uniform under the null, not just at α (Kolmogorov–Smirnov, generous level)
    assert stats.kstest(ours, "uniform").pvalue > 0.01


def test_naive_pixel_test_does_not_hold_its_level(null_p_values):
    pixels, _ = hierarchical_lamella(np.random.default_rng(20260))
    frame = pixels["frame"]()
    assert naive_pixel_test(frame)["p_value"] == welch_t(pixels["surface_electrolyte"],
                                                         pixels["surface_void"])["p_value"]
    _, naive, _ = null_p_values
    k = int(np.sum(naive < ALPHA))
    lo, hi = wilson(k, N_NULL)
    print(f"naive pixel Welch t: false-positive rate {k}/{N_NULL} = {k / N_NULL:.3f} (Wilson {lo:.3f}–{hi:.3f})")
    # the particle random effect and the field make the two bands of a lamella differ by more than pixel noise
    # allows: the naive test rejects several times as often as it should
    assert lo > 4 * ALPHA


def test_particle_level_test_has_power_at_a_surface_effect():
    """Effect −0.1 e_g/t_2g at the electrolyte band (a third of the cycled presets' 0.30 at the contact):
    per-particle differences have sd ≈ 0.05 here, so with ≥ 9 pairs the paired t rejects almost always."""
    rng = np.random.default_rng(20261)
    res = [surface_electrolyte_vs_void(hierarchical_lamella(rng, effect=-0.1)[1]) for _ in range(100)]
    p = np.array([r["p_value"] for r in res])
    effect = np.array([r["effect"] for r in res])
    power = float(np.mean(p < ALPHA))
    print(f"power at effect −0.1: {power:.3f}; mean estimated effect {effect.mean():+.4f}")
    assert power >= 0.95
    assert effect.mean() == pytest.approx(-0.1, abs=0.01)   # unbiased: se of the mean of 100 ≈ 0.003


def skewed_sample(rng, kind, n):
    if kind == "lognormal":
        return 1.2 + 0.3 * rng.lognormal(0.0, 0.7, n)      # skewness ≈ 2.9
    return 1.2 + 0.1 * rng.gamma(2.0, 1.0, n)               # skewness ≈ 1.4


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_bimodality_rule_false_alarms_on_skewed_unimodal_samples(kind):
    """≤ 0.10 of 60 skewed unimodal per-particle samples (10–20 values) are called bimodal.

    The expected rate is ≤ 0.05 (the dip test is calibrated at the uniform, the least favourable unimodal
    law; the benchmark measures 0.005 on 400 log-normal draws); 0.10 is 1.8 binomial sd above 0.05 for 60.
    """
    rng = np.random.default_rng(20262 if kind == "lognormal" else 20263)
    calls = [bimodality(skewed_sample(rng, kind, int(rng.integers(10, 21))), n_boot=39, seed=s)["bimodal"]
             for s in range(60)]
    rate = float(np.mean(calls))
    print(f"bimodality false alarms on {kind}: {rate:.3f}")
    assert rate <= 0.10


def test_bimodality_rule_detects_two_separated_groups():
    """Two equal groups 6 sd apart (the 4.7 V preset's groups are ≈ 9 of their sds apart), 10–20 values:
    the rule calls ≥ 0.7 of 30 samples bimodal (the dip test's power at n = 10 is the limit)."""
    rng = np.random.default_rng(20264)
    calls = []
    for s in range(30):
        n = int(rng.integers(10, 21))
        x = 1.3 + 0.05 * rng.normal(size=n) + 0.3 * (np.arange(n) % 2)
        calls.append(bimodality(x, n_boot=39, seed=s)["bimodal"])
    power = float(np.mean(calls))
    print(f"bimodality power (6 sd apart): {power:.3f}")
    assert power >= 0.7


def test_band_start_rule_tolerance_keeps_the_level():
    """The surface-band start rule (:func:`ceimap.stats.regions.surface_start_from_data`) lets a contamination bias of
    up to k·SE remain, SE the standard error of the lamella's own per-particle paired difference and k from
    :func:`ceimap.stats.regions.bias_tolerance` at max_fpr = 0.06. On hierarchical null lamellae with exactly that
    bias added to every electrolyte band (the worst the rule allows) the paired t still rejects ≤ 0.07 of 400
    (expected 0.06; binomial sd 0.012), while a bias 3× as large rejects clearly more often (the same draws:
    the difference is not noise)."""
    from ceimap.stats.regions import bias_tolerance

    rng = np.random.default_rng(20265)
    rejected, rejected_3k = [], []
    for _ in range(N_NULL):
        _, table = hierarchical_lamella(rng)
        both = table[["egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean"]].dropna()
        d = both.iloc[:, 0] - both.iloc[:, 1]
        se = float(d.std(ddof=1) / np.sqrt(len(d)))
        k = bias_tolerance(len(d), 0.06)
        for factor, out in ((1.0, rejected), (3.0, rejected_3k)):
            shifted = table.copy()
            shifted["egt2g_surface_electrolyte_mean"] -= factor * k * se
            out.append(surface_electrolyte_vs_void(shifted)["p_value"] < ALPHA)
    rate, rate_3k = float(np.mean(rejected)), float(np.mean(rejected_3k))
    print(f"paired t with the rule's largest allowed bias: false-positive rate {rate:.3f}; with 3× it {rate_3k:.3f}")
    assert rate <= 0.07
    assert rate_3k >= rate + 0.03
