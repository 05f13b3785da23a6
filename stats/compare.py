"""Statistics between samples: ``ceimap compare OUT_A OUT_B [OUT_C ...] --out DIR``.

Each run folder is one lamella of one sample. The independent unit is the **particle**: every quantity is
reduced to one value per particle before any test (per-particle mean interphase thickness from
``thickness.csv``; per-particle mean e_g/t_2g of the bulk and of each surface region from the native-STXM
pixel table ``pixels.csv``, falling back to ``particles.csv``). Pixels are never the unit.

Tests (two-tailed), chosen by the number of samples that have at least two units:

============  ==========================================  ==========================================
samples       primary (enters the Holm family)            reported beside it
============  ==========================================  ==========================================
2             Welch t test (difference of means, 95 % CI)  Mann–Whitney U
≥ 3           Welch one-way ANOVA (unequal variances)     Kruskal–Wallis; Tukey HSD (pairwise)
spread        Brown–Forsythe (Levene, median centre)      per-sample sd and IQR
============  ==========================================  ==========================================

The primary p-values of all reported between-sample tests (thickness; bulk location; bulk spread; the two
surface regions) are corrected together by Holm's method (``p_holm``); the reported-beside tests are
sensitivity checks and are not corrected. With one lamella per sample, sample and lamella are confounded:
a difference says these lamellae differ, and generalising to the conditions needs more lamellae.

Beside the between-sample tests, ``surface_electrolyte_vs_void_combined`` combines the samples' *own*
electrolyte- vs void-adjacent surface tests (each lamella's paired test on its particles) by weighted Stouffer
(:func:`ceimap.stats.inference.combined_surface_test`): whether the within-sample effect holds consistently over the
compared samples (e.g. the paper's cycled cells). It is not a comparison between samples and stays outside the
Holm family.

A sample whose run found the interphase not resolvable (``summary.json``
``interphase_thickness_nm.resolvable`` false) is left out of the thickness test, with the reason recorded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io.jsonfile import json_safe

from .inference import combined_surface_test, holm
from .report_figures import EGT2G_RANGE, PAPER_BINS
from .report_html import _esc, _figure, _fmt, _fmt_p, _na, _new_figure, _page, _plain_p, _table, write_text_atomic
from .report_load import _num as _finite
from .report_load import _read_csv, _versions
from .report_load import _read_json as _report_read_json
from .summary import Bimodality, Summary, Tests, Thickness

MIN_BULK_PIXELS = 3
"""Default minimum number of native STXM pixels for a particle to contribute a regional mean."""

SAMPLE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

_REGION_COLUMNS = {
    "bulk": ("egt2g_bulk_mean", "egt2g_mean"),
    "surface_electrolyte": ("egt2g_surface_electrolyte_mean",),
    "surface_void": ("egt2g_surface_void_mean",),
}


# --------------------------------------------------------------------------------------------------
# units per run
# --------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    d = _report_read_json(path)
    return d if isinstance(d, dict) else {}


def sample_units(run_dir, *, min_pixels: int = MIN_BULK_PIXELS) -> dict:
    """One value per particle for every quantity compared between samples.

    Parameters
    ----------
    run_dir : str or path-like
        A folder written by ``ceimap run``.
    min_pixels : int, optional
        Minimum number of native STXM pixels of a region in a particle for its regional mean to count.

    Returns
    -------
    dict
        ``summary`` (the run's summary.json), ``thickness_nm`` (pandas Series indexed by particle id:
        per-particle mean thickness), ``thickness_points_nm`` (all boundary samples, ndarray),
        ``egt2g`` {region: Series of per-particle means} for ``bulk``, ``surface_electrolyte``,
        ``surface_void``, ``egt2g_pixels`` {region: ndarray of pixel values} (for plots only) and
        ``sources`` {quantity: file used}.
    """
    run = Path(run_dir)
    return units_from_tables(_read_json(run / "summary.json"), _read_csv(run / "thickness.csv"),
                             _read_csv(run / "pixels.csv"), _read_csv(run / "particles.csv"), min_pixels=min_pixels)


def units_from_tables(summary: dict, th, pix, parts, *, min_pixels: int = MIN_BULK_PIXELS) -> dict:
    """:func:`sample_units` from a run's summary and tables (``thickness.csv``, ``pixels.csv``,
    ``particles.csv`` as DataFrames, each possibly None) instead of its folder."""
    import pandas as pd

    out = {"summary": summary, "sources": {}, "egt2g": {}, "egt2g_pixels": {}}
    if th is not None and {"particle_id", "thickness_nm"} <= set(th.columns):
        th = th[np.isfinite(th["thickness_nm"].astype(float))]
        out["thickness_nm"] = th.groupby("particle_id")["thickness_nm"].mean()
        out["thickness_points_nm"] = th["thickness_nm"].to_numpy(float)
        out["sources"]["thickness"] = "thickness.csv"
    else:
        out["thickness_nm"] = pd.Series(dtype=float)
        out["thickness_points_nm"] = np.array([])
    for region, columns in _REGION_COLUMNS.items():
        series = None
        if pix is not None and {"region", "egt2g", "particle_id"} <= set(pix.columns):
            sel = pix[(pix["region"].astype(str) == region) & np.isfinite(pix["egt2g"].astype(float))
                      & (pix["particle_id"] > 0)]
            out["egt2g_pixels"][region] = sel["egt2g"].to_numpy(float)
            if len(sel):
                g = sel.groupby("particle_id")["egt2g"]
                n = g.size()
                series = g.mean()[n >= min_pixels]
                out["sources"][f"egt2g_{region}"] = "pixels.csv"
        if series is None and parts is not None and "particle_id" in parts.columns:
            for col in columns:
                if col in parts.columns:
                    s = parts.set_index("particle_id")[col].astype(float)
                    series = s[np.isfinite(s)]
                    out["sources"][f"egt2g_{region}"] = f"particles.csv:{col}"
                    break
        out["egt2g"][region] = series if series is not None else pd.Series(dtype=float)
    return out


def _sample_names(run_dirs, summaries, names):
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(run_dirs):
            raise CeimapInputError(f"{len(names)} sample names for {len(run_dirs)} run folders")
        if len(set(names)) != len(names):
            raise CeimapInputError(f"sample names must be unique, got {names}")
        return names
    raw = []
    for d, s in zip(run_dirs, summaries):
        n = s.get(Summary.SAMPLE) or s.get(Summary.NAME)
        raw.append(str(n) if n else Path(d).name)
    counts = {n: raw.count(n) for n in raw}
    out = [f"{n} ({Path(d).name})" if counts[n] > 1 else n for n, d in zip(raw, run_dirs)]
    if len(set(out)) != len(out):  # same folder name twice: number them
        out = [f"{n} #{i + 1}" for i, n in enumerate(out)]
    return out


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------

def _describe(values: np.ndarray) -> dict:
    v = np.asarray(values, float)
    n = int(v.size)
    return {
        "mean": _finite(np.mean(v)) if n else None,
        "sd": _finite(np.std(v, ddof=1)) if n > 1 else None,
        "median": _finite(np.median(v)) if n else None,
        "iqr": _finite(np.subtract(*np.percentile(v, [75, 25]))) if n else None,
        "n_units": n,
    }


def location_test(groups: dict[str, np.ndarray]) -> dict:
    """Two-tailed test of a difference in location between samples, on one value per unit.

    Parameters
    ----------
    groups : dict of str to array_like
        Sample name to its unit values (e.g. per-particle means). Samples with fewer than two units are
        left out (listed under ``excluded``).

    Returns
    -------
    dict
        ``p_value``, ``statistic``, ``method`` of the primary test (Welch t for two samples, Welch ANOVA for
        three or more), ``secondary`` (Mann–Whitney U or Kruskal–Wallis), ``effect`` (two samples: difference
        of means second minus first with its Welch 95 % CI, and Hedges' g), ``pairwise`` (≥ 3: Tukey HSD),
        ``samples_tested``, ``excluded``. ``p_value`` is None when fewer than two samples can be tested.

    Examples
    --------
    >>> r = location_test({"a": [1.0, 1.1, 0.9, 1.05], "b": [2.0, 2.1, 1.9, 2.05]})
    >>> r["method"], r["p_value"] < 1e-4
    ('Welch t test', True)
    """
    from scipy import stats as st

    data = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in groups.items()}
    tested = {k: v for k, v in data.items() if v.size >= 2}
    excluded = {k: f"{v.size} unit(s): fewer than 2" for k, v in data.items() if v.size < 2}
    res = {"p_value": None, "statistic": None, "method": None, "samples_tested": list(tested),
           "excluded": excluded, "unit": "particle"}
    if len(tested) < 2:
        res["method"] = "not testable: fewer than two samples with at least two units"
        return res
    names = list(tested)
    arrays = [tested[k] for k in names]
    if len(arrays) == 2:
        a, b = arrays
        t = st.ttest_ind(b, a, equal_var=False)
        ci = t.confidence_interval(0.95)
        u = st.mannwhitneyu(a, b, alternative="two-sided")
        pooled = math.sqrt(((a.size - 1) * np.var(a, ddof=1) + (b.size - 1) * np.var(b, ddof=1))
                           / (a.size + b.size - 2))
        d = (b.mean() - a.mean()) / pooled if pooled > 0 else float("nan")
        g = d * (1 - 3 / (4 * (a.size + b.size) - 9))
        res.update(p_value=_finite(t.pvalue), statistic=_finite(t.statistic), method="Welch t test",
                   df=_finite(t.df),
                   effect={"difference": _finite(b.mean() - a.mean()), "ci95": [_finite(ci.low), _finite(ci.high)],
                           "of": f"{names[1]} minus {names[0]}", "hedges_g": _finite(g)},
                   secondary={"method": "Mann-Whitney U", "p_value": _finite(u.pvalue),
                              "statistic": _finite(u.statistic)})
        return res
    from statsmodels.stats.multicomp import pairwise_tukeyhsd
    from statsmodels.stats.oneway import anova_oneway

    w = anova_oneway(arrays, use_var="unequal")
    kw = st.kruskal(*arrays)
    endog = np.concatenate(arrays)
    labels = np.concatenate([[n] * a.size for n, a in zip(names, arrays)])
    tukey = pairwise_tukeyhsd(endog, labels)
    pairs = []
    group_names = list(tukey.groupsunique)
    k = 0
    for i in range(len(group_names)):
        for j in range(i + 1, len(group_names)):
            pairs.append({"a": str(group_names[i]), "b": str(group_names[j]),
                          "difference": _finite(tukey.meandiffs[k]),
                          "ci95": [_finite(tukey.confint[k][0]), _finite(tukey.confint[k][1])],
                          "p_adjusted": _finite(tukey.pvalues[k]), "reject": bool(tukey.reject[k])})
            k += 1
    res.update(p_value=_finite(w.pvalue), statistic=_finite(w.statistic), method="Welch one-way ANOVA",
               secondary={"method": "Kruskal-Wallis H", "p_value": _finite(kw.pvalue),
                          "statistic": _finite(kw.statistic)},
               pairwise={"method": "Tukey HSD", "pairs": pairs})
    return res


def spread_test(groups: dict[str, np.ndarray]) -> dict:
    """Brown–Forsythe test (Levene's test with median centring) of a difference in spread between samples.

    Parameters
    ----------
    groups : dict of str to array_like
        Sample name to its unit values; samples with fewer than two units are left out.

    Returns
    -------
    dict
        ``p_value``, ``statistic``, ``method``, ``per_sample`` {name: {sd, iqr}}, ``samples_tested``,
        ``excluded``.
    """
    from scipy import stats as st

    data = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in groups.items()}
    tested = {k: v for k, v in data.items() if v.size >= 2}
    res = {"p_value": None, "statistic": None, "method": "Brown-Forsythe (Levene, median centre)",
           "samples_tested": list(tested), "unit": "particle",
           "excluded": {k: f"{v.size} unit(s): fewer than 2" for k, v in data.items() if v.size < 2},
           "per_sample": {k: {"sd": _describe(v)["sd"], "iqr": _describe(v)["iqr"]} for k, v in tested.items()}}
    if len(tested) < 2:
        res["method"] += ": not testable, fewer than two samples with at least two units"
        return res
    r = st.levene(*tested.values(), center="median")
    res.update(p_value=_finite(r.pvalue), statistic=_finite(r.statistic))
    return res


def _holm(entries: dict[str, dict]) -> dict:
    """Holm-adjust the primary p-values of ``entries`` in place; return the family description."""
    names = [k for k, e in entries.items() if e.get("p_value") is not None]
    family = {"method": "Holm", "alpha": 0.05, "tests": names}
    if not names:
        return family
    p_adj, reject = holm([entries[k]["p_value"] for k in names], alpha=0.05)
    for k, p, r in zip(names, p_adj, reject):
        entries[k]["p_holm"] = _finite(p)
        entries[k]["significant_holm"] = bool(r)
    for k, e in entries.items():
        e.setdefault("p_holm", None)
    return family


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------

def compare_runs(run_dirs, names=None, *, min_pixels: int = MIN_BULK_PIXELS, final_dirs=None) -> dict:
    """Compare samples (one run folder each) with the particle as the unit.

    Parameters
    ----------
    run_dirs : sequence of str or path-like
        Folders written by ``ceimap run`` (at least two).
    names : sequence of str, optional
        Sample names; default from each ``summary.json`` (``sample``, else ``name``), else the folder name,
        made unique with the folder name where they repeat.
    min_pixels : int, optional
        Minimum native STXM pixels of a region in a particle for its mean to count as a unit.
    final_dirs : sequence of str or path-like, optional
        Where the run folders will be once moved into place, one per ``run_dirs``, recorded as ``run_dirs``
        instead of the folders read (``ceimap demo`` writes its runs in a temporary folder that it renames
        afterwards). Default: ``run_dirs``.

    Raises
    ------
    CeimapInputError
        Fewer than two folders, a folder without ``summary.json``, names that do not fit, or ``final_dirs``
        not one per run folder.

    Returns
    -------
    dict
        The ``compare.json`` content (CONTRACT.md keys): ``interphase_thickness`` {``p_value``, ``method``,
        ``per_sample`` {name: {``mean``, ``sd``, ``n_units``, …}}, …}; ``egt2g_bulk`` {``p_value``,
        ``method`` (location), ``location`` {…}, ``spread`` {…}, ``per_sample``}; further entries
        ``egt2g_bulk_spread``, ``egt2g_surface_electrolyte``, ``egt2g_surface_void``; ``multiple_comparisons``
        (Holm over the primary p-values, each entry also gets ``p_holm``); ``samples``, ``run_dirs`` (absolute
        paths of the run folders' final location), ``per_sample_summary`` (values copied from each
        summary.json) and ``notes``.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise CeimapInputError(f"compare needs at least two run folders, got {len(run_dirs)}")
    final_dirs = run_dirs if final_dirs is None else [Path(d) for d in final_dirs]
    if len(final_dirs) != len(run_dirs):
        raise CeimapInputError(f"{len(final_dirs)} final locations for {len(run_dirs)} run folders")
    for d in run_dirs:
        if not (d / "summary.json").is_file():
            raise CeimapInputError("not a ceimap run folder (no summary.json)", path=d)
    units = [sample_units(d, min_pixels=min_pixels) for d in run_dirs]
    return compare_units(units, [d.name for d in run_dirs], names, min_pixels=min_pixels,
                         run_dirs=[str(d.resolve()) for d in final_dirs])


def compare_units(units: list, labels: list, names=None, *, min_pixels: int = MIN_BULK_PIXELS,
                  run_dirs: list | None = None) -> dict:
    """:func:`compare_runs` on the samples' units (:func:`sample_units`, :func:`units_from_tables`).

    ``labels``: a short name of each run (its folder name), used for sample names that the summaries do not
    give or give twice; ``run_dirs``: what to record as ``run_dirs`` (default: None for each sample).
    """
    if len(units) < 2:
        raise CeimapInputError(f"compare needs at least two runs, got {len(units)}")
    sample_names = _sample_names(labels, [u["summary"] for u in units], names)
    by_name = dict(zip(sample_names, units))

    # interphase thickness: per-particle means; non-resolvable samples are described but not tested
    th_groups, th_excluded, th_per = {}, {}, {}
    for name, u in by_name.items():
        v = u["thickness_nm"].to_numpy(float)
        summ = u["summary"].get(Summary.THICKNESS) or {}
        desc = _describe(v)
        desc.update(n_points=int(u["thickness_points_nm"].size), resolvable=summ.get(Thickness.RESOLVABLE),
                    lamella_mean=_finite(summ.get(Thickness.MEAN)), lamella_sd=_finite(summ.get(Thickness.SD)))
        th_per[name] = desc
        if summ.get("resolvable") is False:
            th_excluded[name] = "interphase not resolvable (below the STXM resolution)"
        else:
            th_groups[name] = v
    thickness = location_test(th_groups)
    thickness["excluded"] = {**th_excluded, **thickness["excluded"]}
    thickness["per_sample"] = th_per
    thickness["quantity"] = "per-particle mean interphase thickness (nm)"

    entries = {"interphase_thickness": thickness}
    bulk_groups = {n: u["egt2g"]["bulk"].to_numpy(float) for n, u in by_name.items()}
    loc = location_test(bulk_groups)
    spread = spread_test(bulk_groups)
    bulk = {"p_value": loc["p_value"], "method": loc["method"], "statistic": loc["statistic"],
            "samples_tested": loc["samples_tested"], "excluded": loc["excluded"],
            "quantity": "per-particle mean e_g/t_2g of bulk NMC",
            "per_sample": {n: _describe(v) for n, v in bulk_groups.items()},
            "location": loc, "spread": {k: v for k, v in spread.items()}}
    entries["egt2g_bulk"] = bulk
    entries["egt2g_bulk_spread"] = dict(spread, quantity="spread of per-particle mean e_g/t_2g of bulk NMC")
    for region in ("surface_electrolyte", "surface_void"):
        groups = {n: u["egt2g"][region].to_numpy(float) for n, u in by_name.items()}
        r = location_test(groups)
        r["per_sample"] = {n: _describe(v) for n, v in groups.items()}
        r["quantity"] = f"per-particle mean e_g/t_2g of the NMC {region.replace('_', ' at ')}"
        entries[f"egt2g_{region}"] = r

    family = _holm(entries)
    bulk["location"]["p_holm"] = bulk.get("p_holm")
    # within-sample surface effect combined over the samples: not a between-sample test, not in the family
    entries["surface_electrolyte_vs_void_combined"] = dict(
        combined_surface_test({n: (u["summary"].get(Summary.TESTS) or {}).get(Tests.SURFACE)
                               for n, u in by_name.items()}),
        quantity="NMC surface e_g/t_2g, electrolyte contact minus void-adjacent, within each sample, combined",
        in_holm_family=False)
    bulk["spread"]["p_holm"] = entries["egt2g_bulk_spread"].get("p_holm")

    per_sample_summary = {}
    for name, u in by_name.items():
        s = u["summary"]
        per_sample_summary[name] = {
            "n_particles": s.get(Summary.N_PARTICLES), "class_fractions": s.get(Summary.CLASS_FRACTIONS),
            "interphase_thickness_nm": s.get(Summary.THICKNESS), "egt2g": s.get(Summary.EGT2G),
            "surface_electrolyte_vs_void": (s.get(Summary.TESTS) or {}).get(Tests.SURFACE),
            "bimodality": (s.get(Summary.BIMODALITY) or {}).get(Bimodality.BULK_PARTICLES),
            "sources": u["sources"],
        }
    result = {
        "samples": sample_names,
        "run_dirs": list(run_dirs) if run_dirs is not None else [None] * len(units),
        **entries,
        "multiple_comparisons": family,
        "per_sample_summary": per_sample_summary,
        "notes": [
            "Unit of every test: the particle (one value per particle); pixels are never the unit.",
            "Two samples: Welch t (primary) and Mann-Whitney U; three or more: Welch ANOVA (primary), "
            "Kruskal-Wallis and Tukey HSD. Spread: Brown-Forsythe.",
            "Holm correction over the primary p-values of the reported between-sample tests (p_holm).",
            "surface_electrolyte_vs_void_combined: each sample's own paired test (electrolyte- vs "
            "void-adjacent NMC surface, particle as unit) combined over the samples by weighted Stouffer; "
            "a within-sample effect, not a between-sample comparison, so outside the Holm family.",
            "With one lamella per sample, sample and lamella are confounded.",
        ],
        "parameters": {"min_pixels": min_pixels},
    }
    return json_safe(result)


def write_compare(run_dirs, out_dir, names=None, *, paper_bins: bool = False, **kwargs) -> Path:
    """Compare run folders and write ``out_dir/compare.json`` and ``out_dir/report.html`` (atomically).

    Parameters
    ----------
    run_dirs : sequence of str or path-like
        Folders written by ``ceimap run``.
    out_dir : str or path-like
        Where to write (created if needed).
    names : sequence of str, optional
        Sample names (see :func:`compare_runs`).
    paper_bins : bool, optional
        Draw pixel histograms with the paper's ten bins over 0.7–2.4.
    **kwargs
        Passed to :func:`compare_runs` (``min_pixels``; ``final_dirs``, the run folders' names to record when
        they are to be moved).

    Returns
    -------
    Path
        The ``report.html`` written; ``compare.json`` is beside it. Both are written atomically (a
        temporary file in ``out_dir``, then :func:`os.replace`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = compare_runs(run_dirs, names, **kwargs)
    write_text_atomic(out / "compare.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    units = {n: sample_units(d, min_pixels=result["parameters"]["min_pixels"])
             for n, d in zip(result["samples"], run_dirs)}
    return write_text_atomic(out / "report.html", render_compare_report(result, units, paper_bins=paper_bins))


# --------------------------------------------------------------------------------------------------
# comparison report
# --------------------------------------------------------------------------------------------------

def _strip_plot(ax, groups: dict, ylabel: str, colours: dict):
    rng = np.random.default_rng(0)
    names = list(groups)
    for i, n in enumerate(names):
        v = np.asarray(groups[n], float)
        v = v[np.isfinite(v)]
        if v.size:
            ax.scatter(i + rng.uniform(-0.12, 0.12, v.size), v, s=22, color=colours[n], alpha=0.8, lw=0)
            if v.size > 1:
                m, s = v.mean(), v.std(ddof=1)
                ax.errorbar(i + 0.28, m, yerr=s, fmt="D", color="k", ms=5, capsize=4)
        else:
            ax.text(i, 0.5, "no units", ha="center", transform=ax.get_xaxis_transform(), color="0.4")
    ax.set_xticks(range(len(names)), [_wrap(n) for n in names], fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)


def _wrap(name: str, width: int = 16) -> str:
    words, lines, cur = name.split(), [], ""
    for w in words:
        if cur and len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines)


def _test_row(label: str, e: dict) -> list[str]:
    eff = e.get("effect") or {}
    if eff.get("difference") is not None:
        ci = eff.get("ci95") or [None, None]
        effect = (f"{_fmt(eff['difference'], 3)} [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
                  f"<br><small>{_esc(eff.get('of', ''))}</small>")
    else:
        effect = "—"
    sec = e.get("secondary") or {}
    sec_text = f"{_esc(sec.get('method', ''))}: p = {_fmt_p(sec.get('p_value'))}" if sec else "—"
    excl = e.get("excluded") or {}
    excl_text = "; ".join(f"{_esc(k)}: {_esc(v)}" for k, v in excl.items()) or "—"
    label_html = _esc(label).replace("e_g/t_2g", "e<sub>g</sub>/t<sub>2g</sub>")
    return [label_html, _esc(e.get("method") or ""), ", ".join(_esc(s) for s in e.get("samples_tested", [])) or "—",
            effect, _fmt(e.get("statistic"), 3), _fmt_p(e.get("p_value")), _fmt_p(e.get("p_holm")), sec_text,
            excl_text]


def render_compare_report(result: dict, units: dict, *, paper_bins: bool = False) -> str:
    """HTML of the comparison report from :func:`compare_runs`'s result and :func:`sample_units` per sample."""
    names = result["samples"]
    colours = {n: SAMPLE_COLOURS[i % len(SAMPLE_COLOURS)] for i, n in enumerate(names)}
    sections = []

    # samples table
    rows = []
    for n, d in zip(names, result["run_dirs"]):
        th = result["interphase_thickness"]["per_sample"][n]
        bk = result["egt2g_bulk"]["per_sample"][n]
        pss = result["per_sample_summary"][n]
        bim = pss.get("bimodality") or {}
        rows.append([f'<span style="color:{colours[n]}">■</span> {_esc(n)}', f"<code>{_esc(d)}</code>",
                     _fmt(pss.get("n_particles")),
                     (f"{_fmt(th['mean'], 3)} ± {_fmt(th['sd'], 2)} (n = {th['n_units']})" if th["n_units"]
                      else "no boundary points")
                     + ("" if th.get("resolvable") is not False else "<br><small>not resolvable</small>"),
                     f"{_fmt(bk['mean'], 3)} ± {_fmt(bk['sd'], 2)} (n = {bk['n_units']})",
                     {True: "bimodal", False: "unimodal"}.get(bim.get("bimodal"), "—")
                     + (f" (dip p = {_fmt_p(bim.get('dip_p'))})" if bim.get("dip_p") is not None else ""),
                     _surface_text(pss.get("surface_electrolyte_vs_void"))])
    sections.append(("samples", "Samples", _table(
        ["sample", "run folder", "particles", "thickness per particle (nm), mean ± sd",
         "bulk e<sub>g</sub>/t<sub>2g</sub> per particle, mean ± sd", "bulk bimodality",
         "surface at electrolyte − at void (run's own test)"], rows)
        + '<p class="caption">Means ± sd over particles (one value per particle).</p>'
        + _combined_surface_text(result.get("surface_electrolyte_vs_void_combined"))))

    # plain-language findings (Holm-corrected, alpha 0.05)
    findings = []
    for key, label in (("interphase_thickness", "Interphase thickness"),
                       ("egt2g_bulk", "Bulk e<sub>g</sub>/t<sub>2g</sub> (location)"),
                       ("egt2g_bulk_spread", "Spread of bulk e<sub>g</sub>/t<sub>2g</sub> across particles"),
                       ("egt2g_surface_electrolyte", "e<sub>g</sub>/t<sub>2g</sub> of NMC surfaces at electrolyte"),
                       ("egt2g_surface_void", "e<sub>g</sub>/t<sub>2g</sub> of NMC surfaces at voids")):
        e = result[key]
        if e.get("p_value") is None:
            why = str(e.get("method") or "").replace("not testable: ", "")
            findings.append(f"<li>{label}: not testable ({_esc(why)}).</li>")
            continue
        verdict = "differs between samples" if e.get("significant_holm") else "no significant difference"
        findings.append(f"<li>{label}: <b>{verdict}</b> ({_esc(e['method'])}, p = {_fmt_p(e['p_value'])}, "
                        f"Holm-corrected p = {_fmt_p(e.get('p_holm'))}; "
                        f"{', '.join(_esc(n) for n in e.get('samples_tested', []))}).</li>")
    sections.append(("findings", "Findings", "<ul>" + "".join(findings) + "</ul>"
                     + '<p class="caption">Decisions at α = 0.05 after Holm correction over the tests listed; '
                     "the particle is the unit.</p>"))

    # tests table
    rows = [_test_row("interphase thickness", result["interphase_thickness"]),
            _test_row("bulk e_g/t_2g — location", result["egt2g_bulk"]["location"]),
            _test_row("bulk e_g/t_2g — spread", result["egt2g_bulk_spread"]),
            _test_row("surface at electrolyte e_g/t_2g", result["egt2g_surface_electrolyte"]),
            _test_row("surface at void e_g/t_2g", result["egt2g_surface_void"])]
    tests_html = _table(["quantity", "primary test", "samples tested", "effect [95 % CI]", "statistic", "p",
                         "p (Holm)", "sensitivity test", "left out"], rows, "small")
    for key, label in (("interphase_thickness", "interphase thickness"), ("egt2g_bulk", "bulk e_g/t_2g")):
        e = result[key] if key == "interphase_thickness" else result[key]["location"]
        pw = e.get("pairwise")
        if pw:
            prow = [[_esc(p["a"]), _esc(p["b"]), _fmt(p["difference"], 3),
                     f"[{_fmt(p['ci95'][0], 3)}, {_fmt(p['ci95'][1], 3)}]", _fmt_p(p["p_adjusted"]),
                     "yes" if p["reject"] else "no"] for p in pw["pairs"]]
            tests_html += f"<h3>Tukey HSD: {_esc(label)}</h3>" + _table(
                ["a", "b", "difference (b − a)", "95 % CI", "p (adjusted)", "significant"], prow, "small")
    tests_html += ('<p class="caption">Two-tailed tests with the particle as the unit. '
                   "p (Holm): corrected over the primary tests of this table. "
                   + " ".join(_esc(n) for n in result["notes"][3:]) + "</p>")
    sections.append(("tests", "Tests between samples", tests_html))

    # figures: per-particle thickness and bulk ratio
    fig, axes = _new_figure(11, 4.0, ncols=2)
    _strip_plot(axes[0][0], {n: u["thickness_nm"].to_numpy(float) for n, u in units.items()},
                "interphase thickness per particle (nm)", colours)
    _strip_plot(axes[0][1], {n: u["egt2g"]["bulk"].to_numpy(float) for n, u in units.items()},
                "bulk e$_g$/t$_{2g}$ per particle", colours)
    axes[0][0].set_title(f"thickness: {result['interphase_thickness']['method']}, "
                         f"p = {_plain_p(result['interphase_thickness']['p_value'])}", fontsize=9)
    axes[0][1].set_title(f"bulk: {result['egt2g_bulk']['method']}, p = {_plain_p(result['egt2g_bulk']['p_value'])}; "
                         f"spread p = {_plain_p(result['egt2g_bulk_spread']['p_value'])}", fontsize=9)
    sections.append(("per-particle", "Per-particle values", _figure(
        fig, "<b>Figure 1.</b> One point per particle: mean interphase thickness (left) and mean bulk "
        "e<sub>g</sub>/t<sub>2g</sub> (right) per sample; black diamonds: mean ± sd over particles. These are "
        "the units of the tests.", "per-particle values")))

    # pixel histograms (descriptive)
    regions = [r for r in ("bulk", "surface_electrolyte", "surface_void")
               if any(u["egt2g_pixels"].get(r, np.array([])).size for u in units.values())]
    if regions:
        bins = np.linspace(*EGT2G_RANGE, (PAPER_BINS if paper_bins else 34) + 1)
        fig, axes = _new_figure(4.0 * len(regions), 3.4, ncols=len(regions), sharex=True)
        for ax, r in zip(axes[0], regions):
            for n, u in units.items():
                v = u["egt2g_pixels"].get(r, np.array([]))
                v = v[np.isfinite(v) & (v != 0)]
                if v.size:
                    ax.hist(np.clip(v, *EGT2G_RANGE), bins=bins, density=True, histtype="step", lw=1.6,
                            color=colours[n], label=f"{n} ({v.size} px)")
            ax.set_title(r.replace("_", " "), fontsize=9)
            ax.set_xlabel("e$_g$/t$_{2g}$")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
        bin_text = "the paper's ten bins" if paper_bins else "34 bins"
        sections.append(("histograms", "e<sub>g</sub>/t<sub>2g</sub> distributions", _figure(
            fig, f"<b>Figure 2.</b> e<sub>g</sub>/t<sub>2g</sub> over native STXM pixels per region and sample "
            f"({bin_text} over 0.7–2.4; descriptive — pixels are not independent).", "histograms")))
    else:
        sections.append(("histograms", "e<sub>g</sub>/t<sub>2g</sub> distributions", _na("pixel tables (pixels.csv)")))

    # provenance
    ver = {}
    for u in units.values():
        ver.update(_versions(u["summary"]))
    prov = "<p>Inputs: " + ", ".join(f"<code>{_esc(d)}</code>" for d in result["run_dirs"]) + ".</p>"
    if ver:
        prov += ("<p>Software recorded by the runs: "
                 + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in ver.items()) + ".</p>")
    prov += f"<p>Parameters: minimum pixels per particle and region = {result['parameters']['min_pixels']}.</p>"
    sections.append(("provenance", "Provenance", prov))
    title = "ceimap comparison — " + " vs ".join(names)
    return _page(title, f"{len(names)} samples", sections)


def _combined_surface_text(test) -> str:
    """Paragraph under the samples table: the runs' own surface tests combined over the samples."""
    if not isinstance(test, dict) or _finite(test.get("p_value")) is None:
        return ""
    z = ", ".join(f"{_esc(n)} z = {_fmt(v, 3)}" for n, v in (test.get("z") or {}).items())
    return (f"<p>Surface at electrolyte − at void, the samples' own tests combined (weighted Stouffer, weights "
            f"√n): Z = {_fmt(test.get('statistic'), 3)}, two-tailed p = {_fmt_p(test.get('p_value'))}, "
            f"{_fmt(test.get('n_samples'))} samples, {_fmt(test.get('n_units'))} particles ({z}); "
            f"{_esc(test.get('direction') or '')}. A within-sample effect, not a between-sample test "
            f"(outside the Holm family).</p>")


def _surface_text(test) -> str:
    if not isinstance(test, dict):
        return "—"
    if _finite(test.get("p_value")) is None:
        return f"not testable: {_esc(test.get('reason') or 'too few units')}"
    eff, lo, hi = test.get("effect"), test.get("ci_low"), test.get("ci_high")
    text = _fmt(eff, 3)
    if _finite(lo) is not None and _finite(hi) is not None:
        text += f" [{_fmt(lo, 3)}, {_fmt(hi, 3)}]"
    method = _esc(test.get("method") or "")
    return f"{text}, p = {_fmt_p(test.get('p_value'))} ({method}, n = {_fmt(test.get('n_units'))})"
