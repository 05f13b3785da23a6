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
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ceimap.segment import Class

from .summary import (REGIONS, Bimodality, Correlation, Correlations, Provenance, Regions, SEdge, Summary, Test,
                      Tests, Thickness, class_key, class_label)

CLASS_COLOURS = {Class.NMC: "#d62728", Class.INTERPHASE: "#2ca02c", Class.ELECTROLYTE: "#1f77b4",
                 Class.VOID: "#4d4d4d"}
"""Class colours as in the paper: NMC red, interphase green, electrolyte blue, void dark grey."""

REGION_COLOURS = {
    "bulk": "#d62728",
    "surface_electrolyte": "#1f77b4",
    "surface_void": "#7f7f7f",
    "interphase": "#2ca02c",
}
"""Region colours after the class they face: bulk NMC red, surface at electrolyte blue, surface at void grey,
interphase green."""
REGION_LABELS = {
    "bulk": "bulk NMC",
    "surface_electrolyte": "NMC surface at electrolyte",
    "surface_void": "NMC surface at void",
    "interphase": "interphase",
}
EGT2G_RANGE = (0.7, 2.4)
"""Display range of e_g/t_2g maps and histograms (the paper's Figure 4 colour scale)."""

PAPER_BINS = 10
"""The paper's histogram: ten bins over 0.7-2.4, zeros excluded."""

NOT_AVAILABLE = "not available"


# --------------------------------------------------------------------------------------------------
# reading the run folder
# --------------------------------------------------------------------------------------------------

def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_csv(path: Path):
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


def _read_tiff(path: Path):
    from ceimap.segment.io.tiff import read_tiff_image

    if not path.is_file():
        return None
    try:
        return read_tiff_image(path)
    except (OSError, ValueError):  # CeimapInputError included: a damaged map is left out of the report
        return None


def load_run(out_dir) -> dict:
    """Read the files of a run folder that the report uses.

    Parameters
    ----------
    out_dir : str or path-like
        A folder written by ``ceimap run``.

    Returns
    -------
    dict
        Keys ``classes``, ``particles_map``, ``egt2g``, ``sem`` (arrays or None), ``registration``,
        ``summary``, ``s_edge`` (dicts or None), ``particles``, ``thickness``, ``pixels``,
        ``class_spectra`` (DataFrames or None) and ``files`` (name to Path of every file found).
    """
    out = Path(out_dir)
    names = {
        "classes": "classes.tif", "particles_map": "particles.tif", "egt2g": "egt2g.tif", "sem": "sem.tif",
        "registration": "registration.json", "summary": "summary.json", "s_edge": "s_edge.json",
        "particles": "particles.csv", "thickness": "thickness.csv", "pixels": "pixels.csv",
        "class_spectra": "class_spectra.csv", "components": "components.csv", "abundances": "abundances.tif",
    }
    run = {"files": {}}
    for key, name in names.items():
        path = out / name
        if path.is_file():
            run["files"][name] = path
        if name.endswith(".tif"):
            run[key] = _read_tiff(path)
        elif name.endswith(".json"):
            run[key] = _read_json(path)
        else:
            run[key] = _read_csv(path)
    if run["summary"] is None:
        run["summary"] = {}
    return run


# --------------------------------------------------------------------------------------------------
# small helpers: numbers, HTML, figures
# --------------------------------------------------------------------------------------------------

def _num(value) -> float | None:
    """A finite float from a JSON value, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(value, digits: int = 3, unit: str = "") -> str:
    """Format a number with ``digits`` significant figures, or "not available"."""
    x = _num(value)
    if x is None:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, str) and value:
            return html.escape(value)
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    if x != 0 and (abs(x) < 1e-4 or abs(x) >= 10 ** (digits + 3)):
        s = f"{x:.{max(digits - 1, 1)}e}"
    elif float(x).is_integer() and abs(x) < 1e9:
        s = f"{int(x)}"
    else:
        s = f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits, 1)}g}"
        if "e" in s:
            s = f"{x:.1f}"
    return s + (f" {unit}" if unit else "")


def _fmt_p(value) -> str:
    x = _num(value)
    if x is None:
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    if x <= 0:
        return "&lt; 1e-300"  # underflow: smaller than a double can hold
    if x < 1e-4:
        return f"{x:.1e}"
    return f"{x:.3g}" if x < 0.01 else f"{x:.3f}"


def _p_clause(value) -> str:
    """"p = 0.012" or "p < 1e-300" (HTML)."""
    text = _fmt_p(value)
    return f"p {text}" if text.startswith("&lt;") else f"p = {text}"


def _esc(value) -> str:
    return html.escape(str(value))


def _get(d, *keys, default=None):
    """First present key of ``keys`` in dict ``d`` (None-safe)."""
    if not isinstance(d, dict):
        return default
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _na(what: str) -> str:
    return f'<p class="na">{_esc(what)}: {NOT_AVAILABLE}.</p>'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML strings."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def _new_figure(width_in: float, height_in: float, ncols: int = 1, nrows: int = 1, **kwargs):
    # a bare Figure renders with the Agg canvas on savefig: no pyplot, no GUI backend touched
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _figure(fig, caption: str, alt: str) -> str:
    # one Agg draw, then the buffer as PNG: ``savefig`` would draw a layout-engine figure twice (a dry run
    # for the constrained layout, then the real one), and the layout and tick text are most of the cost
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    fig.set_dpi(110)
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    # zlib level 1: half the encoding time of the default 6, and no larger on these flat-colour figures
    imsave(buf, canvas.buffer_rgba(), format="png", dpi=110, origin="upper", pil_kwargs={"compress_level": 1})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _sem_pixel_nm(run) -> float | None:
    return _num(_get(run["summary"], "sem_pixel_nm"))


def _extent_um(shape, pixel_nm):
    """imshow extent in µm with pixel centres at integer indices (x_nm = x * pixel_size_nm)."""
    ny, nx = shape
    p = pixel_nm / 1000.0
    return [-0.5 * p, (nx - 0.5) * p, (ny - 0.5) * p, -0.5 * p]


def _display_range(image) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------

def _verdict(p, alpha: float = 0.05, note: str = "") -> str:
    """Reading of a two-tailed p-value at ``alpha``; ``note`` (e.g. "Holm-adjusted") says which p was used."""
    p = _num(p)
    if p is None:
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    which = f"{note} " if note else ""
    if p < 0.01:
        return f"significant ({which}p &lt; 0.01)"
    if p < alpha:
        return f"significant at α = {alpha:g}" + (f" ({note})" if note else "")
    return f"not significant at α = {alpha:g}" + (f" ({note})" if note else "")


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


def _effect_text(entry) -> str:
    """A test entry's effect with its 95 % CI (``effect``, ``ci_low``, ``ci_high``)."""
    text = _fmt(_get(entry, Test.EFFECT), 3)
    ci = [_get(entry, Test.CI_LOW), _get(entry, Test.CI_HIGH)]
    if _num(ci[0]) is not None and _num(ci[1]) is not None:
        text += f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
    return text


def _maps_section(run) -> str:
    classes, sem, pmap, egt2g = run["classes"], run["sem"], run["particles_map"], run["egt2g"]
    pixel_nm = _sem_pixel_nm(run)
    parts = []
    base = sem if sem is not None else None
    shape = None
    for a in (classes, sem, egt2g, pmap):
        if a is not None and a.ndim == 2:
            shape = a.shape
            break
    if shape is None:
        return _na("maps (classes.tif, sem.tif, egt2g.tif)")
    if pixel_nm is None:  # no pixel size: axes in SEM pixels, positions in nm cannot be placed
        ny, nx = shape
        extent, unit_label, to_axis = [-0.5, nx - 0.5, ny - 0.5, -0.5], "SEM pixels", None
    else:
        extent, unit_label, to_axis = _extent_um(shape, pixel_nm), "µm", 1e-3

    # -- figure 1: SEM | SEM + classes + particle ids
    from matplotlib.patches import Patch

    fig, axes = _new_figure(11, 5.2, ncols=2)
    ax0, ax1 = axes[0]
    if base is not None and base.shape == shape:
        lo, hi = _display_range(base.astype(float))
        for ax in (ax0, ax1):
            ax.imshow(base, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="antialiased")
        ax0.set_title("SEM")
    else:
        ax0.text(0.5, 0.5, f"SEM image {NOT_AVAILABLE}", ha="center", va="center", transform=ax0.transAxes)
        ax0.set_title("SEM")
    if classes is not None and classes.shape == shape:
        rgba = np.zeros(shape + (4,), dtype=float)
        from matplotlib.colors import to_rgba

        for code, colour in CLASS_COLOURS.items():
            sel = classes == code
            rgba[sel] = to_rgba(colour, 0.45 if base is not None else 1.0)
        ax1.imshow(rgba, extent=extent, interpolation="nearest")
        present = [c for c in CLASS_COLOURS if np.any(classes == c)]
        handles = [Patch(color=CLASS_COLOURS[c], label=class_label(c)) for c in present]
        if handles:
            ax1.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
        if pmap is not None and pmap.shape == shape:
            from skimage.segmentation import find_boundaries

            edges = find_boundaries(pmap.astype(np.int64), mode="inner") & (pmap > 0)
            over = np.zeros(shape + (4,))
            over[edges] = (1.0, 1.0, 0.2, 0.9)
            ax1.imshow(over, extent=extent, interpolation="nearest")
        for pid, x_nm, y_nm in (_particle_positions(run) if to_axis else []):
            ax1.text(x_nm * to_axis, y_nm * to_axis, str(pid), color="white", fontsize=8, ha="center", va="center",
                     fontweight="bold",
                     bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.55, lw=0))
        ax1.set_title("classes and particle ids")
    else:
        ax1.text(0.5, 0.5, f"class map {NOT_AVAILABLE}", ha="center", va="center", transform=ax1.transAxes)
    for ax in (ax0, ax1):
        ax.set_xlabel(f"x ({unit_label})")
        ax.set_ylabel(f"y ({unit_label})")
    parts.append(_figure(fig, "<b>Figure 1.</b> SEM image of the lamella (left) and the class map overlaid on it "
                         "(right): NMC red, interphase green, electrolyte blue, void grey; uncoloured = outside "
                         "the analysed area. Yellow outlines and numbers: NMC particle ids as in "
                         "<code>particles.csv</code>.", "SEM and class map"))

    # -- figure 2: e_g/t_2g map
    if egt2g is not None and egt2g.shape == shape:
        fig, axes = _new_figure(5.6, 4.4)
        ax = axes[0][0]
        if base is not None and base.shape == shape:
            lo, hi = _display_range(base.astype(float))
            ax.imshow(base, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="antialiased")
        shown = np.where(np.isfinite(egt2g) & (egt2g != 0), egt2g, np.nan)
        im = ax.imshow(shown, cmap="viridis", vmin=EGT2G_RANGE[0], vmax=EGT2G_RANGE[1], extent=extent,
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label("e$_g$/t$_{2g}$ (Ni L$_3$ peak ratio)")
        ax.set_xlabel(f"x ({unit_label})")
        ax.set_ylabel(f"y ({unit_label})")
        ax.set_title("Ni e$_g$/t$_{2g}$")
        parts.append(_figure(fig, "<b>Figure 2.</b> Ni e<sub>g</sub>/t<sub>2g</sub> peak ratio (higher = more "
                             "oxidised Ni) resampled onto the SEM grid, colour scale 0.7–2.4 as in the paper; "
                             "grey = no Ni signal. Statistics below use native STXM pixels, not this "
                             "resampled picture.", "e_g/t_2g map"))
    else:
        parts.append(_na("e_g/t_2g map (egt2g.tif)"))
    return "".join(parts)


def _particle_positions(run):
    """(id, x_nm, y_nm) of every particle: from particles.csv, else centres of mass of particles.tif."""
    df = run["particles"]
    if df is not None and {"particle_id", "centroid_x_nm", "centroid_y_nm"} <= set(df.columns):
        out = []
        for pid, x, y in zip(df["particle_id"], df["centroid_x_nm"], df["centroid_y_nm"]):
            if _num(x) is not None and _num(y) is not None:
                out.append((int(pid), float(x), float(y)))
        return out
    pmap, pixel_nm = run["particles_map"], _sem_pixel_nm(run)
    if pmap is None or pixel_nm is None:
        return []
    from scipy import ndimage

    ids = np.unique(pmap[pmap > 0])
    if ids.size == 0:
        return []
    centres = ndimage.center_of_mass(np.ones_like(pmap, dtype=float), pmap, ids)
    return [(int(i), c[1] * pixel_nm, c[0] * pixel_nm) for i, c in zip(ids, centres)]


def _feature_energies(run) -> dict:
    """Energies to mark on the spectra: t2g/eg for Ni-L (from parameters, default 850/852 eV), S-edge fits."""
    params = _parameters(run["summary"])
    t2g = _num(_find_key(params, ("t2g_ev",))) or 850.0
    eg = _num(_find_key(params, ("eg_ev",))) or 852.0
    marks = {"Ni-L": [(t2g, "t$_{2g}$"), (eg, "e$_g$")]}
    s_edge = run["s_edge"]
    if isinstance(s_edge, dict):
        marks["S-L"] = []
        for region, entry in _s_edge_regions(s_edge):
            pos = _num(_get(entry, SEdge.POSITION_EV))
            if pos is not None:
                marks["S-L"].append((pos, region))
    return marks


def _spectra_section(run) -> str:
    df = run["class_spectra"]
    need = {"edge", "class_name", "energy_ev", "od_mean"}
    if df is None or df.empty or not need <= set(df.columns):
        return _na("mean spectra per class (class_spectra.csv)")
    edges = list(dict.fromkeys(df["edge"].astype(str)))
    marks = _feature_energies(run)
    fig, axes = _new_figure(5.6 * len(edges), 4.2, ncols=len(edges))
    colour_of = {class_key(c): colour for c, colour in CLASS_COLOURS.items()}
    for ax, edge in zip(axes[0], edges):
        sub = df[df["edge"].astype(str) == edge]
        for cname in dict.fromkeys(sub["class_name"].astype(str)):
            s = sub[sub["class_name"].astype(str) == cname].sort_values("energy_ev")
            e = s["energy_ev"].to_numpy(float)
            m = s["od_mean"].to_numpy(float)
            colour = colour_of.get(cname.lower(), None)
            n = ""
            if "n_pixels" in s.columns and len(s):
                n = f" (n = {int(np.nanmax(s['n_pixels']))} px)"
            shown = class_label(Class[cname.upper()]) if cname.upper() in Class.__members__ else cname
            line, = ax.plot(e, m, color=colour, lw=1.6, label=f"{shown}{n}")
            if "od_sd" in s.columns:
                sd = s["od_sd"].to_numpy(float)
                ax.fill_between(e, m - sd, m + sd, color=line.get_color(), alpha=0.18, lw=0)
        for i, (energy, label) in enumerate(marks.get(edge, [])):
            ax.axvline(energy, color="k", ls="--", lw=0.8)
            ax.text(energy, 1.01 + 0.045 * (i % 2), label, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)
        ax.set_xlabel("photon energy (eV)")
        ax.set_ylabel("optical density")
        ax.set_title(edge, pad=16)
        ax.legend(fontsize=8, loc="best")
    return _figure(fig, "<b>Figure 3.</b> Mean optical-density spectra per class (lines) with ± 1 sd across "
                   "pixels (bands), on the native STXM grid after drift correction and I0 normalisation. "
                   "Dashed lines: the t<sub>2g</sub> and e<sub>g</sub> energies used for the Ni ratio and, at the "
                   "S L-edge, the fitted edge positions per region.", "class spectra")


COMPONENT_COLOURS = {"nmc": "#d62728", "interphase": "#2ca02c", "electrolyte": "#1f77b4", "empty": "#7f7f7f"}


def _decomposition_section(run) -> str:
    comps, ab = run.get("components"), run.get("abundances")
    if comps is None or comps.empty or ab is None or np.ndim(ab) != 3:
        return _na("unmixing components and abundance maps (components.csv, abundances.tif; the unsupervised "
                   "path writes them, a supervised model does not)")
    edges = list(dict.fromkeys(comps["edge"].astype(str)))
    fig, axes = _new_figure(5.0 * len(edges), 3.6, ncols=len(edges))
    for ax, edge in zip(axes[0], edges):
        sub = comps[comps["edge"].astype(str) == edge]
        for name in dict.fromkeys(sub["component"].astype(str)):
            c = sub[sub["component"].astype(str) == name].sort_values("energy_ev")
            ax.plot(c["energy_ev"], c["od"], lw=1.5, color=COMPONENT_COLOURS.get(name), label=name)
        ax.set(xlabel="photon energy (eV)", ylabel="optical density", title=edge)
        ax.legend(fontsize=8)
    spectra = _figure(fig, "<b>Figure 3b.</b> Component spectra of the per-pixel unmixing: the local reference "
                      "spectra (from the lamella's own purest pixels) that every STXM pixel is fitted with.",
                      "unmixing component spectra")
    planes = ("NMC", "electrolyte", "empty (void / outside)", "interphase")
    fig, axes = _new_figure(3.2 * len(planes), 3.2, ncols=len(planes))
    for ax, plane, name in zip(axes[0], ab, planes):
        im = ax.imshow(plane, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name, fontsize=12)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="fraction of the pixel")
    maps = _figure(fig, "<b>Figure 3c.</b> Abundance maps on the native STXM grid of the chemistry (the Ni-L grid "
                   "extended to every stack's field): the fraction of each pixel that each phase fills, from the "
                   "unmixing; the class map is drawn from these at SEM resolution.", "abundance maps")
    return spectra + maps


def _histogram_section(run, paper_bins: bool) -> str:
    df = run["pixels"]
    if df is None or df.empty or not {"region", "egt2g"} <= set(df.columns):
        return _na("e_g/t_2g histograms per region (pixels.csv)")
    region_of = df["region"].astype(str).to_numpy()      # once: a string column of every pixel
    present = set(np.unique(region_of))
    regions = [r for r in ("bulk", "surface_electrolyte", "surface_void", "interphase") if r in present]
    if not regions:
        return _na("e_g/t_2g histograms: no bulk or surface pixels")
    values = {}
    for r in regions:
        v = df.loc[region_of == r, "egt2g"].to_numpy(float)
        v = v[np.isfinite(v) & (v != 0)]
        values[r] = v
    allv = np.concatenate([v for v in values.values()]) if values else np.array([])
    if paper_bins:
        bins = np.linspace(EGT2G_RANGE[0], EGT2G_RANGE[1], PAPER_BINS + 1)
        bin_text = "the paper's ten bins over 0.7–2.4 (zeros excluded)"
    else:
        inside = allv[(allv >= EGT2G_RANGE[0]) & (allv <= EGT2G_RANGE[1])]
        bins = (np.histogram_bin_edges(inside, bins="fd", range=EGT2G_RANGE) if inside.size > 1
                else np.linspace(*EGT2G_RANGE, 11))
        if len(bins) > 61:
            bins = np.linspace(*EGT2G_RANGE, 61)
        bin_text = f"{len(bins) - 1} bins over 0.7–2.4 (Freedman–Diaconis width)"
    ncols = 2 if len(regions) > 1 else 1
    nrows = int(np.ceil(len(regions) / ncols))
    fig, axes = _new_figure(5.2 * ncols, 3.3 * nrows, ncols=ncols, nrows=nrows, sharex=True)
    for ax in axes.ravel()[len(regions):]:
        ax.set_visible(False)
    rows = []
    for ax, r in zip(axes.ravel(), regions):
        v = values[r]
        n_out = int(np.sum((v < EGT2G_RANGE[0]) | (v > EGT2G_RANGE[1])))
        if v.size:
            ax.hist(np.clip(v, EGT2G_RANGE[0], EGT2G_RANGE[1]), bins=bins, color=REGION_COLOURS.get(r),
                    alpha=0.85, edgecolor="white", density=True)
            ax.axvline(np.mean(v), color="k", lw=1)
        else:
            ax.text(0.5, 0.5, NOT_AVAILABLE, ha="center", transform=ax.transAxes)
        ax.set_title(f"{REGION_LABELS.get(r, r)} (n = {v.size} px)", fontsize=11)
        ax.set_xlabel("e$_g$/t$_{2g}$")
        ax.set_ylabel("density")
        ax.set_xlim(*EGT2G_RANGE)
        n_particles = (df.loc[region_of == r, "particle_id"].nunique()
                       if "particle_id" in df.columns else None)
        rows.append([_esc(REGION_LABELS.get(r, r)), _fmt(v.size), _fmt(n_particles),
                     _fmt(np.mean(v) if v.size else None), _fmt(np.std(v, ddof=1) if v.size > 1 else None),
                     _fmt(np.median(v) if v.size else None), _fmt(n_out)])
    fig_html = _figure(fig, f"<b>Figure 4.</b> Distribution of the e<sub>g</sub>/t<sub>2g</sub> ratio over native "
                       f"STXM pixels per region, {bin_text}; values outside the range are counted in the end "
                       "bins; black line = mean. Pixels within a particle are correlated: these histograms "
                       "describe, the tests below (one value per particle) decide.", "histograms")
    table = _table(["region", "pixels", "particles", "mean", "sd", "median", "outside 0.7–2.4"], rows)
    return fig_html + table


def _per_particle_section(run) -> str:
    df = run["particles"]
    if df is None or df.empty:
        return _na("per-particle table (particles.csv): no particles")
    cols = set(df.columns)
    if "egt2g_mean" not in cols:
        return _na("per-particle e_g/t_2g (egt2g_mean column)")
    corr = _get(run["summary"], "correlations", default={})
    xs = [("equivalent_diameter_nm", "equivalent diameter (nm)", "egt2g_vs_size"),
          ("contact_ratio_electrolyte", "perimeter contact ratio with electrolyte", "egt2g_vs_contact_ratio")]
    xs = [x for x in xs if x[0] in cols]
    parts = []
    if xs:
        fig, axes = _new_figure(5.0 * len(xs), 3.8, ncols=len(xs), sharey=True)
        y = df["egt2g_mean"].to_numpy(float)
        sd = df["egt2g_sd"].to_numpy(float) if "egt2g_sd" in cols else np.zeros_like(y)
        for ax, (col, label, key) in zip(axes[0], xs):
            x = df[col].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.errorbar(x[ok], y[ok], yerr=np.where(np.isfinite(sd[ok]), sd[ok], 0), fmt="o", color="#d62728",
                        ecolor="0.4", capsize=3, ms=5)
            for pid, xi, yi in zip(df["particle_id"][ok], x[ok], y[ok]):
                ax.annotate(str(pid), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
            c = _get(corr, key, default={})
            if c:
                ax.set_title(f"{_get(c, 'method', default='')} r = {_plain(_get(c, 'r'))}, "
                             f"p = {_plain_p(_get(c, 'p', 'p_value'))}", fontsize=9)
            ax.set_xlabel(label)
            ax.set_ylabel("e$_g$/t$_{2g}$ per particle (mean ± sd)")
        parts.append(_figure(fig, "<b>Figure 5.</b> Per-particle e<sub>g</sub>/t<sub>2g</sub> (mean ± sd over the "
                             "particle's native STXM pixels) against particle size and against the fraction of "
                             "its perimeter in contact with electrolyte; numbers are particle ids. Titles give "
                             "the correlation from <code>summary.json</code>.", "per-particle plots"))
    regions = [(c, lab) for c, lab in (("egt2g_bulk_mean", "bulk"),
                                        ("egt2g_surface_electrolyte_mean", "surface at\nelectrolyte"),
                                        ("egt2g_surface_void_mean", "surface at\nvoid")) if c in cols]
    if len(regions) >= 2:
        parts.append(_regions_by_particle_figure(df, regions, run))
    show = [c for c in ("particle_id", "area_nm2", "equivalent_diameter_nm", "egt2g_mean", "egt2g_sd", "egt2g_n",
                        "egt2g_bulk_mean", "contact_ratio_electrolyte", "contact_ratio_void",
                        "egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean") if c in cols]
    rows = [[_fmt(row[c], 4) for c in show] for _, row in df[show].iterrows()]
    header = [c.replace("egt2g", "e<sub>g</sub>/t<sub>2g</sub>").replace("_", " ") for c in show]
    parts.append('<details><summary>Per-particle table '
                 f'({len(df)} particles)</summary>{_table(header, rows, "small")}</details>')
    return "".join(parts)


def _regions_by_particle_figure(df, regions, run) -> str:
    """Slope chart: each particle's mean e_g/t_2g in bulk and in its two surface bands, joined by a line."""
    fig, axes = _new_figure(6.0, 4.0)
    ax = axes[0][0]
    values = np.column_stack([df[c].to_numpy(float) for c, _ in regions])
    colours = [REGION_COLOURS["bulk"], REGION_COLOURS["surface_electrolyte"], REGION_COLOURS["surface_void"]]
    x = np.arange(len(regions))
    for row in values:
        ok = np.isfinite(row)
        if ok.sum() >= 2:
            ax.plot(x[ok], row[ok], "-", color="0.75", lw=0.8, zorder=1)
    for j in range(len(regions)):
        v = values[:, j]
        ok = np.isfinite(v)
        ax.scatter(np.full(ok.sum(), j), v[ok], color=colours[j % 3], s=22, zorder=2)
        if ok.sum():
            ax.errorbar(j + 0.18, v[ok].mean(), yerr=v[ok].std(ddof=1) if ok.sum() > 1 else 0, fmt="D",
                        color="k", ms=5, capsize=4, zorder=3)
    ax.set_xticks(x, [f"{lab}\n(n = {int(np.isfinite(values[:, j]).sum())})" for j, (_, lab) in enumerate(regions)],
                  fontsize=8)
    ax.set_xlim(-0.5, len(regions) - 0.3)
    ax.set_ylabel("e$_g$/t$_{2g}$ per particle (mean)")
    test = _get(_get(run["summary"], "tests", default={}), "surface_electrolyte_vs_void", default={})
    if _num(_get(test, "p_value")) is not None:
        ax.set_title(f"electrolyte vs void: {_get(test, 'method', default='')}, "
                     f"p = {_plain_p(_get(test, 'p_value'))}", fontsize=9)
    return _figure(fig, "<b>Figure 6.</b> Mean e<sub>g</sub>/t<sub>2g</sub> of each particle in its bulk and in its "
                   "surface bands next to electrolyte and next to voids (grey lines join one particle's values; "
                   "black diamonds: mean ± sd over particles). This is the unit-level view of the "
                   "electrolyte-versus-void test.", "per-particle regions")


def _plain(value) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{x:.2f}"


def _plain_p(value) -> str:
    x = _num(value)
    return "n/a" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _resolution_nm(run) -> float | None:
    """The STXM resolution to compare thickness with: the summary's, else the largest STXM pixel size."""
    s = run["summary"]
    r = _num(_get(_get(s, Summary.THICKNESS, default={}), Thickness.RESOLUTION_NM))
    if r is None:
        r = _num(_get(_get(s, Summary.REGIONS, default={}), Regions.RESOLUTION_NM))
    if r is not None:
        return r
    sizes = []
    for entry in (run["registration"] or {}).values() if isinstance(run["registration"], dict) else []:
        v = _num(_get(entry, "stxm_pixel_nm")) if isinstance(entry, dict) else None
        if v is not None:
            sizes.append(v)
    return max(sizes) if sizes else None


def _thickness_section(run) -> str:
    df = run["thickness"]
    thick = _get(run["summary"], "interphase_thickness_nm", default={})
    res = _resolution_nm(run)
    summary_rows = [[_fmt(_get(thick, "mean"), 3, "nm"), _fmt(_get(thick, "sd"), 3, "nm"),
                     _fmt(_get(thick, "median"), 3, "nm"), _fmt(_get(thick, "n")),
                     _fmt(_get(thick, "n_particles")), _fmt(_get(thick, "resolvable")), _fmt(res, 3, "nm"),
                     _esc(_get(thick, "reason", default="") or "—")]]
    table = _table(["mean", "sd", "median", "n points", "particles", "resolvable", "STXM resolution", "note"],
                   summary_rows)
    if _num(_get(thick, "area_check_mean_nm")) is not None:
        table += (f'<p class="caption">Cross-check: interphase area divided by the mean of its two boundary '
                  f'lengths gives {_fmt(_get(thick, "area_check_mean_nm"), 3, "nm")}.</p>')
    if df is None or df.empty or "thickness_nm" not in df.columns:
        return ('<p class="na">No NMC–interphase boundary points in thickness.csv: no interphase band was '
                "found (or none wider than the map can show).</p>" + table)
    t = df["thickness_nm"].to_numpy(float)
    t = t[np.isfinite(t)]
    if t.size == 0:
        return _na("thickness values (all NaN)") + table
    ncols = 2 if "particle_id" in df.columns else 1
    fig, axes = _new_figure(5.0 * ncols, 3.6, ncols=ncols)
    ax = axes[0][0]
    ax.hist(t, bins=np.histogram_bin_edges(t, bins="fd") if t.size > 3 else 5, color="#2ca02c",
            edgecolor="white")
    ax.axvline(np.mean(t), color="k", lw=1.2, label=f"mean {np.mean(t):.0f} nm")
    if res is not None:
        ax.axvline(res, color="#d62728", ls="--", lw=1.2, label=f"STXM resolution {res:.0f} nm")
    ax.set_xlabel("interphase thickness (nm)")
    ax.set_ylabel("boundary points")
    ax.legend(fontsize=8)
    if ncols == 2:
        ax = axes[0][1]
        g = df[np.isfinite(df["thickness_nm"])].groupby("particle_id")["thickness_nm"]
        m, s, n = g.mean(), g.std(ddof=1), g.size()
        ax.errorbar(np.arange(len(m)), m.to_numpy(), yerr=np.nan_to_num(s.to_numpy()), fmt="o", color="#2ca02c",
                    ecolor="0.4", capsize=3)
        ax.set_xticks(np.arange(len(m)), [str(i) for i in m.index], fontsize=7)
        ax.set_xlabel("particle id")
        ax.set_ylabel("thickness (nm), mean ± sd")
        if res is not None:
            ax.axhline(res, color="#d62728", ls="--", lw=1.2)
    cap = ("<b>Figure 7.</b> Interphase thickness measured normal to the NMC surface from the NMC boundary to "
           "the electrolyte boundary, at sample points along every NMC–interphase boundary (left) and per "
           "particle (right). ")
    if res is not None:
        cap += (f"The dashed line marks the STXM resolution ({res:.0f} nm): bands thinner than this are not "
                "resolved and their width is bounded by it.")
    return _figure(fig, cap, "thickness") + table


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


def _generic_rows(d: dict, keys_first=()):
    """Rows of (key, value) for a flat dict, known keys first."""
    rows = []
    keys = [k for k in keys_first if k in d] + [k for k in d if k not in keys_first]
    for k in keys:
        v = d[k]
        if v is None:
            rows.append([_esc(k), "—"])
        elif isinstance(v, list) and v and all(_num(x) is not None for x in v) and len(v) <= 12:
            rows.append([_esc(k), "[" + ", ".join(_fmt(x, 3) for x in v) + "]"])
        elif isinstance(v, (dict, list)):
            rows.append([_esc(k), _esc(_short_json(v))])
        elif "p" == k or k.endswith("_p") or k.startswith("p_"):
            rows.append([_esc(k), _fmt_p(v)])
        else:
            rows.append([_esc(k), _fmt(v, 4)])
    return rows


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


def _ci_text(entry) -> str:
    """``[ci_low, ci_high]`` of a correlation or of the S-edge shift (the keys are the same in both)."""
    ci = [_get(entry, Correlation.CI_LOW), _get(entry, Correlation.CI_HIGH)]
    if _num(ci[0]) is not None and _num(ci[1]) is not None:
        return f"[{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
    return f'<span class="na">{NOT_AVAILABLE}</span>'


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


def _s_edge_regions(s_edge: dict):
    """(region, edge fit) pairs of an ``s_edge.json``: electrolyte and interphase, when fitted."""
    for region in (SEdge.ELECTROLYTE, SEdge.INTERPHASE):
        entry = s_edge.get(region) if isinstance(s_edge, dict) else None
        if isinstance(entry, dict):
            yield region, entry


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


def _matrix_parts(m):
    """Scale (SEM px per STXM px), rotation (deg) and translation (SEM px) of a 3×3 similarity/affine."""
    a = np.asarray(m, dtype=float)
    if a.shape != (3, 3) or not np.all(np.isfinite(a)):
        return None
    lin = a[:2, :2]
    sx = math.hypot(lin[0, 0], lin[1, 0])
    sy = math.hypot(lin[0, 1], lin[1, 1])
    rot = math.degrees(math.atan2(lin[1, 0], lin[0, 0]))
    return sx, sy, rot, a[0, 2], a[1, 2]


def _drift_of(entry):
    d = _get(entry, "drift_shifts_px")
    if d is None:
        return None
    a = np.asarray(d, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        return None
    return a


def _chance_text(test) -> str:
    """One cell: the registration's chance test (``registration.json`` ``metrics.chance``)."""
    if not isinstance(test, dict) or "better_than_chance" not in test:
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    parts = []
    for key, name in (("edge_correlation", "edges"), ("mutual_information", "MI")):
        s = _get(test, key, default={}) or {}
        if _num(_get(s, "z")) is not None:
            parts.append(f"{name} z = {_fmt(_get(s, 'z'), 3)}")
    verdict = ("better than chance" if test["better_than_chance"]
               else '<b style="color:#d62728">not better than chance (accepted by the user)</b>')
    return verdict + (f" ({', '.join(parts)})" if parts else "")


def _registration_section(run) -> str:
    reg = run["registration"]
    if not isinstance(reg, dict) or not reg:
        return _na("registration (registration.json)")
    edges = {k: v for k, v in reg.items() if isinstance(v, dict)}
    rows = []
    for edge, e in edges.items():
        parts = _matrix_parts(_get(e, "matrix", default=[]))
        metrics = _get(e, "metrics", default={})
        extra = ", ".join(f"{_esc(k)} {_fmt(v, 3)}" for k, v in metrics.items()
                          if _num(v) is not None) if isinstance(metrics, dict) else ""
        if parts:
            sx, sy, rot, tx, ty = parts
            geo = [_fmt(sx, 4), _fmt(sy, 4), _fmt(rot, 3, "°"), f"({_fmt(tx, 4)}, {_fmt(ty, 4)})"]
        else:
            geo = [f'<span class="na">{NOT_AVAILABLE}</span>'] * 4
        rows.append([_esc(edge), _esc(_get(e, "method", default="")), _fmt(_get(e, "quality"), 3)] + geo
                    + [_chance_text(_get(metrics, "chance") if isinstance(metrics, dict) else None), extra or "—"])
    html_parts = [_table(["edge", "method", "quality", "scale x", "scale y", "rotation", "offset (SEM px)",
                          "match vs chance", "metrics"], rows),
                  '<p class="caption">Registration maps STXM pixel (x, y, 1) to SEM pixel (x, y, 1); scale in SEM '
                  "pixels per STXM pixel. Match vs chance: the edge correlation and mutual information of the "
                  "registered STXM image against the same image turned by 90/180/270° or mirrored (7 copies, "
                  "which cannot match); a registration that does not beat the copies is refused unless the run "
                  "was told to accept it (<code>--accept-registration</code>).</p>"]
    drifts = {edge: _drift_of(e) for edge, e in edges.items()}
    drifts = {k: v for k, v in drifts.items() if v is not None and len(v)}
    if drifts:
        fig, axes = _new_figure(5.0 * len(drifts), 3.4, ncols=len(drifts))
        for ax, (edge, d) in zip(axes[0], drifts.items()):
            energies = _get(edges[edge], "energies_ev")
            x = np.asarray(energies, float) if energies is not None and len(energies) == len(d) else np.arange(len(d))
            ax.plot(x, d[:, 0], "o-", ms=3, label="dy", color="#9467bd")
            ax.plot(x, d[:, 1], "s-", ms=3, label="dx", color="#ff7f0e")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_xlabel("photon energy (eV)" if energies is not None and len(energies) == len(d)
                          else "energy frame index")
            ax.set_ylabel("drift (STXM pixels)")
            ax.set_title(f"{edge}: max |shift| {np.max(np.abs(d)):.2f} px", fontsize=9)
            ax.legend(fontsize=8)
        html_parts.append(_figure(fig, "<b>Figure 8.</b> Drift of the sample image in each energy frame relative to "
                                  "the reference frame (dy, dx in STXM pixels), as found and corrected before "
                                  "computing optical density.", "drift"))
    else:
        html_parts.append(_na("drift shifts"))
    return "".join(html_parts)


def _find_key(d, keys):
    """Depth-first search of nested dicts for the first of ``keys``."""
    if not isinstance(d, dict):
        return None
    for k in keys:
        if k in d and not isinstance(d[k], dict):
            return d[k]
    for v in d.values():
        if isinstance(v, dict):
            r = _find_key(v, keys)
            if r is not None:
                return r
    return None


def _provenance(summary: dict) -> dict:
    prov = _get(summary, Summary.PROVENANCE, default={})
    return prov if isinstance(prov, dict) else {}


def _parameters(summary: dict) -> dict:
    p = _get(_provenance(summary), Provenance.PARAMETERS, default={})
    return p if isinstance(p, dict) else {}


def _versions(summary: dict) -> dict:
    """Package versions of the provenance, ceimap first."""
    prov = _provenance(summary)
    v = _get(prov, Provenance.VERSIONS, default={})
    out = {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else {}
    ver = _get(prov, Provenance.VERSION)
    if ver is not None and "ceimap" not in out:
        out = {"ceimap": ver, **out}
    return out


def _inputs(summary: dict) -> list[dict]:
    """The provenance's input files, each ``{path, sha256}``."""
    raw = _get(_provenance(summary), Provenance.INPUTS, default=[])
    return [v for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []


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


def _short_json(v, limit: int = 160) -> str:
    if isinstance(v, list) and len(v) > 12:
        return f"[{len(v)} values]"
    text = json.dumps(v, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flat_items(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


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


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f4f5f7}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
header{border-bottom:3px solid #d62728;margin-bottom:12px}
h1{font-size:26px;margin:6px 0 4px}h2{font-size:19px;margin:30px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 4px}
.meta{color:#666;font-size:13px;margin-bottom:10px}
nav{font-size:13px;margin:8px 0 4px}nav a{margin-right:12px;color:#1f77b4;text-decoration:none}
.scroll{max-width:100%;overflow-x:auto}details .scroll{max-height:420px;overflow-y:auto}
table.key{font-size:14px;width:100%;border:1px solid #e2e2e2}table.key td:first-child{font-weight:600;width:24%}
table.key td:nth-child(2){width:28%}table.key td:last-child{width:18%}
details .scroll thead th{position:sticky;top:0}
figure{margin:12px 0 18px}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption,.caption{font-size:13px;color:#444;margin-top:6px;line-height:1.45}
table{border-collapse:collapse;margin:8px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f1f3;font-weight:600}table.small{font-size:12px}
.na{color:#a33;font-style:italic}code{font-size:12px}code.hash{font-size:11px;color:#555;word-break:break-all}
details{margin:8px 0}summary{cursor:pointer;color:#1f77b4;font-size:13px}
p{line-height:1.5}footer{margin-top:30px;font-size:12px;color:#777}
"""


def _page(title: str, meta: str, sections: list[tuple[str, str, str]], intro: str = "") -> str:
    nav = "".join(f'<a href="#{sid}">{t}</a>' for sid, t, _ in sections)  # titles are trusted HTML
    body = "".join(f'<section id="{sid}"><h2>{t}</h2>{content}</section>' for sid, t, content in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><main><header><h1>{_esc(title)}</h1><div class="meta">{meta}</div><nav>{nav}</nav></header>'
            f'{intro}{body}<footer>Generated by ceimap on {stamp}. Self-contained: all figures are embedded.'
            f'</footer></main></body></html>')


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
