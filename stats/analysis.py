"""From maps to numbers: one call that turns a lamella's class map, particles and e_g/t_2g map into statistics.

:func:`analyse_maps` joins the stats modules in data-flow order:

1. class fractions on the SEM grid;
2. regions of every native Ni-L STXM pixel (:mod:`ceimap.stats.regions`) and the native pixel table; contacts
   (electrolyte side or void) are judged at the probe's scale (:func:`ceimap.stats.regions.contact_classes`) for
   the regions, the perimeter contact ratios and the thickness;
3. per-particle table (:mod:`ceimap.stats.tables`);
4. interphase thickness on the SEM-grid class map (:mod:`ceimap.stats.thickness`), with the resolution limit;
5. tests with the particle as the unit (:mod:`ceimap.stats.inference`), the bimodality of per-particle bulk means
   (:mod:`ceimap.stats.distributions`), correlations;
6. the S L-edge position of bulk electrolyte and interphase from region-summed spectra, when an S-L stack is
   given.

The summary holds every CONTRACT ``summary.json`` key except provenance, JSON-ready (plain numbers, ``None``
for undefined values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

from ceimap.segment import Class
from ceimap.segment.io.jsonfile import json_safe

if TYPE_CHECKING:
    from ceimap.segment.pipeline import PipelineResult
    from ceimap.segment.spectra import EgT2gMap, SEdgeMap
    from ceimap.segment.stack import Stack

from .distributions import bimodality
from .inference import (correlations, edge_shift, holm_correlations, naive_pixel_test, pixel_mixed_model,
                        surface_electrolyte_vs_void)
from .summary import (FRACTION_CLASSES, REGIONS, Bimodality, Regions, RegionValues, SEdge, Summary, Tests, Thickness,
                      class_key)
from .regions import RegionMaps, contact_classes, default_distances, pixel_table, stxm_regions
from .tables import particle_table
from .thickness import interphase_thickness, summarise_thickness, thickness_area_check

@dataclass(frozen=True)
class Analysis:
    """The statistics of one lamella.

    Attributes
    ----------
    summary : dict
        CONTRACT ``summary.json`` keys (without provenance), JSON-serialisable.
    particles : pandas.DataFrame
        Per-particle table (CONTRACT ``particles.csv`` columns first).
    thickness : pandas.DataFrame
        Thickness samples (``particle_id, x_nm, y_nm, thickness_nm``).
    pixels : pandas.DataFrame
        Native Ni-L STXM pixels: ``x, y, particle_id, region, egt2g, egt2g_sigma``.
    regions : RegionMaps
        Region and particle maps on the STXM and SEM grids.
    details : dict
        Further tables: ``thickness_per_particle`` (mean, sd, median, n per particle), ``thickness_area_check``
        (area / mean boundary length per particle), ``thickness_samples`` (with the distances and what bounds
        each sample), ``s_edge_spectra`` (region-averaged S spectra, when an S-L stack is given).
    """

    summary: dict
    particles: pd.DataFrame
    thickness: pd.DataFrame
    pixels: pd.DataFrame
    regions: RegionMaps
    details: dict = field(default_factory=dict)


def class_fractions(classes: np.ndarray) -> dict:
    """Area fraction of each class within the analysed area (class ≠ 0) of the SEM grid.

    Examples
    --------
    >>> {k: round(v, 3) for k, v in class_fractions(np.array([[0, 1, 1, 3], [2, 4, 3, 3]])).items()}
    {'nmc': 0.286, 'interphase': 0.143, 'electrolyte': 0.429, 'void': 0.143}
    """
    classes = np.asarray(classes)
    total = int(np.count_nonzero(classes))
    return {class_key(code): (float(np.count_nonzero(classes == code)) / total if total else float("nan"))
            for code in FRACTION_CLASSES}


def region_summary(pixels: pd.DataFrame, region: str) -> dict:
    """Mean, sd (ddof=1) and count of valid native pixels of a region, and how many particles they cover."""
    sel = pixels.loc[(pixels["region"] == region) & np.isfinite(pixels["egt2g"])]
    v = sel["egt2g"].to_numpy(float)
    n = int(v.size)
    return {RegionValues.MEAN: float(v.mean()) if n else np.nan,
            RegionValues.SD: float(v.std(ddof=1)) if n > 1 else np.nan, RegionValues.N: n,
            RegionValues.N_PARTICLES: int(sel.loc[sel["particle_id"] > 0, "particle_id"].nunique())}


def _s_edge_from_spectra(classes, sem_pixel_nm, s_od, s_matrix, s_pixel_nm, psf_fwhm_nm):
    """Fit the S edge of the summed spectra of bulk electrolyte and interphase pixels on the S grid."""
    from ceimap.segment.register import labels_to_stxm
    from ceimap.segment.spectra import fit_s_edge

    reach_nm = default_distances(s_pixel_nm, psf_fwhm_nm)["contamination_nm"]
    electrolyte = classes == Class.ELECTROLYTE
    depth_nm = ndimage.distance_transform_edt(np.pad(electrolyte, 1))[1:-1, 1:-1] * sem_pixel_nm
    labels = np.zeros(classes.shape, dtype=np.uint8)
    labels[electrolyte & (depth_nm - 0.5 * sem_pixel_nm >= reach_nm)] = 1   # bulk electrolyte
    labels[classes == Class.INTERPHASE] = 2                                # interphase
    on_s = labels_to_stxm(labels, s_matrix, s_od.shape_yx)
    out, spectra = {}, {}
    for name, code in (("electrolyte", 1), ("interphase", 2)):
        mask = on_s == code
        n = int(mask.sum())
        if n == 0:
            out[name] = {"position_ev": np.nan, "sigma_ev": np.nan, "n_pixels": 0,
                         "reason": f"no {name} pixel on the S-L grid"}
            continue
        spectrum = np.nanmean(s_od.data[:, mask], axis=1)
        spectra[name] = spectrum
        try:
            fit = dict(fit_s_edge(s_od.energies_ev, spectrum))
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
            out[name] = {"position_ev": np.nan, "sigma_ev": np.nan, "n_pixels": n,
                         "reason": f"edge fit failed: {exc}"}
            continue
        fit["n_pixels"] = n
        fit.setdefault("reason", None)
        out[name] = fit
    return out, spectra


def _s_edge_from_map(s_edge, classes, s_matrix):
    """Fallback: mean per-pixel fitted positions by region (pixels correlated: sigma is the sd / √n)."""
    from ceimap.segment.register import labels_to_stxm

    on_s = labels_to_stxm(np.asarray(classes), s_matrix, np.asarray(s_edge.position_ev).shape)
    out = {}
    for name, code in (("electrolyte", Class.ELECTROLYTE), ("interphase", Class.INTERPHASE)):
        ok = (on_s == code) & np.asarray(s_edge.valid, bool) & np.isfinite(s_edge.position_ev)
        v = np.asarray(s_edge.position_ev)[ok]
        n = int(v.size)
        out[name] = {"position_ev": float(v.mean()) if n else np.nan,
                     "sigma_ev": float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan, "n_pixels": n,
                     "reason": None if n else f"no valid {name} pixel on the S-L grid",
                     "method": "mean of per-pixel fitted positions"}
    return out


@dataclass(frozen=True)
class StxmGrid:
    """Where a native STXM grid lies on the SEM grid.

    Attributes
    ----------
    matrix : ndarray, shape (3, 3)
        STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)`` (a :class:`ceimap.segment.register.Registration`'s
        ``matrix``).
    pixel_size_nm : float
        STXM pixel size in nm.
    """

    matrix: np.ndarray
    pixel_size_nm: float


@dataclass(frozen=True)
class AnalysisParameters:
    """The statistics' settings; the defaults are those of ``ceimap run``.

    Attributes
    ----------
    psf_fwhm_nm : float
        STXM probe FWHM in nm.
    surface_band_nm, surface_offset_nm, bulk_margin_nm : float, optional
        Region distances in nm (:func:`ceimap.stats.regions.default_distances`). Without ``surface_offset_nm``
        the surface bands start at the depth derived from the lamella when the e_g/t_2g map has its peak
        heights (:func:`ceimap.stats.regions.surface_start_from_data`), otherwise at the 1 % contamination depth.
    thickness_method : {"normal", "distance", "edt"}
        See :func:`ceimap.stats.thickness.interphase_thickness`.
    resolution_nm : float, optional
        Resolution in nm below which the interphase is not resolvable; default
        ``max(psf_fwhm_nm, Ni-L pixel size)``.
    min_surface_pixels : int
        Minimum valid pixels for a particle's band mean to enter the surface test.
    n_boot : int
        Bootstrap samples of the mixture test.
    seed : int
        Random seed of the bootstraps.
    """

    psf_fwhm_nm: float = 50.0
    surface_band_nm: float | None = None
    surface_offset_nm: float | None = None
    bulk_margin_nm: float | None = None
    thickness_method: str = "normal"
    resolution_nm: float | None = None
    min_surface_pixels: int = 1
    n_boot: int = 199
    seed: int = 0


def analyse_maps(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float, egt2g: EgT2gMap,
                 ni_grid: StxmGrid, *, s_od: Stack | None = None, s_edge: SEdgeMap | None = None,
                 s_grid: StxmGrid | None = None, probabilities: np.ndarray | None = None,
                 parameters: AnalysisParameters = AnalysisParameters()) -> Analysis:
    """Statistics of one lamella from its maps, on native Ni-L STXM pixels.

    :func:`analyse_result` calls this on a pipeline's (or the viewer's) result.

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny_sem, nx_sem)
        Class map on the SEM grid (:class:`ceimap.Class` codes).
    particles : ndarray of int, shape (ny_sem, nx_sem)
        NMC particle ids on the SEM grid.
    sem_pixel_nm : float
        SEM pixel size in nm.
    egt2g : EgT2gMap
        The e_g/t_2g ratio, its uncertainty and validity on the native Ni-L STXM grid; its fitted peak
        heights (``amplitude_t2g``, ``amplitude_eg``), when present, set where the surface bands start.
    ni_grid : StxmGrid
        The Ni-L STXM grid on the SEM grid.
    s_od : Stack, optional
        Aligned S-L optical-density stack: region-summed spectra are fitted with
        :func:`ceimap.segment.spectra.fit_s_edge`.
    s_edge : SEdgeMap, optional
        Per-pixel S-edge positions on the S-L grid (used when ``s_od`` is not given).
    s_grid : StxmGrid, optional
        The S-L STXM grid on the SEM grid (needed with ``s_od`` or ``s_edge``).
    probabilities : ndarray, shape (5, ny_sem, nx_sem), optional
        Class probabilities of the segmentation; when given, thickness boundaries are located on them
        (sub-pixel) instead of on the smoothed hard class map.
    parameters : AnalysisParameters
        The statistics' settings.

    Returns
    -------
    Analysis
    """
    p = parameters
    classes = np.asarray(classes)
    particles = np.asarray(particles)
    ratio = np.asarray(egt2g.ratio, float)
    sigma = np.asarray(egt2g.sigma, float)
    valid = np.asarray(egt2g.valid, bool)
    resolution_nm = p.resolution_nm
    if resolution_nm is None:
        resolution_nm = float(max(p.psf_fwhm_nm, ni_grid.pixel_size_nm))

    ni_map = None
    if egt2g.amplitude_t2g is not None and egt2g.amplitude_eg is not None:
        ni_map = {"egt2g": ratio, "egt2g_sigma": sigma, "egt2g_valid": valid,
                  "amplitude_t2g": np.asarray(egt2g.amplitude_t2g, float),
                  "amplitude_eg": np.asarray(egt2g.amplitude_eg, float)}
    maps = stxm_regions(classes, particles, sem_pixel_nm, ni_grid.matrix, ratio.shape, ni_grid.pixel_size_nm,
                        p.psf_fwhm_nm, surface_band_nm=p.surface_band_nm, surface_offset_nm=p.surface_offset_nm,
                        bulk_margin_nm=p.bulk_margin_nm, ni_map=ni_map)
    pixels = pixel_table(maps, ratio, sigma, valid)
    # contacts judged at the probe's scale: thin rims between NMC and voids do not count as electrolyte
    contacts = contact_classes(classes, particles, sem_pixel_nm, maps.parameters["contamination_nm"])
    table = particle_table(contacts, particles, sem_pixel_nm, pixels)

    thick_details = interphase_thickness(contacts, particles, sem_pixel_nm, method=p.thickness_method,
                                         probabilities=probabilities, details=True)
    thickness = thick_details[["particle_id", "x_nm", "y_nm", "thickness_nm"]].copy()
    thick_summary = summarise_thickness(thickness, resolution_nm)
    area_check = thickness_area_check(contacts, particles, sem_pixel_nm)
    thick_summary[Thickness.METHOD] = (p.thickness_method
                                       + (" (class probabilities)" if probabilities is not None else ""))
    thick_summary[Thickness.AREA_CHECK_MEAN_NM] = (float(np.average(area_check["area_thickness_nm"],
                                                            weights=area_check["inner_length_nm"]))
                                           if len(area_check) and area_check["inner_length_nm"].sum() > 0
                                           else np.nan)
    thick_summary[Thickness.N_MERGED_SAMPLES] = int((thick_details.get("outer") == "particle").sum()) \
        if len(thick_details) else 0

    egt2g_summary = {name: region_summary(pixels, name) for name in REGIONS}

    surface_test = surface_electrolyte_vs_void(table, min_pixels=p.min_surface_pixels)
    bulk_means = table["egt2g_bulk_mean"].to_numpy(float)
    bimodal = bimodality(bulk_means[np.isfinite(bulk_means)], n_boot=p.n_boot, seed=p.seed)
    bimodal["value"] = "per-particle bulk e_g/t_2g means"

    summary = {
        Summary.SEM_PIXEL_NM: float(sem_pixel_nm),
        Summary.CLASS_FRACTIONS: class_fractions(classes),
        Summary.N_PARTICLES: int(len(table)),
        Summary.THICKNESS: thick_summary,
        Summary.EGT2G: egt2g_summary,
        Summary.TESTS: {
            Tests.SURFACE: surface_test,
            Tests.SURFACE_MIXED_MODEL: pixel_mixed_model(pixels),
            Tests.SURFACE_PIXELS_NAIVE: naive_pixel_test(pixels),
        },
        Summary.BIMODALITY: {Bimodality.BULK_PARTICLES: bimodal},
        # raw p of each test kept; p_holm adjusted over the lamella's family (size/contact × Pearson/Spearman)
        Summary.CORRELATIONS: holm_correlations(correlations(table)),
        Summary.REGIONS: {**maps.parameters, Regions.RESOLUTION_NM: float(resolution_nm),
                          Regions.N_NATIVE_PIXELS: {name: int(n) for name, n in
                                                    pixels["region"].value_counts().items()}},
    }
    per_particle = (thickness.groupby("particle_id")["thickness_nm"].agg(["mean", "std", "median", "size"])
                    .rename(columns={"mean": "mean_nm", "std": "sd_nm", "median": "median_nm", "size": "n"})
                    .reset_index())
    details = {"thickness_area_check": area_check, "thickness_samples": thick_details,
               "thickness_per_particle": per_particle}

    if s_od is not None or s_edge is not None:
        if s_grid is None:
            summary[Summary.S_EDGE] = {SEdge.REASON: "no S-L registration matrix given"}
        else:
            if s_od is not None:
                fits, spectra = _s_edge_from_spectra(classes, sem_pixel_nm, s_od, s_grid.matrix,
                                                     float(s_grid.pixel_size_nm), p.psf_fwhm_nm)
                details["s_edge_spectra"] = {"energies_ev": np.asarray(s_od.energies_ev), **spectra}
                method = "edge fit of region-averaged spectra (segment.spectra.fit_s_edge)"
            else:
                fits = _s_edge_from_map(s_edge, classes, s_grid.matrix)
                method = "mean of per-pixel fitted edge positions"
            el, it = fits[SEdge.ELECTROLYTE], fits[SEdge.INTERPHASE]
            shift = edge_shift(el.get("position_ev", np.nan), el.get("sigma_ev", np.nan),
                               it.get("position_ev", np.nan), it.get("sigma_ev", np.nan))
            summary[Summary.S_EDGE] = {SEdge.ELECTROLYTE: el, SEdge.INTERPHASE: it, SEdge.SHIFT: shift,
                                       SEdge.METHOD: method}
    else:
        summary[Summary.S_EDGE] = None

    return Analysis(summary=json_safe(summary), particles=table, thickness=thickness, pixels=pixels,
                    regions=maps, details=details)


def analyse_result(result: PipelineResult, parameters: AnalysisParameters = AnalysisParameters()) -> Analysis:
    """Statistics of one pipeline result (what ``ceimap run`` and the viewer's Measure compute).

    Parameters
    ----------
    result : PipelineResult
        The pipeline's maps (:func:`ceimap.segment.pipeline.process_lamella`), or the viewer's
        (:func:`ceimap.napari_plugin._actions.pipeline_result`, with the user's class map). A Ni-L stack is
        required; an S-L stack, when there is one, gives the S-edge positions.
    parameters : AnalysisParameters
        The statistics' settings.

    Returns
    -------
    Analysis
    """
    from ceimap.segment.pipeline import NI_EDGE, S_EDGE

    ni = result.od_stacks[NI_EDGE]
    s_od = result.od_stacks.get(S_EDGE)
    s_grid = None if s_od is None else StxmGrid(result.registrations[S_EDGE].matrix, s_od.pixel_size_nm)
    return analyse_maps(result.classes, result.particles, result.lamella.sem.pixel_size_nm, result.egt2g,
                        StxmGrid(result.registrations[NI_EDGE].matrix, ni.pixel_size_nm), s_od=s_od,
                        s_edge=result.s_edge, s_grid=s_grid, probabilities=result.probabilities,
                        parameters=parameters)
