"""The run report: one self-contained HTML page rendered from the files of a run folder.

:func:`write_report` reads only what ``ceimap run`` saved in ``OUT`` (``classes.tif``, ``particles.tif``,
``egt2g.tif``, ``sem.tif``, ``registration.json``, ``particles.csv``, ``thickness.csv``, ``summary.json``,
``pixels.csv``, ``class_spectra.csv`` and, when there is an S-L stack, ``s_edge.json``), so
``ceimap report OUT`` re-renders the page without recomputing anything. Every figure is a PNG drawn with
matplotlib's Agg backend and embedded as base64; the CSS is inline; the page loads nothing from elsewhere.
A missing optional file, an empty table or a NaN value gives a stated "not available" in its place.

Sections, in order: key results (one table), maps (SEM with class overlay and particle ids, e_g/t_2g map), mean OD
spectra per class, e_g/t_2g histograms per region, per-particle plots, interphase thickness, statistical
tests, bimodality, correlations, S-edge positions, registration and drift, methods, provenance.

The report is four modules by concern: :mod:`ceimap.stats.report_load` reads the run folder (and
``summary.json`` by the keys of :mod:`ceimap.stats.summary`), :mod:`ceimap.stats.report_html` turns values,
tables and figures into HTML, :mod:`ceimap.stats.report_figures` draws the figure sections; this module holds the
text sections (key results, tests, methods, provenance) and puts the page together.
"""

from __future__ import annotations

import os
from pathlib import Path

from .report_figures import (_decomposition_section, _histogram_section, _maps_section, _per_particle_section,
    _registration_section, _spectra_section, _thickness_section)
from .report_html import (NOT_AVAILABLE, _ci_text, _effect_text, _esc, _flat_items, _fmt, _fmt_p, _generic_rows, _na,
    _p_clause, _page, _short_json, _table, _verdict, write_text_atomic)
from .report_load import (_find_key, _get, _inputs, _num, _parameters, _provenance, _resolution_nm, _s_edge_regions,
    _versions, load_run)
from .summary import Bimodality, Correlation, Correlations, Provenance, Regions, SEdge, Summary, Test, Tests


def _correlation_reading(c, alpha: float = 0.05) -> tuple[str, str]:
    """(test text, verdict) of one correlation entry: raw and Holm-adjusted p of Pearson and Spearman.

    The verdict uses the Holm-adjusted p over the lamella's correlation family (``p_holm``, written by
    :func:`ceimap.stats.inference.holm_correlations`); a correlation counts as significant when its Pearson or its
    Spearman test is. Summaries without ``p_holm`` are read on the raw p, and the verdict says so.
    """
    sp = _get(c, "spearman", default={}) or {}
    size = _num(_get(c, "holm_family_size"))
    has_holm = _num(_get(c, "p_holm")) is not None or _num(_get(sp, "p_holm")) is not None

    def p_text(entry):
        text = _p_clause(_get(entry, "p"))
        if has_holm:
            text += f" (Holm-adjusted {_fmt_p(_get(entry, 'p_holm'))})"
        return text

    text = (f"Pearson {p_text(c)}; Spearman ρ = {_fmt(_get(sp, 'rho'), 3)}, {p_text(sp)}; "
            f"n = {_fmt(_get(c, 'n'))}")
    if has_holm:
        text += f"; Holm over the lamella's {_fmt(size)} correlation tests" if size is not None else ""
        ps = [x for x in (_num(_get(c, "p_holm")), _num(_get(sp, "p_holm"))) if x is not None]
        return text, _verdict(min(ps), alpha, "Holm-adjusted")
    ps = [x for x in (_num(_get(c, "p")), _num(_get(sp, "p"))) if x is not None]
    return text, _verdict(min(ps) if ps else None, alpha, "raw p, not corrected for multiple tests")


def _key_results(run) -> str:
    """The key-results table: one row per conclusion the paper draws, with its uncertainty and test."""
    s = run["summary"]
    thick = _get(s, "interphase_thickness_nm", default={})
    eg = _get(s, "egt2g", default={})
    tests = _get(s, "tests", default={})
    test = _get(tests, "surface_electrolyte_vs_void", default={})
    bim = _get(_get(s, "bimodality", default={}), "bulk_particles", default={})
    corr = _get(s, "correlations", default={})
    regions = _get(s, "regions", default={})
    rows = []

    fr = _get(s, "class_fractions", default={})
    frac = (" / ".join(_fmt(100 * _num(_get(fr, k)) if _num(_get(fr, k)) is not None else None, 3)
                       for k in ("nmc", "interphase", "electrolyte", "void")) + " %") if fr else NOT_AVAILABLE
    rows.append(["NMC particles", _fmt(_get(s, "n_particles")),
                 f"area NMC / interphase / electrolyte / void: {frac}", ""])

    if thick:
        res_nm = _resolution_nm(run)
        resolvable = _get(thick, "resolvable")
        rows.append(["interphase thickness",
                     f"{_fmt(_get(thick, 'mean'), 3)} ± {_fmt(_get(thick, 'sd'), 2)} nm (mean ± sd)",
                     f"median {_fmt(_get(thick, 'median'), 3, 'nm')}, {_fmt(_get(thick, 'n'))} boundary points; "
                     f"STXM resolution {_fmt(res_nm, 3, 'nm')}",
                     {True: "resolvable", False: "below the STXM resolution: not resolvable"}.get(
                         resolvable, NOT_AVAILABLE)])
    bulk = _get(eg, "bulk", default={})
    if bulk:
        rows.append(["bulk NMC e<sub>g</sub>/t<sub>2g</sub>",
                     f"{_fmt(_get(bulk, 'mean'), 3)} ± {_fmt(_get(bulk, 'sd'), 2)} (mean ± sd of pixels)",
                     f"{_fmt(_get(bulk, 'n'))} native STXM pixels in {_fmt(_get(bulk, 'n_particles'))} particles",
                     ""])
    if test:
        wil = _get(test, "wilcoxon", default={}) or {}
        dz = _num(_get(test, "effect_size_dz"))
        detail = [f"{_esc(_get(test, 'method', default=''))} {_p_clause(_get(test, 'p_value'))}"]
        if _num(_get(wil, "p_value")) is not None:
            detail.append(f"Wilcoxon signed-rank {_p_clause(_get(wil, 'p_value'))}")
        detail.append(f"n = {_fmt(_get(test, 'n_units'))} particles")
        rule = _get(regions, "surface_offset_rule", default={}) or {}
        start = _num(_get(regions, "surface_offset_nm"))
        if start is not None:
            detail.append(f"bands start {_fmt(start, 3, 'nm')} deep"
                          + (f" ({_esc(_get(rule, 'rule', default=''))})" if _get(rule, "rule") else ""))
        est = _effect_text(test) + " (electrolyte − void, 95 % CI)"
        if dz is not None:
            est += f"; d<sub>z</sub> = {_fmt(dz, 2)}"
        rows.append(["NMC surface e<sub>g</sub>/t<sub>2g</sub>: electrolyte vs void contact", est,
                     "; ".join(detail), _verdict(_get(test, "p_value")) if _num(_get(test, "p_value")) is not None
                     else _esc(_get(test, "reason", default=NOT_AVAILABLE) or NOT_AVAILABLE)])
    if bim:
        verdict = {True: "bimodal", False: "unimodal (not shown bimodal)"}.get(_get(bim, "bimodal"), NOT_AVAILABLE)
        rows.append(["per-particle bulk e<sub>g</sub>/t<sub>2g</sub>: bimodality",
                     f"dip = {_fmt(_get(bim, 'dip'), 3)}; mixture means "
                     + ("[" + ", ".join(_fmt(x, 3) for x in _get(bim, "mixture_means")) + "]"
                        if isinstance(_get(bim, "mixture_means"), list) else NOT_AVAILABLE),
                     f"Hartigan dip {_p_clause(_get(bim, 'dip_p'))}; mixture bootstrap LR "
                     f"{_p_clause(_get(bim, 'mixture_p'))}; n = {_fmt(_get(bim, 'n'))} particles", verdict])
    for key, label in (("egt2g_vs_size", "size"), ("egt2g_vs_contact_ratio", "contact ratio with electrolyte")):
        c = _get(corr, key, default={}) if isinstance(corr, dict) else {}
        if not c:
            continue
        text, verdict = _correlation_reading(c)
        rows.append([f"per-particle e<sub>g</sub>/t<sub>2g</sub> vs {label}",
                     f"Pearson r = {_fmt(_get(c, 'r'), 3)} {_ci_text(c)}", text, verdict])
    s_edge = _get(s, "s_edge", default={})
    shift = _get(s_edge, "shift", default={}) if isinstance(s_edge, dict) else {}
    if isinstance(shift, dict) and _num(_get(shift, "shift_ev")) is not None:
        rows.append(["S L-edge shift, interphase − electrolyte",
                     f"{_fmt(_get(shift, 'shift_ev'), 3)} ± {_fmt(_get(shift, 'sigma_ev'), 2)} eV "
                     f"[{_fmt(_get(shift, 'ci_low'), 3)}, {_fmt(_get(shift, 'ci_high'), 3)}]",
                     f"z test on fitted positions, {_p_clause(_get(shift, 'p_value'))}", _verdict(
                         _get(shift, "p_value"))])
    if not rows:
        return _na("key results (summary.json)")
    return (_table(["result", "estimate", "uncertainty and test", "reading (two-tailed)"], rows, "key")
            + '<p class="caption">Units of replication: particles for e<sub>g</sub>/t<sub>2g</sub> tests and '
              "correlations, boundary points for thickness. Details, figures and the pixel-level contrasts "
              "follow below.</p>")


def _tests_section(run) -> str:
    tests = _get(run["summary"], "tests", default={})
    if not isinstance(tests, dict) or not tests:
        return _na("statistical tests (summary.json 'tests')")
    rows = []
    for name, entry in _flatten_tests(tests):
        method = str(_get(entry, "method", default=""))
        naive = "pseudo" in method.lower() or "naive" in name
        label = _esc(name.replace("_", " ")) + (' <small class="na">(for contrast only)</small>' if naive else "")
        rows.append([label, _esc(method),
                     _fmt(_get(entry, Test.N_GROUPS if name == Tests.SURFACE_MIXED_MODEL else Test.N_UNITS)),
                     _effect_text(entry),
                     _fmt(_get(entry, Test.STATISTIC), 3), _fmt_p(_get(entry, Test.P_VALUE)),
                     _esc(_get(entry, "reason", default="") or "")])
    return _table(["test", "method", "n units", "effect [95 % CI]", "statistic", "p (two-tailed)", "note"],
                  rows) + (
        '<p class="caption">The primary tests use one value per independent unit (particle or interface '
        "segment), never per pixel; a pixel-level test, where listed, is shown only to contrast with it "
        "(pixels within a particle are correlated, so its p-value is meaningless). Effect = "
        "electrolyte-adjacent minus void-adjacent surface where applicable.</p>")


def _flatten_tests(tests: dict, prefix: str = ""):
    """(name, entry) for every dict in ``tests`` that carries a p-value, descending one level into groups."""
    for name, entry in tests.items():
        if not isinstance(entry, dict):
            continue
        full = f"{prefix}{name}"
        if _get(entry, Test.P_VALUE) is not None or Test.METHOD in entry:
            yield full, entry
        for sub, sub_entry in entry.items():
            if isinstance(sub_entry, dict) and _get(sub_entry, Test.P_VALUE) is not None:
                yield f"{full} / {sub}", sub_entry


def _bimodality_section(run) -> str:
    bim = _get(run["summary"], "bimodality", default={})
    if not isinstance(bim, dict) or not bim:
        return _na("bimodality (summary.json 'bimodality')")
    main_keys = ("bimodal", "rule", "dip", "dip_p", "mixture_lr", "mixture_p", "mixture_means", "mixture_weights",
                 "bimodality_coefficient", "n", "value")
    parts = []
    for name, entry in bim.items():
        if isinstance(entry, dict):
            first = {k: entry[k] for k in main_keys if k in entry}
            rest = {k: v for k, v in entry.items() if k not in main_keys}
            parts.append(f"<h3>{_esc(name.replace('_', ' '))}</h3>"
                         + _table(["quantity", "value"], _generic_rows(first, ("bimodal", "dip_p", "rule")), "kv"))
            if rest:
                parts.append(f"<details><summary>More ({len(rest)})</summary>"
                             f"{_table(['quantity', 'value'], _generic_rows(rest), 'kv small')}</details>")
    return "".join(parts) or _na("bimodality")


def _correlations_section(run) -> str:
    corr = _get(run["summary"], "correlations", default={})
    if not isinstance(corr, dict) or not corr:
        return _na("correlations (summary.json 'correlations')")
    rows = []
    for name, entry in corr.items():
        if not isinstance(entry, dict):
            continue
        n = _get(entry, Correlation.N)
        label = _esc(name.replace("_", " ")).replace("egt2g", "e<sub>g</sub>/t<sub>2g</sub>")
        rows.append([label, _esc(_get(entry, "method", default="")), _fmt(_get(entry, Correlation.R), 3),
                     _ci_text(entry), _fmt_p(_get(entry, Correlation.P)), _fmt_p(_get(entry, Correlation.P_HOLM)),
                     _fmt(n),
                     _esc(_get(entry, "reason", default="") or "")])
        se = _get(entry, Correlation.SPEARMAN)
        if isinstance(se, dict) and _get(se, Correlation.RHO) is not None:
            rows.append([label, _esc(Correlation.SPEARMAN), _fmt(_get(se, Correlation.RHO), 3),
                         _ci_text(se), _fmt_p(_get(se, Correlation.P)), _fmt_p(_get(se, Correlation.P_HOLM)),
                         _fmt(n), ""])
    return _table(["correlation", "method", "r", "95 % CI", "p", "p (Holm)", "n particles", "note"], rows) + (
        '<p class="caption">Correlations of the per-particle mean e<sub>g</sub>/t<sub>2g</sub> with particle '
        "size and with the perimeter contact ratio with electrolyte; one point per particle; CIs by Fisher "
        "z where given. p is each test's own two-tailed p; p (Holm) is adjusted by Holm's method over all "
        "correlation tests of this lamella (size and contact ratio, Pearson and Spearman), and is the one "
        "the key results read at α = 0.05.</p>")


def _s_edge_section(run) -> str:
    s_edge = run["s_edge"]
    if not isinstance(s_edge, dict):
        return _na("S L-edge positions (no S-L stack: s_edge.json absent)")
    rows = []
    for region, entry in _s_edge_regions(s_edge):
        rows.append([_esc(region.replace("_", " ")), _fmt(_get(entry, SEdge.POSITION_EV), 5, "eV"),
                     _fmt(_get(entry, SEdge.SIGMA_EV), 2, "eV"), _fmt(_get(entry, SEdge.N_PIXELS)),
                     _esc(_get(entry, "reason", default="") or "")])
    parts = []
    if rows:
        parts.append(_table(["region", "fitted edge position", "uncertainty (1σ)", "pixels", "note"], rows))
    shift = _get(s_edge, "shift")
    if isinstance(shift, dict):
        est = _get(shift, SEdge.SHIFT_EV)
        parts.append(
            f"<p><b>Shift, interphase − electrolyte:</b> {_fmt(est, 3, 'eV')} "
            f"± {_fmt(_get(shift, 'sigma_ev'), 2, 'eV')}, "
            f"95 % CI {_ci_text(shift)}, {_p_clause(_get(shift, SEdge.P_VALUE))} "
            f"({_esc(_get(shift, 'method', default=''))})"
            + (f"; {_esc(shift['reason'])}" if shift.get("reason") else "") + ".</p>")
    method = _get(s_edge, "method")
    if isinstance(method, str):
        parts.append(f'<p class="caption">Edge positions: {_esc(method)}. The paper finds the bulk electrolyte '
                     "low-energy S<sup>2−</sup> peak at ~163.9 eV and the interphase shifted to ~164.1 eV after "
                     "cycling.</p>")
    if not parts and s_edge.get("reason"):
        return _na(f"S L-edge positions ({s_edge['reason']})")
    return "".join(parts) or _na("S L-edge positions")


def _methods_section(run) -> str:
    s = run["summary"]
    params = _parameters(s)
    versions = _versions(s)
    reg = run["registration"] if isinstance(run["registration"], dict) else {}
    edges = [e for e, v in reg.items() if isinstance(v, dict)]
    stxm_px = {e: _num(_get(reg[e], "stxm_pixel_nm")) for e in edges}
    t2g = _num(_find_key(params, ("t2g_ev",))) or 850.0
    eg = _num(_find_key(params, ("eg_ev",))) or 852.0
    test = _get(_get(s, "tests", default={}), "surface_electrolyte_vs_void", default={})
    bim = _get(_get(s, "bimodality", default={}), "bulk_particles", default={})
    corr = _get(s, "correlations", default={})
    sentences = []
    px_text = ", ".join(f"{_esc(e)} ({_fmt(p, 3, 'nm')} pixels)" if p else _esc(e) for e, p in stxm_px.items())
    sentences.append(
        f"SEM image ({_fmt(_get(s, 'sem_pixel_nm'), 3, 'nm')} pixels) and STXM stacks"
        + (f" at {px_text}" if px_text else "") + " were read from the raw files listed under Provenance. "
        "Energy frames were drift-corrected and converted to optical density OD = −ln(I/I<sub>0</sub>); "
        "each STXM stack was registered to the SEM image"
        + (" (" + ", ".join(sorted({_esc(_get(reg[e], 'method', default='')) for e in edges} - {""})) + ")"
           if edges else "") + ".")
    method = _get(_get(params, "segmentation", default={}), "method")
    sentences.append(
        "Pixels were assigned to NMC, interphase, electrolyte and void classes on the SEM grid"
        + (f" by {_esc(method)}" if isinstance(method, str) else "")
        + "; NMC particles were separated into instances.")
    model = params.get("model") if isinstance(params.get("model"), dict) else None
    if model:
        spec = model.get("feature_spec") if isinstance(model.get("feature_spec"), dict) else {}
        sentences.append(
            f"The class map came from the trained pixel classifier {_esc(model.get('file'))} "
            f"(SHA-256 {_esc(str(model.get('sha256'))[:16])}…; {_esc(model.get('estimator'))}, trained on "
            f"{_esc(', '.join(map(str, model.get('trained_on') or [])))}; feature spec version "
            f"{_esc(spec.get('version'))}, {len(spec.get('names') or [])} features).")
    sentences.append(
        f"The Ni e<sub>g</sub>/t<sub>2g</sub> ratio was taken from the L<sub>3</sub> features at "
        f"{t2g:g} eV (t<sub>2g</sub>) and {eg:g} eV (e<sub>g</sub>) and analysed on native STXM pixels, with the "
        "class map brought to the STXM grid, in three regions: bulk NMC, the NMC surface in contact with "
        "electrolyte and the NMC surface band adjacent to voids"
        + _band_text(s) + ".")
    band_rule = _band_rule_text(s)
    if band_rule:
        sentences.append(band_rule)
    sentences.append("Interphase thickness was measured normal to the NMC surface from the NMC boundary to the "
                     "electrolyte boundary at points along every NMC–interphase boundary.")
    if test:
        test_method = _esc(_get(test, "method", default="a two-tailed test"))
        sentences.append(f"Electrolyte- and void-adjacent surfaces were compared by {test_method} "
                         f"with the particle as the unit (n = {_fmt(_get(test, 'n_units'))}).")
    if bim:
        extra = (" and a one- versus two-component Gaussian mixture (parametric-bootstrap likelihood ratio)"
                 if _get(bim, "mixture_p") is not None else "")
        sentences.append(f"Bimodality of per-particle bulk means was assessed with "
                         f"{_esc(_get(bim, Bimodality.DIP_METHOD, default='Hartigan’s dip test'))}{extra}.")
    if isinstance(corr, dict) and corr:
        ms = {_esc(_get(c, "method", default="")) for c in corr.values() if isinstance(c, dict)}
        ms |= {_esc(k) for c in corr.values() if isinstance(c, dict) for k, v in c.items() if isinstance(v, dict)}
        ms = sorted(ms - {""})
        if ms:
            holm = any(isinstance(c, dict) and _get(c, "p_holm") is not None for c in corr.values())
            sentences.append(f"Correlations of per-particle means with size and contact ratio: {' and '.join(ms)} "
                             "coefficients" + ("; their p-values were adjusted together by Holm’s method and "
                                               "read at α = 0.05." if holm else "."))
    seed = _get(_provenance(s), Provenance.SEED)
    if seed is not None:
        sentences.append(f"Random seed {_esc(seed)}.")
    if versions:
        sentences.append("Software: " + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in versions.items()) + ".")
    out = "<p>" + " ".join(sentences) + "</p>"
    if params:
        rows = []
        for k, v in _flat_items(params):
            rows.append([_esc(k), _esc(_short_json(v)) if isinstance(v, (list, dict)) else _fmt(v, 5)])
        out += (f"<details><summary>All parameters ({len(rows)})</summary>"
                f"{_table(['parameter', 'value'], rows, 'kv small')}</details>")
    else:
        out += _na("parameter list (summary.json 'parameters')")
    return out


def _band_text(summary: dict) -> str:
    regions = _get(summary, "regions", default={})
    band = _num(_get(regions, Regions.SURFACE_BAND_NM))
    margin = _num(_get(regions, Regions.BULK_MARGIN_NM))
    start = _num(_get(regions, "surface_offset_nm"))
    parts = []
    if band is not None:
        parts.append(f"surface band {_fmt(band, 3, 'nm')} wide"
                     + (f", starting {_fmt(start, 3, 'nm')} inside the NMC edge" if start is not None else ""))
    if margin is not None:
        parts.append(f"bulk at least {_fmt(margin, 3, 'nm')} inside the particle surface")
    return f" ({'; '.join(parts)})" if parts else ""


def _band_rule_text(summary: dict) -> str:
    """One sentence on how the surface bands' start depth was chosen (stats.regions rule), with its numbers."""
    regions = _get(summary, "regions", default={})
    rule = _get(regions, "surface_offset_rule", default=None)
    start = _num(_get(regions, "surface_offset_nm"))
    c1 = _num(_get(regions, "contamination_nm"))
    sigma = _num(_get(regions, "sigma_eff_nm"))
    if not isinstance(rule, dict) or start is None:
        return ""
    name = str(_get(rule, "rule", default=""))
    probe = (f"the probe ⊗ pixel is a Gaussian of σ = {_fmt(sigma, 3, 'nm')}, so less than 1 % of a pixel's "
             f"signal comes from beyond {_fmt(c1, 3, 'nm')}" if sigma is not None and c1 is not None else "")
    if name.startswith("bias"):
        amounts = _get(rule, "ni_amount", default={}) or {}
        ratios = _get(rule, "ratio", default={}) or {}
        return (f"The surface bands start {_fmt(start, 3, 'nm')} inside the NMC edge ({probe}): the smallest depth "
                "at which the bias that the probe's view of the neighbouring classes can put on the "
                + ("electrolyte − void difference of the band means (averaged over the band's depths; "
                   if _get(rule, "criterion") == "band_mean" else
                   "electrolyte − void difference at the band's shallowest pixels (") +
                f"upper 95 % bound {_fmt(_get(rule, 'bias_bound_at_start'), 2)}; "
                f"measured on this lamella: interphase Ni per unit area {_fmt(_get(rule, 'interphase_ni_fraction'), 2)}"
                f" of NMC's, interphase e<sub>g</sub>/t<sub>2g</sub> {_fmt(_get(ratios, 'interphase'), 3)} against "
                f"NMC {_fmt(_get(ratios, 'nmc'), 3)}) is at most k = {_fmt(_get(rule, 'k'), 2)} standard errors of "
                f"the paired difference (SE {_fmt(_get(rule, 'se_paired_difference'), 2)}, "
                f"{_fmt(_get(rule, 'n_pairs'))} pairs), which keeps the test's false-positive rate at α = "
                f"{_fmt(_get(rule, 'alpha'), 2)} below {_fmt(_get(rule, 'max_fpr'), 2)}"
                + (f"; {_esc(_get(rule, 'reason'))}" if _get(rule, "reason") else "") + ".")
    if name.startswith("fixed"):
        return f"The surface bands start {_fmt(start, 3, 'nm')} inside the NMC edge (set by the user)."
    reason = _get(rule, "reason")
    return (f"The surface bands start {_fmt(start, 3, 'nm')} inside the NMC edge, the conservative 1 % depth "
            f"({probe})" + (f": {_esc(reason)}" if reason else "") + ".")


def _provenance_section(run, out_dir: Path) -> str:
    s = run["summary"]
    inputs = _inputs(s)
    parts = []
    if inputs:
        rows = []
        for item in inputs:
            sha = _get(item, Provenance.SHA256, default="")
            rows.append(["",  # the inputs carry no role: the manifest's file order says it
                         f"<code>{_esc(_get(item, Provenance.PATH, default=''))}</code>",
                         f'<code class="hash">{_esc(sha)}</code>' if sha
                         else f'<span class="na">{NOT_AVAILABLE}</span>'])
        parts.append(_table(["role", "input file", "sha256"], rows, "small"))
    else:
        parts.append(_na("input files with sha256 (summary.json provenance)"))
    files = ", ".join(f"<code>{_esc(n)}</code>" for n in sorted(run["files"]))
    parts.append(f"<p>Rendered from the files of the run folder: {files or 'none'} "
                 "(<code>ceimap report OUT</code> re-renders this page from them).</p>")
    return "".join(parts)


_SECTIONS = (
    ("summary", "Key results", _key_results),
    ("maps", "Maps", _maps_section),
    ("spectra", "Spectra per class", _spectra_section),
    ("decomposition", "Unmixing: components and abundances", _decomposition_section),
    ("histograms", "e<sub>g</sub>/t<sub>2g</sub> by region", _histogram_section),
    ("particles", "Per particle", _per_particle_section),
    ("thickness", "Interphase thickness", _thickness_section),
    ("tests", "Statistical tests", _tests_section),
    ("bimodality", "Bimodality", _bimodality_section),
    ("correlations", "Correlations", _correlations_section),
    ("s-edge", "S L-edge", _s_edge_section),
    ("registration", "Registration and drift", _registration_section),
    ("methods", "Methods", _methods_section),
)
"""The report's sections in page order: (anchor, title, function of the loaded run)."""


_OFFLOADED = ("maps", "histograms")
"""Sections drawn in a worker process when :func:`render_report` is given a pool: the two largest figures
(2048² maps resampled, per-region histograms), about half the drawing time of a report."""


def _render_sections(out_dir, names, paper_bins: bool = False) -> dict:
    """HTML of the named sections (anchors of ``_SECTIONS``) of a run folder; what a worker process runs."""
    run = load_run(Path(out_dir))
    return _sections_html(run, names, paper_bins)


def _sections_html(run, names, paper_bins: bool) -> dict:
    functions = {sid: function for sid, _, function in _SECTIONS}
    return {sid: functions[sid](run, paper_bins) if sid == "histograms" else functions[sid](run) for sid in names}


def warm_up() -> None:
    """Import what drawing a report needs (matplotlib's Agg canvas, pandas), e.g. in an idle worker process."""
    import pandas  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), layout="constrained")
    fig.subplots().set_title("warm-up")
    FigureCanvasAgg(fig).draw()  # loads the font and its cache once


def render_report(out_dir, *, paper_bins: bool = False, pool=None) -> str:
    """The report of a run folder as an HTML string (see :func:`write_report`).

    Parameters
    ----------
    out_dir : path-like
    paper_bins : bool, optional
    pool : concurrent.futures.Executor, optional
        A process pool: the largest figures (``_OFFLOADED``) are then drawn in one of its workers, from the
        files of ``out_dir``, while this process draws the others. The page is the same.
    """
    out = Path(out_dir)
    future = pool.submit(_render_sections, str(out), _OFFLOADED, paper_bins) if pool is not None else None
    try:
        run = load_run(out)
        html_of = _sections_html(run, [sid for sid, _, _ in _SECTIONS if future is None or sid not in _OFFLOADED],
                                 paper_bins)
        if future is not None:
            html_of.update(future.result())
    except BaseException:
        if future is not None:
            future.cancel()
        raise
    s = run["summary"]
    name = _get(s, Summary.NAME)
    sample = _get(s, "sample")
    shown = list(dict.fromkeys(str(x) for x in (name, sample) if x))
    title = "ceimap report — " + (" · ".join(shown) if shown else out.name)
    meta_parts = []
    created = _get(_provenance(s), Provenance.CREATED_UTC)
    if created:
        meta_parts.append(f"run {_esc(created)}")
    ver = _versions(s).get("ceimap")
    if ver:
        meta_parts.append(f"ceimap {_esc(ver)}")
    meta = " · ".join(meta_parts) or "ceimap run report"
    sections = [(sid, title_html, html_of[sid]) for sid, title_html, _ in _SECTIONS]
    sections.append(("provenance", "Provenance", _provenance_section(run, out)))
    return _page(title, meta, sections)


def write_report(out_dir, *, paper_bins: bool = False, path=None, pool=None) -> Path:
    """Render ``OUT/report.html`` from the files of a run folder, without recomputing anything.

    Parameters
    ----------
    out_dir : str or path-like
        A folder written by ``ceimap run``. Only its files are read: ``classes.tif``, ``particles.tif``,
        ``egt2g.tif``, ``sem.tif``, ``registration.json``, ``particles.csv``, ``thickness.csv``,
        ``summary.json``, ``pixels.csv``, ``class_spectra.csv`` and (optional) ``s_edge.json``. Any of them
        may be missing; its section then says "not available".
    paper_bins : bool, optional
        Draw the e_g/t_2g histograms with the paper's ten bins over 0.7–2.4 (zeros excluded) instead of
        Freedman–Diaconis bins over the same range.
    path : str or path-like, optional
        Where to write; default ``out_dir / "report.html"``.
    pool : concurrent.futures.Executor, optional
        A process pool to draw the largest figures in, alongside this process (:func:`render_report`).

    Returns
    -------
    Path
        The report written (atomically: a temporary file in the same folder, then :func:`os.replace`).

    Raises
    ------
    CeimapInputError
        ``out_dir`` is not an existing folder.
    """
    from ceimap.segment.errors import CeimapInputError

    out = Path(out_dir)
    if not out.is_dir():
        raise CeimapInputError("not a run folder (does not exist or is not a folder)", path=out)
    text = render_report(out, paper_bins=paper_bins, pool=pool)
    return write_text_atomic(Path(path) if path is not None else out / "report.html", text)
