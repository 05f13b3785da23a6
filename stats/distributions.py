"""Distributions of e_g/t_2g: histograms and a documented bimodality decision.

Bimodality rule (:func:`bimodality`)
------------------------------------
1. **Hartigan's dip test** (``diptest`` package) is the primary test: it assumes nothing about the null
   distribution except unimodality and is calibrated against the least favourable unimodal law (uniform), so
   it does not call skewed unimodal samples bimodal.
2. A **1- vs 2-component Gaussian mixture** compared by a likelihood ratio whose null distribution comes from a
   **parametric bootstrap** under the fitted single normal (not BIC, and not the χ² approximation, which is
   invalid for mixtures). A mixture fits any skewed sample better than one normal, so this test alone calls
   skewed data bimodal; it only supports the dip test.
3. Decision: **bimodal** when ``dip_p < alpha``, or when the dip test is borderline (``dip_p < 2·alpha``) and
   the mixture test rejects a single normal (``mixture_p < alpha``). Fewer than ``min_n`` values: undecided
   (``bimodal`` is ``None``).
4. The **bimodality coefficient** ``BC = (g² + 1) / (k + 3(n−1)²/((n−2)(n−3)))`` (sample skewness ``g``, excess
   kurtosis ``k``; BC > 5/9 suggests bimodality) is reported as a description only.

Ties (quantised values) are kept as they are — nothing is jittered, results are reproducible. When the sample
has ties, both p-values are computed by simulation from null samples quantised on the same grid as the data
(the smallest gap between distinct values): the dip p-value from a quantised uniform, the mixture p-value from
a quantised normal, so ties cannot manufacture significance.
"""

from __future__ import annotations

import numpy as np

PAPER_RANGE = (0.7, 2.4)
"""The paper's histogram range of e_g/t_2g (ten bins, zeros excluded)."""
PAPER_BINS = 10


def histogram(values: np.ndarray, bins="fd", value_range=None, *, paper_bins: bool = False,
              exclude_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of finite values.

    Parameters
    ----------
    values : array_like
        Values (NaN and ±inf are ignored).
    bins : int, sequence or str
        As :func:`numpy.histogram` (default ``"fd"``, Freedman–Diaconis).
    value_range : (float, float), optional
        Range of the bins; values outside are not counted.
    paper_bins : bool
        Use the paper's ten bins over 0.7–2.4 (overrides ``bins`` and ``value_range``).
    exclude_zero : bool
        Leave out values ``≤ 0`` (the paper's masked pixels are zeros).

    Returns
    -------
    counts : ndarray of int64
    edges : ndarray of float

    Examples
    --------
    >>> counts, edges = histogram([0.0, 0.8, 1.0, 1.05, 2.3, 3.0], paper_bins=True)
    >>> counts.tolist(), round(float(edges[1]), 2)
    ([1, 1, 1, 0, 0, 0, 0, 0, 0, 1], 0.87)
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if exclude_zero:
        x = x[x > 0]
    if paper_bins:
        bins, value_range = PAPER_BINS, PAPER_RANGE
    if x.size == 0 and isinstance(bins, str):
        bins = 10
    counts, edges = np.histogram(x, bins=bins, range=value_range)
    return counts.astype(np.int64), edges


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient with bias-corrected skewness and kurtosis (NaN below 4 values).

    Examples
    --------
    >>> round(bimodality_coefficient(np.r_[np.zeros(10), np.ones(10)]), 3)
    0.767
    """
    from scipy import stats

    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 4 or np.ptp(x) == 0:
        return float("nan")
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, bias=False)
    return float((g ** 2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def _loglik_one(x: np.ndarray) -> np.ndarray:
    """Maximised log-likelihood of one normal, rows of ``x`` (m, n)."""
    n = x.shape[1]
    var = x.var(axis=1)
    return -0.5 * n * (np.log(2 * np.pi * var) + 1)


def _loglik_two(x: np.ndarray, min_sd: float, n_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Maximised log-likelihood of a two-normal mixture for each row of ``x`` (m, n) by EM.

    Several starts (splits at the 25th, 50th, 75th percentile and at the largest gap) run together as one
    array; component sds are floored at ``min_sd`` (in units of the row's sd) so that no component collapses
    onto a single value. Returns the best log-likelihood per row and its parameters (m, 5):
    w1, mu1, sd1, mu2, sd2.
    """
    m, n = x.shape
    xs = np.sort(x, axis=1)
    cut_gap = np.take_along_axis(xs, np.argmax(np.diff(xs, axis=1), axis=1)[:, None], axis=1)
    cuts = [np.quantile(x, q, axis=1)[:, None] for q in (0.25, 0.5, 0.75)] + [cut_gap]
    n_starts = len(cuts)
    xx = np.tile(x, (n_starts, 1))
    floor = np.tile((min_sd * x.std(axis=1, keepdims=True)) ** 2, (n_starts, 1))
    r1 = np.clip(np.concatenate([(x <= c).astype(float) for c in cuts]), 0.02, 0.98)
    for _ in range(n_iter):
        r2 = 1 - r1
        s1, s2 = r1.sum(1, keepdims=True), r2.sum(1, keepdims=True)
        w1 = s1 / n
        mu1 = (r1 * xx).sum(1, keepdims=True) / s1
        mu2 = (r2 * xx).sum(1, keepdims=True) / s2
        v1 = np.maximum((r1 * (xx - mu1) ** 2).sum(1, keepdims=True) / s1, floor)
        v2 = np.maximum((r2 * (xx - mu2) ** 2).sum(1, keepdims=True) / s2, floor)
        l1 = np.log(w1) - 0.5 * np.log(2 * np.pi * v1) - 0.5 * (xx - mu1) ** 2 / v1
        l2 = np.log1p(-w1) - 0.5 * np.log(2 * np.pi * v2) - 0.5 * (xx - mu2) ** 2 / v2
        lse = np.logaddexp(l1, l2)
        r1_new = np.clip(np.exp(l1 - lse), 1e-12, 1 - 1e-12)
        done = np.max(np.abs(r1_new - r1)) < 1e-6
        r1 = r1_new
        if done:
            break
    ll = lse.sum(axis=1).reshape(n_starts, m)
    par = np.column_stack([w1[:, 0], mu1[:, 0], np.sqrt(v1[:, 0]), mu2[:, 0], np.sqrt(v2[:, 0])])
    best = np.argmax(ll, axis=0)
    rows = best * m + np.arange(m)
    return ll[best, np.arange(m)], par[rows]


def _quantum(x: np.ndarray) -> float | None:
    """Grid step of quantised data (smallest gap between distinct values) when ``x`` has ties, else None."""
    u = np.unique(x)
    if u.size == x.size or u.size < 2:
        return None
    return float(np.min(np.diff(u)))


def mixture_test(values: np.ndarray, n_boot: int = 199, seed: int = 0, min_sd: float = 0.05) -> dict:
    """Likelihood ratio of a two-normal mixture against one normal, p-value by parametric bootstrap.

    Parameters
    ----------
    values : array_like
        Sample (NaN ignored).
    n_boot : int
        Bootstrap samples drawn from the fitted single normal (quantised like the data when it has ties).
    seed : int
        Random seed (results are reproducible).
    min_sd : float
        Floor of the component sds, relative to the sample sd.

    Returns
    -------
    dict
        ``lr`` (2·Δ log-likelihood), ``p_value`` ((1 + #{LR* ≥ LR}) / (n_boot + 1)), ``n_boot``, ``weights``,
        ``means``, ``sds`` of the two components (data units), ``quantum`` (grid step used for ties, or None).
    """
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 5 or np.ptp(x) == 0:
        return {"lr": np.nan, "p_value": np.nan, "n_boot": 0, "weights": None, "means": None, "sds": None,
                "quantum": None, "reason": f"{n} value(s) or no spread: need at least 5 distinct"}
    ll2, par = _loglik_two(x[None, :], min_sd)
    lr = float(2 * (ll2[0] - _loglik_one(x[None, :])[0]))
    rng = np.random.default_rng(seed)
    q = _quantum(x)
    sims = rng.normal(x.mean(), x.std(), size=(n_boot, n))
    if q is not None:
        sims = x.min() + np.round((sims - x.min()) / q) * q
    keep = sims.std(axis=1) > 0
    lr_b = 2 * (_loglik_two(sims[keep], min_sd)[0] - _loglik_one(sims[keep]))
    p = float((1 + np.sum(lr_b >= lr - 1e-9)) / (keep.sum() + 1))
    w1, mu1, sd1, mu2, sd2 = par[0]
    order = [0, 1] if mu1 <= mu2 else [1, 0]
    return {"lr": lr, "p_value": p, "n_boot": int(keep.sum()),
            "weights": [float([w1, 1 - w1][i]) for i in order],
            "means": [float([mu1, mu2][i]) for i in order], "sds": [float([sd1, sd2][i]) for i in order],
            "quantum": q, "reason": None}


def dip_test(values: np.ndarray, n_sim: int = 2000, seed: int = 0) -> dict:
    """Hartigan's dip test of unimodality (two-tailed in the sense of any departure toward multimodality).

    Without ties the p-value is interpolated from the ``diptest`` package's tables; with ties it is the
    fraction of ``n_sim`` uniform samples, quantised on the data's grid, whose dip is at least as large.

    Returns
    -------
    dict
        ``dip, p_value, n, method, reason``.
    """
    import diptest

    x = np.asarray(values, float)
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    if n < 4 or np.ptp(x) == 0:
        return {"dip": np.nan, "p_value": np.nan, "n": n, "method": "Hartigan dip",
                "reason": f"{n} value(s) or no spread: need at least 4"}
    dip, p = diptest.diptest(x, sort_x=False)
    q = _quantum(x)
    method = "Hartigan dip (tabulated p)"
    if q is not None:
        rng = np.random.default_rng(seed)
        lo, hi = x.min(), x.max()
        sims = np.sort(lo + np.round(rng.uniform(0, hi - lo, size=(n_sim, n)) / q) * q, axis=1)
        dips = np.array([diptest.dipstat(s, sort_x=False) if np.ptp(s) > 0 else 0.0 for s in sims])
        p = float((1 + np.sum(dips >= dip - 1e-12)) / (n_sim + 1))
        method = "Hartigan dip (p from quantised uniform samples, ties present)"
    return {"dip": float(dip), "p_value": float(p), "n": n, "method": method, "reason": None}


def bimodality(values: np.ndarray, *, alpha: float = 0.05, n_boot: int = 199, seed: int = 0,
               min_n: int = 5) -> dict:
    """Is the distribution of ``values`` bimodal? The documented rule of the module docstring.

    Parameters
    ----------
    values : array_like
        E.g. per-particle bulk means (NaN ignored).
    alpha : float
        Level of the tests.
    n_boot : int
        Parametric bootstrap samples of the mixture test.
    seed : int
        Random seed.
    min_n : int
        Below this many values the question is left undecided.

    Returns
    -------
    dict
        ``bimodal`` (bool, or None when undecided), ``dip``, ``dip_p``, ``mixture_lr``, ``mixture_p``,
        ``mixture_means``, ``mixture_weights``, ``bimodality_coefficient``, ``n``, ``ties``, ``rule``,
        ``reason``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> bimodality(np.r_[rng.normal(1.2, 0.03, 10), rng.normal(1.6, 0.03, 10)], n_boot=99)["bimodal"]
    True
    """
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    rule = (f"bimodal if dip p < {alpha:g}, or dip p < {2 * alpha:g} and parametric-bootstrap mixture "
            f"LR p < {alpha:g}")
    out = {"bimodal": None, "dip": np.nan, "dip_p": np.nan, "mixture_lr": np.nan, "mixture_p": np.nan,
           "mixture_means": None, "mixture_weights": None, "bimodality_coefficient": bimodality_coefficient(x),
           "n": n, "ties": bool(n and np.unique(x).size < n), "rule": rule, "dip_method": None,
           "reason": None}
    if n < min_n or np.ptp(x) == 0:
        out["reason"] = f"{n} value(s): need at least {min_n} with spread to decide"
        return out
    dip = dip_test(x, seed=seed)
    mix = mixture_test(x, n_boot=n_boot, seed=seed)
    out.update(dip=dip["dip"], dip_p=dip["p_value"], dip_method=dip["method"], mixture_lr=mix["lr"],
               mixture_p=mix["p_value"], mixture_means=mix["means"], mixture_weights=mix["weights"])
    dip_p, mix_p = dip["p_value"], mix["p_value"]
    out["bimodal"] = bool(dip_p < alpha or (dip_p < 2 * alpha and mix_p < alpha))
    return out
