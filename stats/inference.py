"""Tests and confidence intervals with the particle as the unit of replication.

Pixels of one particle are strongly correlated (one particle, one state of charge, the probe spreads each
pixel over its neighbours), so a test that treats pixels as independent gives tiny, meaningless p-values
(pseudo-replication). Every primary test here works on per-particle means; a pixel-level linear mixed model
(particle as group) is offered only as a secondary figure, and the naive pixel-level test only to show what a
hurried analysis would report.

Functions return plain dicts; when a figure cannot be computed (too few units) its value is NaN and
``reason`` says why — they never raise on small samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .summary import Correlation, Correlations

_Z975 = float(stats.norm.ppf(0.975))


def _nan_result(method: str, reason: str, **extra) -> dict:
    return {"p_value": np.nan, "statistic": np.nan, "method": method, "effect": np.nan,
            "ci_low": np.nan, "ci_high": np.nan, "n_units": 0, "reason": reason, **extra}


def _column_values(table: pd.DataFrame, region: str, min_pixels: int) -> pd.Series:
    values = table[f"egt2g_{region}_mean"].astype(float)
    ncol = f"egt2g_{region}_n"
    if ncol in table:
        values = values.where(table[ncol].fillna(0) >= min_pixels)
    return values.where(np.isfinite(values))


def paired_t(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    """Two-tailed paired t test of ``a − b`` with the mean difference and its confidence interval.

    Returns
    -------
    dict
        ``statistic, p_value, effect, ci_low, ci_high, df, n_units, effect_size_dz`` (mean/sd of the
        differences); NaN and ``reason`` when fewer than 2 pairs or zero spread.

    Examples
    --------
    >>> r = paired_t(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.9, 1.7, 2.9, 3.6]))
    >>> round(r["effect"], 3), r["n_units"]
    (0.225, 4)
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    n = d.size
    if n < 2:
        return _nan_result("paired t", f"{n} pair(s): need at least 2", n_units=n, df=np.nan,
                           effect_size_dz=np.nan)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    tq = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    if sd == 0:
        return {**_nan_result("paired t", "differences have zero spread", n_units=n, df=n - 1,
                              effect_size_dz=np.nan), "effect": mean, "ci_low": mean, "ci_high": mean}
    t = mean / se
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return {"statistic": float(t), "p_value": p, "method": "paired t", "effect": mean,
            "ci_low": mean - tq * se, "ci_high": mean + tq * se, "df": float(n - 1), "n_units": n,
            "effect_size_dz": mean / sd, "reason": None}


def welch_t(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    """Two-tailed Welch t test of ``mean(a) − mean(b)`` with a Welch–Satterthwaite confidence interval.

    Returns
    -------
    dict
        ``statistic, p_value, effect, ci_low, ci_high, df, n_units`` (``len(a) + len(b)``), ``n_a, n_b``;
        NaN and ``reason`` when a group has fewer than 2 values or both have zero spread.

    Examples
    --------
    >>> r = welch_t(np.array([1.0, 1.2, 0.9, 1.1]), np.array([2.0, 2.1, 1.8, 2.2]))
    >>> round(r["effect"], 3), r["p_value"] < 0.001
    (-0.975, True)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return _nan_result("Welch t", f"groups of {na} and {nb}: need at least 2 each", n_units=na + nb,
                           df=np.nan, n_a=na, n_b=nb)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    effect = float(a.mean() - b.mean())
    se = float(np.sqrt(va + vb))
    if se == 0:
        return {**_nan_result("Welch t", "both groups have zero spread", n_units=na + nb, df=np.nan,
                              n_a=na, n_b=nb), "effect": effect}
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    t = effect / se
    tq = float(stats.t.ppf(0.5 + confidence / 2, df))
    return {"statistic": float(t), "p_value": float(2 * stats.t.sf(abs(t), df)), "method": "Welch t",
            "effect": effect, "ci_low": effect - tq * se, "ci_high": effect + tq * se, "df": float(df),
            "n_units": na + nb, "n_a": na, "n_b": nb, "reason": None}


def wilcoxon_signed_rank(a: np.ndarray, b: np.ndarray) -> dict:
    """Two-tailed Wilcoxon signed-rank test of ``a − b`` (exact for small n without ties).

    Returns
    -------
    dict
        ``statistic, p_value, method, n_units, reason``; NaN below 2 non-zero differences.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    nz = int(np.count_nonzero(d))
    if nz < 2:
        return {"statistic": np.nan, "p_value": np.nan, "method": "Wilcoxon signed-rank", "n_units": d.size,
                "reason": f"{nz} non-zero difference(s): need at least 2"}
    res = stats.wilcoxon(d)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "method": "Wilcoxon signed-rank",
            "n_units": int(d.size), "reason": None}


def surface_electrolyte_vs_void(particle_table: pd.DataFrame, *, min_pixels: int = 1,
                                min_pairs: int = 3, confidence: float = 0.95) -> dict:
    """Do NMC surfaces in contact with electrolyte differ from surfaces next to voids? Particle = unit.

    Decision (``method``):

    1. At least ``min_pairs`` particles have both bands: **paired t** on the per-particle difference
       (electrolyte − void) of band means; the Wilcoxon signed-rank test is reported beside it
       (``wilcoxon``).
    2. Otherwise, at least 2 particles with each band: **Welch t** on the per-particle band means (unpaired).
    3. Otherwise NaN with a ``reason``.

    The Welch test on all particle means (ignoring the pairing) is always reported as ``welch_all`` and, for
    particles that have only one of the bands, ``n_unpaired``.

    Parameters
    ----------
    particle_table : pandas.DataFrame
        Per-particle table (:func:`ceimap.stats.tables.particle_table`) with ``egt2g_surface_electrolyte_mean``,
        ``egt2g_surface_void_mean`` (and optionally the ``_n`` pixel counts).
    min_pixels : int
        Band means from fewer valid native pixels are not used.
    min_pairs : int
        Minimum number of pairs for the paired test.
    confidence : float
        Level of the confidence interval of the effect.

    Returns
    -------
    dict
        ``p_value, statistic, method, effect`` (electrolyte − void), ``ci_low, ci_high, n_units, df,
        reason, wilcoxon, welch_all, n_pairs, n_unpaired, n_electrolyte, n_void, confidence``.
    """
    e = _column_values(particle_table, "surface_electrolyte", min_pixels)
    v = _column_values(particle_table, "surface_void", min_pixels)
    both = e.notna() & v.notna()
    n_pairs = int(both.sum())
    extra = {"n_pairs": n_pairs, "n_unpaired": int((e.notna() ^ v.notna()).sum()),
             "n_electrolyte": int(e.notna().sum()), "n_void": int(v.notna().sum()), "confidence": confidence}
    welch_all = welch_t(e.dropna().to_numpy(), v.dropna().to_numpy(), confidence)
    if n_pairs >= min_pairs:
        res = paired_t(e[both].to_numpy(), v[both].to_numpy(), confidence)
        res["wilcoxon"] = wilcoxon_signed_rank(e[both].to_numpy(), v[both].to_numpy())
    elif extra["n_electrolyte"] >= 2 and extra["n_void"] >= 2:
        res = dict(welch_all)
        res["reason"] = f"only {n_pairs} particle(s) with both bands: unpaired test on particle means"
        res["wilcoxon"] = None
    else:
        res = _nan_result("none", f"{extra['n_electrolyte']} particle(s) with an electrolyte band and "
                          f"{extra['n_void']} with a void band: too few units", df=np.nan)
        res["wilcoxon"] = None
    res.update(extra)
    res["welch_all"] = welch_all
    return res


def pixel_mixed_model(pixels: pd.DataFrame, regions=("surface_electrolyte", "surface_void")) -> dict:
    """Secondary figure: linear mixed model on native pixels, particle as the group.

    ``egt2g ~ 1 + x`` with ``x = [region == regions[0]]``, groups ``particle_id``, a random intercept **and a
    random slope of ``x``** per particle (statsmodels ``MixedLM``, REML): each particle has its own
    electrolyte − void difference, as it does on a lamella (its two bands lie on different stretches of a
    perimeter along which the ratio varies smoothly). With a random intercept only, the model takes each
    particle's band contrast as known from its pixels — pseudo-replication again, and on simulated null
    lamellae it rejects about as often as the naive pixel test (``benchmarks/bench_calibration.py``; figures in
    ``benchmarks/README.md``, "calibration"). When the random-slope model
    cannot be fitted (singular design) the random-intercept model is reported with a ``reason`` saying so.
    The Wald p-value uses the normal reference, so with a dozen particles it still runs above its nominal
    rate: report it beside the particle-level test, not instead of it.

    Returns
    -------
    dict
        ``effect`` (regions[0] − regions[1]), ``se, ci_low, ci_high, p_value, statistic, n_pixels, n_groups,
        converged, method, random_effects`` (``"intercept + slope"`` or ``"intercept"``), ``reason``.
    """
    sel = pixels[pixels["region"].isin(list(regions)) & np.isfinite(pixels["egt2g"])
                 & (pixels["particle_id"] > 0)]
    method = "linear mixed model (pixels; random intercept and region slope per particle)"
    n_groups = int(sel["particle_id"].nunique())
    base = {"effect": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
            "statistic": np.nan, "n_pixels": int(len(sel)), "n_groups": n_groups, "converged": False,
            "method": method, "random_effects": None}
    if n_groups < 3 or sel["region"].nunique() < 2:
        return {**base, "reason": f"{n_groups} particle(s), {sel['region'].nunique()} region(s): too few"}
    import statsmodels.formula.api as smf

    data = pd.DataFrame({"y": sel["egt2g"].to_numpy(float),
                         "x": (sel["region"] == regions[0]).to_numpy(float),
                         "g": sel["particle_id"].to_numpy()})
    failures = []
    for re_formula, label in (("~x", "intercept + slope"), ("1", "intercept")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = smf.mixedlm("y ~ x", data, groups=data["g"], re_formula=re_formula).fit(reml=True)
            effect, se = float(fit.params["x"]), float(fit.bse["x"])
            if not (np.isfinite(effect) and np.isfinite(se)):
                raise ValueError("non-finite estimate")
        except (ValueError, np.linalg.LinAlgError) as exc:  # singular designs
            failures.append(f"{label}: {exc}")
            continue
        reason = None if not failures else (f"random-slope model failed ({failures[0]}); random intercept only "
                                            "(anti-conservative)")
        return {**base, "effect": effect, "se": se, "ci_low": effect - _Z975 * se,
                "ci_high": effect + _Z975 * se, "p_value": float(fit.pvalues["x"]),
                "statistic": effect / se if se > 0 else np.nan, "converged": bool(fit.converged),
                "random_effects": label, "method": method if label != "intercept" else
                "linear mixed model (pixels; random intercept per particle)", "reason": reason}
    return {**base, "reason": "mixed model failed: " + "; ".join(failures)}


def naive_pixel_test(pixels: pd.DataFrame, regions=("surface_electrolyte", "surface_void")) -> dict:
    """The pseudo-replicated test a hurried analysis would publish: Welch t over pixels as if independent.

    Reported only for contrast with the particle-level test; never use it for conclusions.
    """
    ok = np.isfinite(pixels["egt2g"])
    a = pixels.loc[ok & (pixels["region"] == regions[0]), "egt2g"].to_numpy(float)
    b = pixels.loc[ok & (pixels["region"] == regions[1]), "egt2g"].to_numpy(float)
    res = welch_t(a, b)
    res["method"] = "Welch t over pixels (pseudo-replicated; not valid)"
    return res


def _fisher_ci(r: float, n: int, se: float) -> tuple[float, float]:
    z = np.arctanh(np.clip(r, -0.9999999, 0.9999999))
    return float(np.tanh(z - _Z975 * se)), float(np.tanh(z + _Z975 * se))


def correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson and Spearman correlation with two-tailed p-values and 95 % confidence intervals.

    Pearson CI by Fisher's z (se ``1/√(n−3)``); Spearman CI by Fisher's z with the Bonett–Wright
    standard error ``√((1 + ρ²/2)/(n − 3))``. Pairs with a NaN are dropped.

    Returns
    -------
    dict
        ``r, p, method`` ("pearson"), ``ci_low, ci_high, n``, and ``spearman`` {``rho, p, ci_low, ci_high``};
        NaN with ``reason`` below 3 pairs (CIs need 4) or for a constant variable.

    Examples
    --------
    >>> c = correlation(np.arange(10.0), 2 * np.arange(10.0) + 1)
    >>> round(c["r"], 6), round(c["spearman"]["rho"], 6)
    (1.0, 1.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    c = Correlation
    spearman = {c.RHO: np.nan, c.P: np.nan, c.CI_LOW: np.nan, c.CI_HIGH: np.nan}
    out = {c.R: np.nan, c.P: np.nan, c.METHOD: "pearson", c.CI_LOW: np.nan, c.CI_HIGH: np.nan, c.N: n,
           c.SPEARMAN: spearman, c.REASON: None}
    if n < 3:
        out[c.REASON] = f"{n} unit(s): need at least 3"
        return out
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out[c.REASON] = "a variable is constant"
        return out
    r, p = stats.pearsonr(x, y)
    rho, ps = stats.spearmanr(x, y)
    out.update({c.R: float(r), c.P: float(p)})
    spearman.update({c.RHO: float(rho), c.P: float(ps)})
    if n >= 4:
        out[c.CI_LOW], out[c.CI_HIGH] = _fisher_ci(r, n, 1 / np.sqrt(n - 3))
        spearman[c.CI_LOW], spearman[c.CI_HIGH] = _fisher_ci(rho, n, np.sqrt((1 + rho ** 2 / 2) / (n - 3)))
    else:
        out[c.REASON] = "3 units: no confidence interval"
    return out


def correlations(particle_table: pd.DataFrame, value: str = "egt2g_mean") -> dict:
    """Per-particle e_g/t_2g against particle size and against the perimeter contact ratio with electrolyte.

    Parameters
    ----------
    particle_table : pandas.DataFrame
        With ``value``, ``equivalent_diameter_nm`` and ``contact_ratio_electrolyte``.
    value : str
        The per-particle ratio column (default the whole-particle mean, as in the paper's Figure S7).

    Returns
    -------
    dict
        ``egt2g_vs_size``, ``egt2g_vs_contact_ratio``: each the output of :func:`correlation`, plus ``x``
        and ``y`` column names.
    """
    y = particle_table[value].to_numpy(float)
    out = {}
    for key, column in ((Correlations.SIZE, "equivalent_diameter_nm"),
                        (Correlations.CONTACT_RATIO, "contact_ratio_electrolyte")):
        res = correlation(particle_table[column].to_numpy(float), y)
        res.update({Correlation.X: column, Correlation.Y: value})
        out[key] = res
    return out


def holm(p_values, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction of a family of p-values (the one Holm of ceimap).

    Parameters
    ----------
    p_values : sequence of float
        The family's finite p-values.
    alpha : float
        Family-wise significance level.

    Returns
    -------
    p_adjusted : ndarray of float
        Holm-adjusted p-values, in the order given.
    reject : ndarray of bool
        Whether each test is significant at ``alpha`` after the correction.

    Examples
    --------
    >>> p, r = holm([0.01, 0.04, 0.03])
    >>> [round(float(x), 3) for x in p], r.tolist()
    ([0.03, 0.06, 0.06], [True, False, False])
    """
    from statsmodels.stats.multitest import multipletests

    reject, p_adjusted, _, _ = multipletests([float(p) for p in p_values], alpha=alpha, method="holm")
    return p_adjusted, reject


def holm_correlations(corr: dict, alpha: float = 0.05) -> dict:
    """Holm-adjust the p-values of a lamella's correlation family (each correlation × Pearson/Spearman).

    Several correlations of one lamella are reported together (size and contact ratio, each by Pearson and
    Spearman): four tests at ``alpha`` each would call about one null lamella in five correlated. Holm's
    step-down correction (:func:`statsmodels.stats.multitest.multipletests`) over the finite p-values of the
    family controls the family-wise error rate at ``alpha``.

    Parameters
    ----------
    corr : dict
        Output of :func:`correlations`: ``{name: {"p": ..., "spearman": {"p": ...}, ...}}``.
    alpha : float
        Family-wise significance level.

    Returns
    -------
    dict
        A copy of ``corr`` in which every entry (and its ``spearman`` sub-entry) also has ``p_holm`` (NaN
        when its raw p is NaN, which then stays out of the family), ``significant_holm`` and
        ``holm_family_size`` (the number of finite p-values adjusted together); the raw ``p`` is kept.

    Examples
    --------
    >>> c = holm_correlations({"a": {"p": 0.01, "spearman": {"p": 0.04}}, "b": {"p": 0.03, "spearman": {"p": 0.5}}})
    >>> round(c["a"]["p_holm"], 3), round(c["b"]["p_holm"], 3), round(c["a"]["spearman"]["p_holm"], 3)
    (0.04, 0.09, 0.09)
    """
    out = {name: {**entry, Correlation.SPEARMAN: dict(entry.get(Correlation.SPEARMAN) or {})}
           if isinstance(entry, dict) else entry
           for name, entry in corr.items()}
    c = Correlation
    slots = []
    for entry in out.values():
        if isinstance(entry, dict):
            slots.append(entry)
            if entry[c.SPEARMAN]:
                slots.append(entry[c.SPEARMAN])
    finite = [e for e in slots if e.get(c.P) is not None and np.isfinite(float(e[c.P]))]
    for e in slots:
        e.update({c.P_HOLM: np.nan, c.SIGNIFICANT_HOLM: None, c.HOLM_FAMILY_SIZE: len(finite)})
    if finite:
        p_adj, reject = holm([float(e[c.P]) for e in finite], alpha=alpha)
        for e, p, r in zip(finite, p_adj, reject):
            e.update({c.P_HOLM: float(p), c.SIGNIFICANT_HOLM: bool(r)})
    for entry in out.values():
        if isinstance(entry, dict) and not entry[c.SPEARMAN]:
            del entry[c.SPEARMAN]
    return out


def combined_surface_test(per_sample: dict) -> dict:
    """Is the electrolyte- vs void-adjacent surface difference consistent over several samples?

    Each sample's own two-tailed test (:func:`surface_electrolyte_vs_void`, the particle as unit) is turned
    into a signed z score, ``z_i = sign(effect_i) · Φ⁻¹(1 − p_i / 2)``, and the scores are combined by the
    weighted Stouffer (Lipták) method with weights ``√n_i`` (``n_i`` the sample's units):
    ``Z = Σ √n_i z_i / √(Σ n_i)``, two-tailed ``p = 2 Φ(−|Z|)``. Under the null of no difference in any
    sample each ``z_i`` is standard normal (a valid p is uniform), so the combination is as well calibrated
    as the per-sample tests (``benchmarks/bench_calibration.py``); the units stay the particles of each
    lamella, never pooled pixels. Signs matter: effects of opposite direction cancel. Samples without a
    finite p-value are left out (listed in ``excluded``).

    Parameters
    ----------
    per_sample : dict
        ``{sample: test}`` with each test's ``p_value``, ``effect`` and ``n_units`` (``summary.json``
        ``tests.surface_electrolyte_vs_void``).

    Returns
    -------
    dict
        ``p_value``, ``statistic`` (Z), ``method``, ``n_samples``, ``n_units`` (total), ``z`` {sample: z_i},
        ``weights`` {sample: √n_i}, ``direction`` ("electrolyte lower", "electrolyte higher" or None),
        ``excluded`` {sample: reason}, ``reason`` (when nothing could be combined).
    """
    z, w, excluded = {}, {}, {}
    for name, test in per_sample.items():
        test = test or {}
        p, effect, n = test.get("p_value"), test.get("effect"), test.get("n_units")
        if p is None or effect is None or n is None or not (np.isfinite(p) and np.isfinite(effect)) or n < 1:
            excluded[name] = test.get("reason") or "no test in this sample"
            continue
        p = min(max(float(p), 1e-300), 1.0)
        z[name] = float(np.sign(effect) * stats.norm.isf(p / 2.0))
        w[name] = float(np.sqrt(n))
    method = "weighted Stouffer (Liptak) combination of the per-sample two-tailed tests, weights sqrt(n units)"
    if not z:
        return {"p_value": None, "statistic": None, "method": method, "n_samples": 0, "n_units": 0, "z": {},
                "weights": {}, "direction": None, "excluded": excluded, "reason": "no sample has a surface test"}
    weights = np.array(list(w.values()))
    big_z = float(np.dot(weights, list(z.values())) / np.sqrt(np.sum(weights ** 2)))
    return {"p_value": float(2.0 * stats.norm.sf(abs(big_z))), "statistic": big_z, "method": method,
            "n_samples": len(z), "n_units": int(round(float(np.sum(weights ** 2)))), "z": z, "weights": w,
            "direction": "electrolyte lower" if big_z < 0 else "electrolyte higher" if big_z > 0 else None,
            "excluded": excluded, "reason": None}


def edge_shift(position_a_ev: float, sigma_a_ev: float, position_b_ev: float, sigma_b_ev: float) -> dict:
    """Shift ``b − a`` of two fitted edge positions with its standard uncertainty and a two-tailed z test.

    Returns
    -------
    dict
        ``shift_ev, sigma_ev, z, p_value, ci_low, ci_high, method``; NaN when an uncertainty is missing.

    Examples
    --------
    >>> r = edge_shift(163.9, 0.03, 164.1, 0.04)
    >>> round(r["shift_ev"], 3), round(r["sigma_ev"], 3)
    (0.2, 0.05)
    """
    shift = float(position_b_ev - position_a_ev)
    sigma = float(np.hypot(sigma_a_ev, sigma_b_ev))
    if not np.isfinite(sigma) or sigma <= 0 or not np.isfinite(shift):
        return {"shift_ev": shift, "sigma_ev": sigma, "z": np.nan, "p_value": np.nan, "ci_low": np.nan,
                "ci_high": np.nan, "method": "z test on fitted positions",
                "reason": "missing or zero uncertainty"}
    z = shift / sigma
    return {"shift_ev": shift, "sigma_ev": sigma, "z": z, "p_value": float(2 * stats.norm.sf(abs(z))),
            "ci_low": shift - _Z975 * sigma, "ci_high": shift + _Z975 * sigma,
            "method": "z test on fitted positions", "reason": None}
