"""The report's figure sections: maps, spectra per class, the unmixing, histograms, per-particle plots,
interphase thickness, registration and drift.

Each ``_…_section(run)`` takes the dict of :func:`ceimap.stats.report_load.load_run` and returns HTML (a figure
with its caption, and its table where there is one). ``maps`` and ``histograms`` are the largest and may be drawn
in a worker process (:func:`ceimap.stats.report.render_report`).
"""

from __future__ import annotations

import math

import numpy as np

from ceimap.segment import Class

from .report_html import NOT_AVAILABLE, _esc, _figure, _fmt, _na, _new_figure, _plain, _plain_p, _table
from .report_load import _find_key, _get, _num, _parameters, _resolution_nm, _s_edge_regions, _sem_pixel_nm
from .summary import SEdge, class_key, class_label


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


COMPONENT_COLOURS = {"nmc": "#d62728", "interphase": "#2ca02c", "electrolyte": "#1f77b4", "empty": "#7f7f7f"}


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
