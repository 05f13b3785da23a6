"""One lamella from raw files to the results folder: segment stages, statistics, files, report.

``run_lamella`` is what ``ceimap run`` (and the demo) call; it holds no science of its own: it calls
:func:`ceimap.segment.pipeline.process_lamella`, :func:`ceimap.stats.analysis.analyse_result` and writes what they
return, in the formats of CONTRACT.md.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ceimap.segment import Class
from ceimap.segment.io.jsonfile import write_json
from ceimap.segment.lamella import Lamella, check_lamella
from ceimap.segment.pipeline import NI_EDGE, PipelineResult, process_lamella
from ceimap.segment.workers import edge_workers, spawn_pool
from ceimap.segment.register import labels_to_stxm, warp_to_sem
from ceimap.segment.spectra import mean_spectra_by_label

from .analysis import Analysis, analyse_result
from .outputs import AtomicFolder, check_output_folder, provenance, write_csv, write_tiff
from .report import warm_up, write_report
from .summary import Summary, class_key

def class_spectra_table(result: PipelineResult) -> pd.DataFrame:
    """Mean OD spectrum of each class on each edge's native grid (long table for ``class_spectra.csv``)."""
    rows = []
    for edge, od in result.od_stacks.items():
        labels = labels_to_stxm(result.classes, result.registrations[edge].matrix, od.shape_yx)
        for label, (mean, sd, n) in sorted(mean_spectra_by_label(od, labels).items()):
            if label == Class.OUTSIDE:
                continue
            for energy, m, s in zip(od.energies_ev, mean, sd):
                rows.append({"edge": edge, "class_name": class_key(label), "energy_ev": energy,
                             "od_mean": m, "od_sd": s, "n_pixels": int(n)})
    return pd.DataFrame(rows, columns=["edge", "class_name", "energy_ev", "od_mean", "od_sd", "n_pixels"])


def compact_record(record: dict, max_items: int = 64) -> dict:
    """A report dict without its per-pixel arrays (masks and maps stay out of the JSON files)."""
    compact = {}
    for key, value in record.items():
        if isinstance(value, dict):
            compact[key] = compact_record(value, max_items)
        elif isinstance(value, np.ndarray) and value.size > max_items:
            continue
        else:
            compact[key] = value
    return compact


def registration_record(result: PipelineResult) -> dict:
    """``registration.json``: per edge the matrix, quality figure and drift shifts found."""
    record = {}
    for edge, registration in result.registrations.items():
        od = result.od_stacks[edge]
        record[edge] = {
            "matrix": np.asarray(registration.matrix).tolist(),
            "quality": registration.quality,
            "method": registration.method,
            "metrics": registration.metrics,
            "stxm_pixel_nm": od.pixel_size_nm,
            "stxm_shape_yx": list(od.shape_yx),
            "energies_ev": od.energies_ev.tolist(),
            "drift_shifts_px": result.drift_px[edge].tolist(),
            "drift_convention": "(dy, dx) displacement of the sample image in each frame, STXM pixels",
            "od": compact_record(result.od_reports[edge]),
        }
    return record


def egt2g_on_sem(result: PipelineResult) -> np.ndarray:
    """The e_g/t_2g ratio resampled to the SEM grid, NaN where there is no (measurable) Ni."""
    ratio = np.where(result.egt2g.valid, result.egt2g.ratio, np.nan)
    return warp_to_sem(ratio, result.registrations[NI_EDGE].matrix, result.classes.shape,
                       order=0, cval=np.nan).astype(np.float32)


UNMIXING_COMPONENTS = ("nmc", "electrolyte", "empty", "interphase")
"""Abundance maps of the unsupervised chemistry (``abundances.tif`` planes, in this order)."""


def decomposition_outputs(result: PipelineResult):
    """The unsupervised chemistry's component spectra and abundance maps, when the class map came from it.

    Returns
    -------
    components : DataFrame or None
        ``edge, component, energy_ev, od`` — the local reference spectra the per-pixel unmixing fitted
        (``components.csv``).
    abundances : ndarray of float32, shape (4, ny, nx), or None
        Fractions of NMC, electrolyte, empty and interphase per pixel of the chemistry's STXM grid
        (``abundances.tif``; the grid's STXM px → SEM px matrix and the plane names go to ``abundances.json``).
    matrix : ndarray (3, 3) or None
    """
    seg = result.details.get("segmentation", {})
    chem = seg.get("stxm") if isinstance(seg, dict) else None
    if not isinstance(chem, dict) or "fractions" not in chem:
        return None, None, None
    rows = []
    for edge, refs in (chem.get("references") or {}).items():
        energies = np.asarray(result.od_stacks[edge].energies_ev, float)
        for component, od in refs.items():
            od = np.asarray(od, float).ravel()
            if od.size != energies.size:
                continue
            rows += [{"edge": edge, "component": component, "energy_ev": e, "od": v} for e, v in zip(energies, od)]
    components = pd.DataFrame(rows, columns=["edge", "component", "energy_ev", "od"])
    fractions = np.asarray(chem["fractions"], np.float32)
    interphase = np.asarray(chem.get("interphase_fraction", np.zeros(fractions.shape[1:])), np.float32)
    abundances = np.concatenate([fractions[:3], interphase[None]], axis=0).astype(np.float32)
    matrix = seg.get("stxm_matrix")
    if matrix is None:
        matrix = result.registrations[NI_EDGE].matrix
    return components, abundances, np.asarray(matrix, float)


def write_results(out: Path, result: PipelineResult, analysis: Analysis, prov: dict, *, pool=None) -> None:
    """Write every output file of CONTRACT.md (and the report's extras) into the folder ``out``.

    ``pool``: a process pool the report may draw its largest figures in (:func:`ceimap.stats.report.render_report`).
    """
    lamella = result.lamella
    write_tiff(out / "classes.tif", result.classes.astype(np.uint8))
    write_tiff(out / "particles.tif", result.particles.astype(np.uint32))
    write_tiff(out / "egt2g.tif", egt2g_on_sem(result))
    write_tiff(out / "sem.tif", lamella.sem.image.astype(np.float32))
    entropy = result.details.get("segmentation", {}).get("entropy")
    if entropy is not None:  # trained classifier: where it is unsure (annotate there next)
        write_tiff(out / "entropy.tif", np.asarray(entropy, dtype=np.float32))
    write_json(out / "registration.json", registration_record(result))
    components, abundances, chem_matrix = decomposition_outputs(result)
    if components is not None:
        write_csv(out / "components.csv", components)
        write_tiff(out / "abundances.tif", abundances)
        write_json(out / "abundances.json", {
            "planes": list(UNMIXING_COMPONENTS), "shape_yx": list(abundances.shape[1:]),
            "matrix_to_sem": chem_matrix.tolist(),
            "matrix_convention": "chemistry-grid pixel (x, y, 1) → SEM pixel (x, y, 1)"})
    write_csv(out / "particles.csv", analysis.particles)
    write_csv(out / "thickness.csv", analysis.thickness)
    write_csv(out / "pixels.csv", analysis.pixels)
    write_csv(out / "class_spectra.csv", class_spectra_table(result))
    if analysis.summary.get(Summary.S_EDGE) is not None:
        write_json(out / "s_edge.json", analysis.summary[Summary.S_EDGE])
    write_json(out / "summary.json", summary_record(lamella, analysis, prov))
    write_report(out, pool=pool)


def summary_record(lamella: Lamella, analysis: Analysis, prov: dict) -> dict:
    """The content of ``summary.json``: the lamella's name and sample, the statistics and the provenance."""
    return {Summary.NAME: lamella.name, Summary.SAMPLE: lamella.sample, **analysis.summary, Summary.PROVENANCE: prov}


def run_lamella(
    lamella: Lamella,
    out: str | Path,
    *,
    overwrite: bool = False,
    model=None,
    progress: Callable[[str], None] = lambda message: None,
    accept_unmatched: bool = False,
    workers: int = 1,
    pool=None,
) -> Path:
    """Process one lamella and write its results folder atomically.

    Parameters
    ----------
    lamella : Lamella
        Inputs (a Ni-L stack is required).
    out : path
        Results folder; must be empty or absent unless ``overwrite``; never an input folder.
    overwrite : bool
        Replace the contents of a non-empty ``out``.
    model : path-like or PixelClassifier, optional
        Trained pixel classifier replacing the unsupervised class assignment (recorded in
        ``summary.json`` parameters: file, SHA-256, estimator, feature spec).
    progress : callable
        Receives progress messages.
    accept_unmatched : bool
        Keep a registration that matches no better than chance (``--accept-registration``) instead of
        refusing the lamella; recorded in ``summary.json`` parameters (``accept_unmatched_registration``).
    workers : int
        Processes to work in: with 2 or more, the edges are preprocessed and registered at the same time
        (:func:`ceimap.segment.pipeline.preprocess_lamella`), and the same worker process later draws the report's
        largest figures alongside this one (:func:`ceimap.stats.report.render_report`). 1 (the default) keeps
        everything in this process. The results are byte-identical either way.
    pool : concurrent.futures.Executor, optional
        A process pool (:func:`ceimap.segment.workers.spawn_pool`) to use in this way instead of starting one (then
        ``workers`` is not used); the caller keeps it. ``ceimap run`` starts its worker first thing, so that
        the worker's imports overlap its own.

    Returns
    -------
    Path
        The ``report.html`` written.
    """
    out = Path(out)
    check_lamella(lamella, required_edges=(NI_EDGE,))  # bad input refused before any processing (every caller)
    check_output_folder(out, lamella.input_paths, overwrite=overwrite)
    n_processes = edge_workers(workers, len(lamella.stacks))
    with ExitStack() as stack:
        if pool is None and n_processes > 1:
            pool = stack.enter_context(spawn_pool(n_processes - 1))
        result, analysis = process_and_analyse(lamella, model=model, progress=progress,
                                               accept_unmatched=accept_unmatched, pool=pool)
        prov = run_provenance(lamella, result, accept_unmatched)
        write_run(out, result, analysis, prov, progress=progress, pool=pool)
    return out / "report.html"


def process_and_analyse(lamella: Lamella, *, model=None, progress: Callable[[str], None] = lambda message: None,
                        accept_unmatched: bool = False, pool=None) -> tuple[PipelineResult, Analysis]:
    """The computation of ``ceimap run``: the pipeline's maps, then the statistics (nothing written).

    Parameters are those of :func:`run_lamella`. BLAS runs on one thread: reductions split over threads add
    in an order that depends on the thread count, so without this a run differs in the last bits between
    machines, or between ``ceimap run`` and a batch worker (dask limits its workers' threads). Same inputs →
    byte-identical results, anywhere.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        result = process_lamella(lamella, model=model, progress=progress, accept_unmatched=accept_unmatched,
                                 pool=pool)
        if pool is not None:
            pool.submit(warm_up)  # the worker is idle now: it imports the plotting while we compute
        progress("statistics on native STXM pixels")
        analysis = analyse_result(result)
    return result, analysis


def run_provenance(lamella: Lamella, result: PipelineResult, accept_unmatched: bool = False) -> dict:
    """The provenance block of a run's ``summary.json``: inputs with SHA-256, parameters, time stamp, timings."""
    segmentation = compact_record(result.details.get("segmentation", {}))
    timings = segmentation.pop("timings_s", None)  # run-to-run noise: kept beside the timestamp, not as a parameter
    parameters = {"segmentation": segmentation,
                  "od": {edge: compact_record(report) for edge, report in result.od_reports.items()},
                  "accept_unmatched_registration": bool(accept_unmatched)}
    model_record = result.details.get("segmentation", {}).get("model")
    if model_record is not None:
        parameters["model"] = model_record
    prov = provenance(lamella.input_paths, parameters)
    if timings is not None:
        prov["timings_s"] = timings
    return prov


def write_run(out: str | Path, result: PipelineResult, analysis: Analysis, prov: dict, *,
              progress: Callable[[str], None] = lambda message: None, pool=None) -> None:
    """Write a run's results folder ``out`` atomically (built beside it, then moved into place).

    The caller has checked ``out`` (:func:`ceimap.stats.outputs.check_output_folder`).
    """
    progress(f"writing results to {out}")
    with AtomicFolder(out) as tmp:
        write_results(tmp, result, analysis, prov, pool=pool)
