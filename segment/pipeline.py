"""One lamella from raw files to maps: the segment stages in data-flow order.

``process_lamella`` is what ``ceimap run`` and the napari plugin call; every stage it runs is a public
function of its own module and can be called separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import Class
from .align import align_frames
from .assign import Segmentation, segment_lamella
from .lamella import Lamella
from .outside import split_empty
from .particles import label_particles
from .register import Registration, contrast_image, register_stxm_to_sem
from .spectra import egt2g_map, s_edge_map
from .stack import Stack, optical_density
from .workers import edge_workers, spawn_pool

NI_EDGE = "Ni-L"
S_EDGE = "S-L"


@dataclass(frozen=True)
class PipelineResult:
    """Everything the segment stages produce for one lamella.

    Attributes
    ----------
    lamella : Lamella
        The inputs.
    od_stacks : dict of str to Stack
        Drift-corrected optical-density stacks on their native STXM grids, by edge.
    od_reports : dict of str to dict
        What the OD conversion found (I0 source, zero / saturated / negative pixels), by edge.
    drift_px : dict of str to ndarray, shape (n_energy, 2)
        Drift (dy, dx) found in each frame, in STXM pixels, by edge.
    registrations : dict of str to Registration
        STXM pixel → SEM pixel transform of each edge.
    classes : ndarray of uint8, shape of the SEM image
        Class codes (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void).
    particles : ndarray of uint32, shape of the SEM image
        NMC particle ids, 0 = not NMC.
    probabilities : ndarray of float32, shape (5, n_y, n_x), or None
        Per-class probabilities on the SEM grid when the segmentation gives them.
    egt2g : EgT2gMap or None
        Ni e_g/t_2g ratio on the native Ni-L grid.
    s_edge : SEdgeMap or None
        S L-edge position on the native S-L grid.
    details : dict
        Stage details worth reporting (segmentation diagnostics, parameters).
    """

    lamella: Lamella
    od_stacks: dict
    od_reports: dict
    drift_px: dict
    registrations: dict
    classes: np.ndarray
    particles: np.ndarray
    probabilities: np.ndarray | None
    egt2g: object | None
    s_edge: object | None
    details: dict = field(default_factory=dict)


def _silent(message: str) -> None:
    pass


def preprocess_stack(stack: Stack) -> tuple[Stack, dict, np.ndarray]:
    """Drift-correct a stack and convert it to optical density.

    Frames are aligned on the transmitted counts (the same images the beamline recorded), then
    I0 is found and OD computed on the aligned stack.

    Parameters
    ----------
    stack : Stack
        Counts or OD as read from the file.

    Returns
    -------
    od : Stack
        Aligned optical-density stack (``kind == "od"``).
    report : dict
        The OD conversion report.
    shifts_px : ndarray, shape (n_energy, 2)
        Drift (dy, dx) found in each frame, in STXM pixels.
    """
    if stack.n_energy > 1:
        aligned, shifts_px = align_frames(stack)
    else:
        aligned, shifts_px = stack, np.zeros((1, 2))
    od, report = optical_density(aligned)
    return od, report, np.asarray(shifts_px, dtype=float)


def register_checked(edge: str, od: Stack, stxm_path, sem, *, accept_unmatched: bool = False) -> Registration:
    """Register one edge's OD stack onto the SEM; refuse files that cannot be registered.

    :func:`ceimap.segment.register.register_stxm_to_sem` on :func:`ceimap.segment.register.contrast_image`; a registration
    that fails from every start, or that matches no better than chance
    (:func:`ceimap.segment.register.require_better_than_chance`: SEM and STXM of different places), is bad input.

    Parameters
    ----------
    edge : str
    od : Stack
        The edge's aligned OD stack.
    stxm_path : path-like or None
        Its file, named in messages.
    sem : SemImage
    accept_unmatched : bool
        Keep a registration that matches no better than chance instead of refusing it (small or symmetric
        fields, where the chance test has little power); the test's result stays in the registration's
        ``metrics["chance"]``.

    Raises
    ------
    segment.errors.CeimapInputError
        Naming the STXM file, the SEM file and what failed.
    """
    from .errors import CeimapInputError
    from .register import RegistrationError, require_better_than_chance

    stxm_path = stxm_path or f"the {edge} stack"
    try:
        registration = register_stxm_to_sem(contrast_image(od), od.pixel_size_nm, sem.image, sem.pixel_size_nm)
    except RegistrationError as exc:
        detail = " ".join(str(exc).split())
        flat = [name for name, image in ((f"the {edge} STXM image (mean OD)", contrast_image(od)),
                                         ("the SEM image", sem.image)) if not np.nanstd(image) > 0]
        hint = f"; {' and '.join(flat)} {'is' if len(flat) == 1 else 'are'} featureless (one value)" if flat else ""
        raise CeimapInputError(f"the {edge} STXM image cannot be registered onto the SEM image "
                               f"{sem.source or '(SEM)'}: {detail}{hint}", path=stxm_path) from None
    if not accept_unmatched:
        require_better_than_chance(registration, stxm_path, sem.source or "(SEM)", edge)
    return registration


def _blas_threads() -> int | None:
    """The BLAS thread limit in force here (None when there is no BLAS library or no limit to pass on)."""
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return min(counts) if counts else None


def _preprocess_edge(edge: str, stack: Stack, sem, accept_unmatched: bool, blas_threads: int | None):
    """One edge's :func:`preprocess_stack` and :func:`register_checked` (what a worker process runs).

    BLAS runs on the caller's number of threads (``stats.run.run_lamella`` limits it to one so that results do
    not depend on the machine): a worker computes exactly what the serial loop computes.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        od, report, shifts = preprocess_stack(stack)
        registration = register_checked(edge, od, stack.source, sem, accept_unmatched=accept_unmatched)
    return od, report, shifts, registration


def preprocess_lamella(lamella: Lamella, *, progress: Callable[[str], None] = _silent,
                       accept_unmatched: bool = False, workers: int = 1, pool=None):
    """The stages before classification: OD and drift per edge, registration to the SEM, spectral maps.

    Parameters
    ----------
    lamella : Lamella
    progress : callable, optional
        Called with a short message before each long step.
    accept_unmatched : bool
        Keep registrations that match no better than chance (:func:`register_checked`) instead of refusing.
    workers : int
        Processes to run the edges' drift correction, OD and registration in (one edge per process; 1, the
        default, runs them one after the other here): the first edge runs in this process, the others in
        ``workers - 1`` worker processes at the same time. The results are the same either way, and so is the
        error a bad edge raises (that of the first bad edge in the lamella's order; with workers, only after
        the edges already running have finished); see :func:`edge_workers` for when it stays serial anyway.
        Worker processes are started with ``spawn`` (safe when this process has threads); each costs a fresh
        interpreter and the imports (about 2 s of CPU), done while this process works on the first edge. As
        with any ``spawn`` pool, a script that asks for workers needs the ``if __name__ == "__main__":`` guard.
    pool : concurrent.futures.Executor, optional
        A process pool (:func:`spawn_pool`) to run the other edges in instead of starting one (``workers`` is
        then not used): the caller keeps it, e.g. to draw the report in it later.

    Returns
    -------
    od_stacks, od_reports, drift_px, registrations : dict by edge
        As in :class:`PipelineResult`.
    egt2g : EgT2gMap or None
    s_edge : SEdgeMap or None
    """
    sem = lamella.sem
    od_stacks, od_reports, drift_px, registrations = {}, {}, {}, {}
    n_workers = edge_workers(workers, len(lamella.stacks)) if pool is None else 1 + (len(lamella.stacks) > 1)

    def here(edge, stack):
        progress(f"{edge}: aligning {stack.n_energy} energy frames and converting to optical density")
        od, report, shifts = preprocess_stack(stack)
        progress(f"{edge}: registering STXM ({od.pixel_size_nm:.1f} nm px) onto SEM ({sem.pixel_size_nm:.2f} nm px)")
        return od, report, shifts, register_checked(edge, od, stack.source, sem, accept_unmatched=accept_unmatched)

    edges = list(lamella.stacks)
    if n_workers > 1:
        # the first edge runs here while the others run in n_workers - 1 fresh processes, which start (import)
        # in the meantime; results are taken in the lamella's order, so the first bad edge is the one reported
        from contextlib import nullcontext

        from .errors import CeimapInputError

        first, others = edges[0], edges[1:]
        blas_threads = _blas_threads()
        with nullcontext(pool) if pool is not None else spawn_pool(n_workers - 1) as pool:
            futures = {}
            for edge in others:
                futures[edge] = pool.submit(_preprocess_edge, edge, lamella.stacks[edge], sem, accept_unmatched,
                                            blas_threads)
            try:
                results = {first: here(first, lamella.stacks[first])}
                for edge in others:
                    stack = lamella.stacks[edge]
                    progress(f"{edge}: aligning {stack.n_energy} energy frames, converting to optical density and "
                             f"registering STXM onto SEM (in a worker process, alongside {first})")
                    try:
                        results[edge] = futures[edge].result()
                    except CeimapInputError as exc:
                        raise exc from None  # as in the serial loop: the message is the whole story
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
        for edge in edges:
            od_stacks[edge], od_reports[edge], drift_px[edge], registrations[edge] = results[edge]
    else:
        for edge in edges:
            od_stacks[edge], od_reports[edge], drift_px[edge], registrations[edge] = here(edge, lamella.stacks[edge])

    egt2g = None
    if NI_EDGE in od_stacks:
        progress("Ni-L: e_g/t_2g ratio per STXM pixel")
        egt2g = egt2g_map(od_stacks[NI_EDGE])
    s_edge = None
    if S_EDGE in od_stacks:
        progress("S-L: edge position per STXM pixel")
        s_edge = s_edge_map(od_stacks[S_EDGE])
    return od_stacks, od_reports, drift_px, registrations, egt2g, s_edge


def train_classifier(annotated: list, *, estimator: str = "random_forest", seed: int = 0,
                     progress: Callable[[str], None] = _silent):
    """Train a pixel classifier from annotated lamellae (the ``ceimap train`` stages).

    Parameters
    ----------
    annotated : list of (Lamella, ndarray)
        Each lamella with its annotation image (uint8 on the SEM grid, 0 = not annotated, 1–4 classes).
    estimator : {"random_forest", "hist_gradient_boosting"}
    seed : int
    progress : callable

    Returns
    -------
    PixelClassifier
        With ``validation["leave_one_lamella_out"]`` when two or more lamellae were given.
    """
    from .classifier import PixelClassifier, default_spec, lamella_samples, leave_one_lamella_out
    from .errors import CeimapInputError

    edge_sets = [set(lam.stacks) for lam, _ in annotated]
    common = set.intersection(*edge_sets)
    spec = default_spec({e: None for e in common})
    samples = []
    for lam, labels in annotated:
        if not np.any(labels > 0):
            raise CeimapInputError("the annotation image has no annotated pixel (all 0)",
                                   path=lam.annotations_path or lam.name)
        def named(message, _name=lam.name):
            progress(f"{_name}: {message}")

        od_stacks, _, _, registrations, egt2g, s_edge = preprocess_lamella(lam, progress=named)
        named(f"features of {int(np.sum(labels > 0))} annotated pixels")
        samples.append(lamella_samples(lam.name, lam.sem, od_stacks, registrations, labels, spec,
                                       egt2g=egt2g, s_edge=s_edge))
    present = np.unique(np.concatenate([s.labels for s in samples]))
    if present.size < 2:
        raise CeimapInputError(f"the annotations name only class {int(present[0])}: annotate at least two classes",
                               path=", ".join(str(lam.annotations_path or lam.name) for lam, _ in annotated))
    validation = {}
    if len(samples) > 1:
        progress("leave-one-lamella-out validation")
        validation["leave_one_lamella_out"] = leave_one_lamella_out(samples, spec, estimator=estimator, seed=seed)
    progress(f"fitting the classifier ({estimator}) on {sum(s.labels.size for s in samples)} annotated pixels")
    return PixelClassifier(spec, samples, estimator=estimator, seed=seed, validation=validation)


REFINE_TILE_PX = 2048
"""Side of the tiles the boundary refinement of a tiled (large) SEM image is done in."""


def classify_with_model(classifier, od_stacks: dict, registrations: dict, sem, *, egt2g=None,
                        s_edge=None) -> Segmentation:
    """Class map of a lamella from a trained pixel classifier.

    The classifier names classes 1–4; its NMC and void boundaries are then re-decided on the SEM as in the
    unsupervised path (:func:`ceimap.segment.classifier.refine_boundaries`), and its interphase is re-drawn where the
    STXM chemistry measured it, as the unsupervised path draws it (:func:`ceimap.segment.classifier.place_interphase`:
    a band whose view through the probe reproduces the measured interphase fractions, in the pieces the
    classifier found interphase in, surfaces beyond the STXM field at the measured median thickness; what each
    step gains on the example lamellae is in ``benchmarks/README.md``). Empty (void-class) regions along the
    field border are outside the lamella (:func:`ceimap.segment.outside.split_empty`).

    Returns
    -------
    Segmentation
        ``details`` hold ``method`` ("supervised pixel classifier"), ``model`` (file, sha256, feature spec …,
        see :meth:`PixelClassifier.describe`), ``entropy`` (normalised entropy map, SEM grid),
        ``boundary_refinement`` (the STXM pixel size it used and the fraction of pixels it changed) and
        ``interphase_placement`` (:func:`ceimap.segment.classifier.place_interphase`'s account: placed by the chemistry
        or left as the classifier put it, and why). The probabilities are the classifier's, except on the pixels
        whose class was refined or re-placed (a few %, at boundaries), where the probabilities of the class the
        forest chose and of the final class are swapped (so that the map's class is the most probable; the
        entropy is unchanged).

    Notes
    -----
    An SEM image larger than :data:`ceimap.segment.tiles.LARGE_SEM_PIXELS` is classified tile by tile
    (:func:`ceimap.segment.tiles.classify_tiled`): the classifier's classes and entropy are the same, but the
    probability stack is not kept (``probabilities`` is None; ``details["tiled"]`` says so), which bounds the
    memory of an 8192² SEM; the boundary refinement is then done in tiles of :data:`REFINE_TILE_PX` with margins,
    and the interphase is left where the classifier put it (the chemistry placement works on the whole SEM grid,
    whose probe kernels grow with the pixel count; ``details["interphase_placement"]`` says so).
    """
    from .classifier import place_interphase, refine_boundaries
    from .tiles import classify_tiled, is_large

    tiled = is_large(np.shape(sem.image))
    if tiled:
        pred = classify_tiled(classifier, sem.image, sem.pixel_size_nm, od_stacks, registrations, egt2g=egt2g,
                              s_edge=s_edge)
        classes, probabilities, entropy = pred.classes, None, pred.entropy
    else:
        classes, probabilities, entropy = classifier.predict(sem, od_stacks, registrations, egt2g=egt2g,
                                                             s_edge=s_edge)
    stxm_px = max(float(od_stacks[e].pixel_size_nm) for e in classifier.spec.edges)
    predicted = classes
    classes = refine_boundaries(classes, sem.image, float(sem.pixel_size_nm), stxm_px,
                                tile_px=REFINE_TILE_PX if tiled else None)
    refined = {"stxm_pixel_nm": stxm_px, "changed_fraction": float(np.mean(classes != predicted))}
    if tiled:
        # the placement works on the whole SEM grid (2.2 GB and 150 s CPU for a 16 Mpx image): not for tiled images
        placement = {"placed_by": "classifier", "reason": "tiled (large) image: the chemistry placement works on "
                                                          "the whole SEM grid and is not done in tiles"}
    else:
        classes, placement = place_interphase(classes, od_stacks, registrations, float(sem.pixel_size_nm))
    changed = classes != predicted
    if probabilities is not None and changed.any():
        # the refined (or re-placed) class takes the probability the forest gave the class it replaced (and vice
        # versa): the map's class is the most probable again, and the entropy is unchanged
        iy, ix = np.nonzero(changed)
        old, new = predicted[iy, ix].astype(np.intp), classes[iy, ix].astype(np.intp)
        p_old, p_new = probabilities[old, iy, ix], probabilities[new, iy, ix]
        probabilities[old, iy, ix], probabilities[new, iy, ix] = p_new, p_old
    outside = split_empty(classes == Class.VOID, float(sem.pixel_size_nm))
    classes = classes.copy()
    classes[outside] = Class.OUTSIDE
    if probabilities is not None:
        probabilities[Class.OUTSIDE] = np.where(outside, probabilities[Class.VOID], 0.0)
        probabilities[Class.VOID] = np.where(outside, 0.0, probabilities[Class.VOID])
    details = {"method": "supervised pixel classifier", "model": classifier.describe(), "entropy": entropy}
    details["boundary_refinement"] = refined
    details["interphase_placement"] = placement
    if tiled:
        details["tiled"] = {"tiles": pred.n_tiles, "probabilities_kept": False}
    return Segmentation(classes=classes, probabilities=probabilities, details=details)


def process_lamella(
    lamella: Lamella,
    *,
    model=None,
    progress: Callable[[str], None] = _silent,
    accept_unmatched: bool = False,
    workers: int = 1,
    pool=None,
) -> PipelineResult:
    """Run the segment stages on one lamella: OD, drift, registration, spectra, classes, particles.

    Parameters
    ----------
    lamella : Lamella
        SEM image and STXM stacks (a Ni-L stack is required; S-L is used when present).
    model : path-like or PixelClassifier, optional
        A trained pixel classifier (:mod:`ceimap.segment.classifier`, written by ``ceimap train``): its prediction
        replaces the unsupervised class assignment; everything else is unchanged. A model file is loaded
        and checked (and checked against this lamella's edges, energies and pixel sizes) before any
        processing, so a wrong model fails fast.
    progress : callable, optional
        Called with a short message before each long step (the CLI prints them on stderr).
    accept_unmatched : bool
        Keep registrations that match no better than chance instead of refusing the lamella
        (:func:`register_checked`; ``ceimap run --accept-registration``).
    workers : int
        Processes the edges are preprocessed and registered in (:func:`preprocess_lamella`); 1 (the default)
        keeps everything in this process. Same results either way.
    pool : concurrent.futures.Executor, optional
        A process pool to run the other edges in (:func:`preprocess_lamella`), kept by the caller.

    Returns
    -------
    PipelineResult
    """
    sem = lamella.sem
    classifier = None
    if model is not None:
        from .classifier import PixelClassifier

        if isinstance(model, PixelClassifier):
            classifier = model
        else:
            progress(f"loading the pixel classifier {model} (refitting it from its training data)")
            classifier = PixelClassifier.load(model)
        classifier.check_lamella(sem, lamella.stacks)
    od_stacks, od_reports, drift_px, registrations, egt2g, s_edge = preprocess_lamella(
        lamella, progress=progress, accept_unmatched=accept_unmatched, workers=workers, pool=pool)

    if classifier is None:
        progress("segmenting: chemistry + SEM texture → class map")
        segmentation = segment_lamella(od_stacks, registrations, sem)
    else:
        progress("segmenting with the trained pixel classifier")
        segmentation = classify_with_model(classifier, od_stacks, registrations, sem, egt2g=egt2g, s_edge=s_edge)
    progress("labelling NMC particles")
    particles = label_particles(segmentation.classes, sem.image, sem.pixel_size_nm)

    return PipelineResult(
        lamella=lamella,
        od_stacks=od_stacks,
        od_reports=od_reports,
        drift_px=drift_px,
        registrations=registrations,
        classes=np.asarray(segmentation.classes, dtype=np.uint8),
        particles=np.asarray(particles, dtype=np.uint32),
        probabilities=segmentation.probabilities,
        egt2g=egt2g,
        s_edge=s_edge,
        details={"segmentation": segmentation.details},
    )
