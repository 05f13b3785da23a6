"""Histograms and the bimodality rule: clear cases, skewed unimodal samples, ties, small samples."""

import numpy as np
import pytest
from scipy import stats

from ceimap.stats.distributions import (PAPER_RANGE, bimodality, bimodality_coefficient, dip_test, histogram,
                                 mixture_test)


def test_paper_histogram_bins():
    values = np.array([0.0, np.nan, 0.7, 0.86, 0.88, 1.55, 2.39, 2.4, 2.5, -1.0])
    counts, edges = histogram(values, paper_bins=True)
    assert np.allclose(edges, np.linspace(*PAPER_RANGE, 11))
    # 0, NaN and -1 are excluded (zeros are masked pixels); 2.5 is beyond the range; 2.4 is in the last bin
    assert counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    counts, _ = histogram(values, paper_bins=True, exclude_zero=False)
    assert counts.sum() == 6
    counts, edges = histogram(np.arange(1.0, 11.0), bins=3)
    assert counts.tolist() == [3, 3, 4]
    assert histogram([], paper_bins=False)[0].sum() == 0


def test_bimodality_coefficient_matches_formula():
    x = np.array([1.0, 1.1, 1.3, 1.35, 1.9, 2.0, 2.1, 2.2])
    n, g, k = x.size, stats.skew(x, bias=False), stats.kurtosis(x, bias=False)
    assert bimodality_coefficient(x) == pytest.approx((g ** 2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))
    assert np.isnan(bimodality_coefficient([1.0, 2.0, 3.0]))


def test_two_separated_groups_are_bimodal():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1.3, 0.04, 8), rng.normal(1.7, 0.04, 8)]
    res = bimodality(x, n_boot=99)
    assert res["bimodal"] is True and res["dip_p"] < 0.05 and res["mixture_p"] < 0.05
    assert res["mixture_means"][0] == pytest.approx(1.3, abs=0.05)
    assert res["mixture_means"][1] == pytest.approx(1.7, abs=0.05)
    assert res["bimodality_coefficient"] > 5 / 9


def test_normal_sample_is_not_bimodal():
    x = np.random.default_rng(1).normal(1.5, 0.1, 20)
    res = bimodality(x, n_boot=99)
    assert res["bimodal"] is False and res["dip_p"] > 0.1


def test_skewed_unimodal_samples_rarely_called_bimodal():
    """The mixture test alone calls log-normal samples bimodal often; the rule must not."""
    rng = np.random.default_rng(2)
    calls, mixture_alone = [], []
    for seed in range(20):
        x = 1.2 + 0.3 * rng.lognormal(0.0, 0.7, 15)
        res = bimodality(x, n_boot=39, seed=seed)
        calls.append(res["bimodal"])
        mixture_alone.append(res["mixture_p"] < 0.05)
    assert np.mean(calls) <= 0.10
    assert np.mean(mixture_alone) > np.mean(calls)


def test_mixture_bootstrap_is_calibrated_on_normal_samples():
    rng = np.random.default_rng(3)
    p = np.array([mixture_test(rng.normal(size=15), n_boot=39, seed=s)["p_value"] for s in range(25)])
    assert np.mean(p < 0.05) <= 0.16
    assert 0.3 < np.mean(p) < 0.7   # p-values spread over (0, 1) under the null


def test_ties_from_quantised_values_do_not_manufacture_bimodality():
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(1.5, 0.1, 25), 1)      # only a handful of distinct values
    res = bimodality(x, n_boot=99)
    assert res["ties"] is True
    assert "ties present" in res["dip_method"]
    assert res["bimodal"] is False
    # quantising the bootstrap like the data matters: the raw likelihood ratio is large …
    mix = mixture_test(x, n_boot=99)
    assert mix["quantum"] == pytest.approx(0.1) and mix["lr"] > 10
    # … but it is not extreme against quantised null samples
    assert mix["p_value"] > 0.05
    # dip p-values with ties come from quantised uniform samples and are proper probabilities
    d = dip_test(x, n_sim=500)
    assert 0 < d["p_value"] <= 1


def test_small_or_constant_samples_are_undecided():
    for x in ([1.0, 1.2, 1.4], [1.5] * 10, []):
        res = bimodality(np.array(x), n_boot=19)
        assert res["bimodal"] is None and res["reason"]
    assert np.isnan(mixture_test([1.0, 2.0])["lr"])
    assert np.isnan(dip_test([1.0, 2.0])["dip"])


def test_results_are_reproducible():
    x = np.random.default_rng(5).normal(size=12)
    assert bimodality(x, n_boot=49, seed=3) == bimodality(x, n_boot=49, seed=3)


@pytest.mark.slow
def test_bimodality_rule_error_rates_by_simulation():
    """False alarms on skewed unimodal per-particle samples ≤ 0.10; power on two groups 6 sd apart (n = 12)."""
    rng = np.random.default_rng(10)
    false_alarm = np.mean([bimodality(1.2 + 0.3 * rng.lognormal(0.0, 0.7, 15), n_boot=99, seed=s)["bimodal"]
                           for s in range(200)])
    power = np.mean([bimodality(np.r_[rng.normal(1.3, 0.05, 6), rng.normal(1.6, 0.05, 6)], n_boot=99,
                                seed=s)["bimodal"] for s in range(100)])
    print(f"bimodality rule: false alarm (log-normal, n=15) {false_alarm:.3f}, power (6 sd, n=12) {power:.2f}")
    assert false_alarm <= 0.10
    assert power >= 0.6
