"""What the plugin's widgets do, as plain functions over layers: no Qt, no viewer.

A *layer* here is anything with ``data``, ``metadata`` and ``name`` attributes — a napari layer, or a
``types.SimpleNamespace`` in tests. Every action reads the ceimap objects back from the layers it is given
(:func:`stack_from_layer`, :func:`sem_from_layer`, :func:`registration_from_layer`), calls the library
(``segment`` / ``stats``) and returns napari LayerData tuples ``(data, kwargs, layer_type)``. A returned tuple
whose name equals an existing layer's name updates that layer when napari adds it. Live classification
(:class:`FeatureCache`, :class:`LivePredictor`) keeps the lamella's classifier features and runs the
coarse-to-fine re-prediction the classify widget shows after each annotation edit.

World coordinates are nanometres on the SEM frame (see :mod:`ceimap.napari_plugin._layers`). Shapes and Points drawn
by the user are in world coordinates; :func:`world_to_stxm_pixels` and :func:`world_to_sem_pixels` bring them
onto a stack's or the SEM's pixel grid.

Why one module of about 950 lines: it is the plugin's whole contract with the library, one short function per
widget action plus the live-classification cache. Widgets, the reader and the tests (``tests/napari_plugin/
test_actions.py`` mirrors it) find every action in one place; none of its parts is used without the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ceimap.segment import Class

from ._layers import (CLASS_NAMES, classes_layer, egt2g_layer, particles_layer, stack_layer, stxm_world_matrix,
                      world_matrix_of_stack_meta)


class LayerError(ValueError):
    """A layer given to a widget is not what the action needs (the message says which and why)."""


# ----------------------------------------------------------------------------------------------------------
# layers → ceimap objects
# ----------------------------------------------------------------------------------------------------------

def _meta(layer) -> dict:
    return dict(getattr(layer, "metadata", None) or {})


def is_stack_layer(layer) -> bool:
    """True for an image layer holding an STXM stack (3-D with an energy list in its metadata)."""
    meta = _meta(layer)
    data = getattr(layer, "data", None)
    return "energies_ev" in meta and data is not None and np.ndim(data) == 3


def is_sem_layer(layer) -> bool:
    """True for an image layer holding the SEM image (2-D with a pixel size in its metadata)."""
    meta = _meta(layer)
    data = getattr(layer, "data", None)
    return meta.get("kind") == "sem" and data is not None and np.ndim(data) == 2


def stack_from_layer(layer):
    """The :class:`ceimap.segment.stack.Stack` an STXM image layer shows.

    Raises
    ------
    LayerError
        When the layer holds no STXM stack (no energies in its metadata, not 3-D).
    """
    from ceimap.segment.stack import Stack

    if not is_stack_layer(layer):
        raise LayerError(f"layer {getattr(layer, 'name', '?')!r} is not an STXM stack "
                         "(open a stack or a LAMELLA.toml with the ceimap reader)")
    meta = _meta(layer)
    data = np.asarray(layer.data, dtype=np.float64)
    energies = np.asarray(meta["energies_ev"], dtype=float)
    if energies.size != data.shape[0]:
        raise LayerError(f"layer {layer.name!r}: {energies.size} energies for {data.shape[0]} frames")
    return Stack(data=data, energies_ev=energies, pixel_size_nm=float(meta["pixel_size_nm"]),
                 kind=meta.get("kind", "od"), edge=meta.get("edge"),
                 origin_x_nm=float(meta.get("origin_x_nm", 0.0)), origin_y_nm=float(meta.get("origin_y_nm", 0.0)),
                 source=str(meta.get("source", "")))


def sem_from_layer(layer):
    """The :class:`ceimap.segment.lamella.SemImage` an SEM image layer shows."""
    from ceimap.segment.lamella import SemImage

    if not is_sem_layer(layer):
        raise LayerError(f"layer {getattr(layer, 'name', '?')!r} is not an SEM image opened by ceimap "
                         "(its pixel size is unknown)")
    meta = _meta(layer)
    return SemImage(np.asarray(layer.data, dtype=np.float32), float(meta["pixel_size_nm"]),
                    str(meta.get("pixel_size_source", "user")), str(meta.get("source", "")))


def registration_from_layer(layer):
    """The STXM → SEM :class:`ceimap.segment.register.Registration` of a stack layer placed on the SEM frame.

    Raises
    ------
    LayerError
        When the layer is not registered onto an SEM frame.
    """
    from ceimap.segment.register import Registration

    meta = _meta(layer)
    if "matrix_stxm_to_sem" not in meta:
        raise LayerError(f"layer {getattr(layer, 'name', '?')!r} is not registered onto the SEM "
                         "(run the register widget first)")
    return Registration(matrix=np.asarray(meta["matrix_stxm_to_sem"], float),
                        quality=float(meta.get("registration_quality", float("nan"))),
                        method=str(meta.get("registration") or ""))


# ----------------------------------------------------------------------------------------------------------
# coordinates
# ----------------------------------------------------------------------------------------------------------

def world_to_stxm_pixels(layer, points_world) -> np.ndarray:
    """World points ``(..., y_nm, x_nm)`` (the last two columns are used) → ``(y, x)`` pixels of a stack layer."""
    pts = np.atleast_2d(np.asarray(points_world, float))[:, -2:]
    m = world_matrix_of_stack_meta(_meta(layer))
    inv = np.linalg.inv(m)
    yx1 = np.c_[pts, np.ones(len(pts))] @ inv.T
    return yx1[:, :2]


def world_to_sem_pixels(sem_layer, points_world) -> np.ndarray:
    """World points ``(..., y_nm, x_nm)`` → ``(y, x)`` SEM pixels."""
    p = float(_meta(sem_layer)["pixel_size_nm"])
    return np.atleast_2d(np.asarray(points_world, float))[:, -2:] / p


def region_mask_from_shapes(shapes_world, layer) -> np.ndarray:
    """Boolean mask on a stack layer's pixel grid of the polygons / rectangles drawn in world coordinates.

    Parameters
    ----------
    shapes_world : list of ndarray (n_vertices, >= 2)
        Vertices of each shape in world coordinates (napari ``Shapes.data``; the last two columns are y, x).
    layer
        The STXM stack layer.
    """
    from skimage.draw import polygon2mask

    shape_yx = np.shape(layer.data)[-2:]
    mask = np.zeros(shape_yx, bool)
    for vertices in shapes_world:
        yx = world_to_stxm_pixels(layer, vertices)
        mask |= polygon2mask(shape_yx, yx)
    return mask


# ----------------------------------------------------------------------------------------------------------
# actions
# ----------------------------------------------------------------------------------------------------------

def _placed_like(layer, stack, name: str, extra_meta: dict | None = None) -> tuple:
    """Layer data of ``stack`` placed where ``layer`` is (same registration, or same pixel placement)."""
    meta = _meta(layer)
    matrix = meta.get("matrix_stxm_to_sem")
    out = stack_layer(stack, matrix=matrix, sem_pixel_nm=meta.get("sem_pixel_nm"), name=name,
                      registration=meta.get("registration"))
    out[1]["metadata"].update({k: meta[k] for k in ("registration_quality", "lamella") if k in meta})
    out[1]["metadata"].update(extra_meta or {})
    return out


def preprocess(layer, *, i0_region_world=None, align: bool = True) -> tuple:
    """Drift-correct a stack layer's energy frames and convert it to optical density.

    Parameters
    ----------
    layer
        An STXM stack layer (counts or OD).
    i0_region_world : list of ndarray, optional
        Shapes (world coordinates) covering empty area: I0 is taken there. Default: the file's monitor, else
        the empty region found automatically (:func:`ceimap.segment.stack.find_i0`).
    align : bool
        Correct the drift between energy frames (:func:`ceimap.segment.align.align_frames`).

    Returns
    -------
    LayerData tuple
        The aligned OD stack, named ``"<edge> OD aligned"``, placed like ``layer``; its metadata holds the
        drift shifts (``drift_px``) and the OD report.
    """
    from ceimap.segment.align import align_frames
    from ceimap.segment.stack import optical_density

    stack = stack_from_layer(layer)
    region = None
    if i0_region_world is not None and len(i0_region_world):
        region = region_mask_from_shapes(i0_region_world, layer)
        if not region.any():
            raise LayerError("the I0 region drawn does not cover any pixel of the stack")
    shifts = np.zeros((stack.n_energy, 2))
    if align and stack.n_energy > 1:
        stack, shifts = align_frames(stack)
    report = {"i0_source": "already optical density"}
    if stack.kind != "od":
        stack, report = optical_density(stack, region_mask=region)
    from ceimap.stats.run import compact_record

    edge = stack.edge or "STXM"
    return _placed_like(layer, stack, f"{edge} OD aligned",
                        {"drift_px": np.asarray(shifts).tolist(), "od_report": compact_record(report),
                         "aligned": bool(align)})


def register(layer, sem_layer, *, stxm_points_world=None, sem_points_world=None,
             kind: str = "similarity") -> tuple:
    """Register a stack layer onto the SEM: automatic (mutual information) or from landmark pairs.

    Parameters
    ----------
    layer
        An OD stack layer.
    sem_layer
        The SEM image layer.
    stxm_points_world, sem_points_world : ndarray (n, >= 2), optional
        Landmarks: the same features clicked on the stack layer (as currently displayed) and on the SEM, in
        order. Given both → :func:`ceimap.segment.register.matrix_from_landmarks`; else automatic
        (:func:`ceimap.segment.register.register_stxm_to_sem` on :func:`ceimap.segment.register.contrast_image`).
    kind : {"similarity", "affine"}
        Landmark transform.

    Returns
    -------
    LayerData tuple
        The same layer (same name: napari updates it in place) with its new affine and matrix.
    """
    from ceimap.segment.register import (Registration, contrast_image, matrix_from_landmarks,
                                  register_stxm_to_sem)

    stack = stack_from_layer(layer)
    sem = sem_from_layer(sem_layer)
    if stxm_points_world is not None and sem_points_world is not None and len(stxm_points_world):
        stxm_yx = world_to_stxm_pixels(layer, stxm_points_world)
        sem_yx = world_to_sem_pixels(sem_layer, sem_points_world)
        if len(stxm_yx) != len(sem_yx):
            raise LayerError(f"landmarks: {len(stxm_yx)} points on the stack but {len(sem_yx)} on the SEM; "
                             "click the same features on both, in the same order")
        matrix = matrix_from_landmarks(stxm_yx[:, ::-1], sem_yx[:, ::-1], kind=kind)
        reg = Registration(matrix=matrix, method=f"landmarks-{kind} ({len(stxm_yx)} pairs)")
    else:
        reg = register_stxm_to_sem(contrast_image(stack), stack.pixel_size_nm, sem.image, sem.pixel_size_nm)
    meta = _meta(layer)
    out = stack_layer(stack, matrix=reg.matrix, sem_pixel_nm=sem.pixel_size_nm, name=layer.name,
                      registration=reg.method)
    keep = {k: v for k, v in meta.items() if k not in out[1]["metadata"]}
    out[1]["metadata"].update(keep)
    out[1]["metadata"]["registration_quality"] = float(reg.quality)
    return out


def decompose(layer, *, method: str = "pca", n_components: int | None = None,
              n_clusters: int | None = None) -> list[tuple]:
    """Decompose the per-pixel spectra of an OD stack layer.

    Parameters
    ----------
    layer
        An OD stack layer.
    method : {"pca", "nmf", "kmeans"}
        PCA (rank from the noise level when ``n_components`` is None), NMF (rank from PCA when None), or
        k-means on the PCA scores.
    n_components : int, optional
    n_clusters : int, optional
        For k-means (default: the PCA rank + 1).

    Returns
    -------
    list of LayerData tuples
        ``"<edge> <method> maps"`` (component, y, x) abundances or scores placed like the stack, and for k-means
        ``"<edge> clusters"`` (Labels, 1-based). The component spectra and energies are in the metadata
        (``components``, ``energies_ev``) for plotting.
    """
    from ceimap.segment import decompose as dec

    stack = stack_from_layer(layer)
    if stack.kind != "od":
        raise LayerError(f"layer {layer.name!r} holds counts: convert it to optical density first (preprocess)")
    cube = np.moveaxis(np.nan_to_num(stack.data), 0, -1)
    if method not in ("pca", "nmf", "kmeans"):
        raise LayerError(f"unknown decomposition {method!r}; choose pca, nmf or kmeans")
    p = dec.pca(cube, n_components if method == "pca" else None)
    edge = stack.edge or "STXM"
    if method == "pca":
        result = p
    elif method == "nmf":
        result = dec.nmf(cube, int(n_components or p.n_components))
    else:
        result = dec.kmeans(p.abundances, int(n_clusters or p.n_components + 1))
    maps = np.moveaxis(np.asarray(result.abundances, np.float32), -1, 0)
    meta = _meta(layer)
    matrix = meta.get("matrix_stxm_to_sem")
    world = stxm_world_matrix(matrix, meta.get("sem_pixel_nm"), stack.pixel_size_nm,
                              (stack.origin_y_nm, stack.origin_x_nm))
    affine3 = np.eye(4)
    affine3[1:, 1:] = world
    info = {"components": np.asarray(result.components).tolist(), "energies_ev": stack.energies_ev.tolist(),
            "method": result.method, "edge": stack.edge, "kind": "decomposition",
            "residual_rms": float(np.sqrt(np.mean(np.square(result.residual))))}
    layers = [(maps, {"name": f"{edge} {method} maps", "affine": affine3, "colormap": "viridis",
                      "metadata": info, "blending": "additive"}, "image")]
    if method == "kmeans":
        labels = (np.asarray(result.details["labels"]).reshape(stack.shape_yx) + 1).astype(np.int32)
        layers.append((labels, {"name": f"{edge} clusters", "affine": world, "opacity": 0.5,
                                "metadata": {"kind": "clusters", "edge": stack.edge}}, "labels"))
    return layers


def _stack_layers_by_edge(stack_layers) -> tuple[dict, dict]:
    stacks, registrations = {}, {}
    for layer in stack_layers:
        stack = stack_from_layer(layer)
        if stack.kind != "od":
            raise LayerError(f"layer {layer.name!r} holds counts: preprocess it to optical density first")
        edge = stack.edge or layer.name
        if edge in stacks:
            raise LayerError(f"two stack layers of edge {edge}: choose one per edge")
        stacks[edge] = stack
        registrations[edge] = registration_from_layer(layer)
    return stacks, registrations


def lamella_maps(sem_layer, stack_layers) -> dict:
    """The SEM, OD stacks, registrations and spectral maps of the viewer's layers (what classifiers use).

    Returns
    -------
    dict
        ``sem`` (SemImage), ``od_stacks`` and ``registrations`` (by edge), ``egt2g`` and ``s_edge`` (maps on the
        native grids, None without that edge).
    """
    from ceimap.segment.errors import CeimapInputError
    from ceimap.segment.lamella import Lamella, check_lamella
    from ceimap.segment.pipeline import NI_EDGE, S_EDGE
    from ceimap.segment.spectra import egt2g_map, s_edge_map

    sem = sem_from_layer(sem_layer)
    stacks, registrations = _stack_layers_by_edge(stack_layers)
    try:  # what `ceimap run` refuses before processing (each edge's energies, field sizes), refused here too
        check_lamella(Lamella(name="napari", sample="", sem=sem, stacks=stacks), required_edges=())
    except CeimapInputError as exc:
        raise LayerError(str(exc)) from None
    return {"sem": sem, "od_stacks": stacks, "registrations": registrations,
            "egt2g": egt2g_map(stacks[NI_EDGE]) if NI_EDGE in stacks else None,
            "s_edge": s_edge_map(stacks[S_EDGE]) if S_EDGE in stacks else None}


def train(maps: dict, annotations, *, estimator: str = "random_forest", seed: int = 0, name: str = "napari"):
    """Train a pixel classifier on the annotation strokes of one lamella (:mod:`ceimap.segment.classifier`).

    Parameters
    ----------
    maps : dict
        :func:`lamella_maps` of the lamella.
    annotations : ndarray, SEM shape
        Class codes 1–4 where annotated, 0 elsewhere (a Labels layer's data).
    """
    from ceimap.segment.classifier import PixelClassifier, default_spec, lamella_samples

    labels = _check_annotations(annotations, np.shape(maps["sem"].image))
    spec = default_spec(maps["od_stacks"])
    samples = lamella_samples(name, maps["sem"], maps["od_stacks"], maps["registrations"],
                              labels, spec, egt2g=maps["egt2g"], s_edge=maps["s_edge"])
    return PixelClassifier(spec, [samples], estimator=estimator, seed=seed)


def predict(classifier, maps: dict, *, region=None) -> list[tuple]:
    """Classes and uncertainty of a trained classifier on the lamella, as layers.

    Parameters
    ----------
    classifier : PixelClassifier
    maps : dict
        :func:`lamella_maps`.
    region : tuple of slice, optional
        Only this SEM region (e.g. the view on screen) — the tiles covering it; elsewhere 0.

    Returns
    -------
    list of LayerData tuples
        ``prediction`` (Labels, class codes) and ``uncertainty`` (normalised entropy, 0 certain – 1 unsure:
        where to annotate next).
    """
    sem = maps["sem"]
    mask, tile_px = None, 1024
    if region is not None:
        mask = np.zeros(np.shape(sem.image), bool)
        mask[region] = True
        # tiles about the size of the view: it touches at most four, and the filters' halo stays a small overhead
        tile_px = int(np.clip(max(s.stop - s.start for s in region), 128, 1024))
    classes, _, entropy = classifier.predict(sem, maps["od_stacks"], maps["registrations"], egt2g=maps["egt2g"],
                                             s_edge=maps["s_edge"], mask=mask, tile_px=tile_px)
    p = sem.pixel_size_nm
    unc = np.where(classes != Class.OUTSIDE, entropy, np.nan).astype(np.float32)
    return [classes_layer(classes, p, name="prediction"),
            (unc, {"name": "uncertainty", "scale": (p, p), "units": ("nm", "nm"), "colormap": "inferno",
                   "contrast_limits": (0.0, 1.0), "opacity": 0.6, "visible": False,
                   "metadata": {"kind": "uncertainty"}}, "image")]


def visible_region(shape_yx, corner_min_world, corner_max_world, pixel_size_nm: float):
    """SEM pixel slices of the part of the image inside a world-coordinate box (the viewer's field of view)."""
    lo = np.floor(np.asarray(corner_min_world, float)[-2:] / pixel_size_nm).astype(int)
    hi = np.ceil(np.asarray(corner_max_world, float)[-2:] / pixel_size_nm).astype(int) + 1
    lo = np.clip(lo, 0, shape_yx)
    hi = np.clip(hi, 0, shape_yx)
    if np.any(hi <= lo):
        return None
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def pipeline_result(sem_layer, stack_layers, *, classes=None, particles=None, name: str = "napari"):
    """A :class:`ceimap.segment.pipeline.PipelineResult` from the viewer's layers (what :func:`measure` and
    :func:`export_run` analyse).

    Parameters
    ----------
    sem_layer
        SEM image layer.
    stack_layers : list
        Aligned OD stack layers registered onto the SEM (one per edge; Ni-L required).
    classes : ndarray, optional
        Class map on the SEM grid (e.g. the user's edited Labels). When None the unsupervised segmentation
        runs (:func:`ceimap.segment.assign.segment_lamella`).
    particles : ndarray, optional
        Particle ids; labelled from ``classes`` when None (:func:`ceimap.segment.particles.label_particles`).
    """
    from ceimap.segment.assign import segment_lamella
    from ceimap.segment.lamella import Lamella
    from ceimap.segment.particles import label_particles
    from ceimap.segment.pipeline import NI_EDGE, PipelineResult

    maps = lamella_maps(sem_layer, stack_layers)
    sem, stacks, registrations = maps["sem"], maps["od_stacks"], maps["registrations"]
    if NI_EDGE not in stacks:
        raise LayerError("a Ni-L stack layer is needed (the e_g/t_2g ratio comes from it)")
    details = {}
    probabilities = None
    if classes is None:
        seg = segment_lamella(stacks, registrations, sem)
        classes, probabilities, details = seg.classes, seg.probabilities, {"segmentation": seg.details}
    classes = np.asarray(classes).astype(np.uint8)
    if classes.shape != sem.image.shape:
        raise LayerError(f"class map {classes.shape} does not match the SEM image {sem.image.shape}")
    if particles is None:
        particles = label_particles(classes, sem.image, sem.pixel_size_nm)
    drift = {}
    reports = {}
    for layer in stack_layers:
        meta = _meta(layer)
        edge = meta.get("edge") or layer.name
        drift[edge] = np.asarray(meta.get("drift_px", np.zeros((len(meta["energies_ev"]), 2))), float)
        reports[edge] = dict(meta.get("od_report", {}))
    sources = [Path(s) for s in [sem.source, *(st.source for st in stacks.values())] if s]
    lamella = Lamella(name=str(_meta(sem_layer).get("lamella") or name),
                      sample=str(_meta(sem_layer).get("sample") or ""), sem=sem, stacks=stacks,
                      input_paths=[p for p in sources if p.is_file()])
    return PipelineResult(
        lamella=lamella, od_stacks=stacks, od_reports=reports, drift_px=drift, registrations=registrations,
        classes=classes, particles=np.asarray(particles, np.uint32), probabilities=probabilities,
        egt2g=maps["egt2g"], s_edge=maps["s_edge"], details=details)


def segment(sem_layer, stack_layers) -> list[tuple]:
    """Unsupervised class map, particles and the e_g/t_2g map on the SEM grid, as layers.

    Returns
    -------
    list of LayerData tuples
        ``classes`` (Labels, editable), ``particles`` (Labels), ``e_g/t_2g`` (image).
    """
    from ceimap.stats.run import egt2g_on_sem

    result = pipeline_result(sem_layer, stack_layers)
    p = result.lamella.sem.pixel_size_nm
    return [egt2g_layer(egt2g_on_sem(result), p), classes_layer(result.classes, p),
            particles_layer(result.particles, p)]


def measure(sem_layer, stack_layers, classes, particles=None):
    """Statistics of the current class map (:func:`ceimap.stats.analysis.analyse_result`).

    Returns
    -------
    result : PipelineResult
    analysis : stats.analysis.Analysis
        ``analysis.summary`` (CONTRACT keys), ``analysis.particles`` (the per-particle table) …
    """
    from ceimap.stats.analysis import analyse_result

    result = pipeline_result(sem_layer, stack_layers, classes=classes, particles=particles)
    return result, analyse_result(result)


def export_run(out_dir, sem_layer, stack_layers, classes, particles=None, *, overwrite: bool = False) -> Path:
    """Write a ``ceimap run`` results folder (CONTRACT outputs + report) from the viewer's layers, atomically.

    Returns
    -------
    Path
        The ``report.html`` written.
    """
    from ceimap.stats.outputs import AtomicFolder, check_output_folder, provenance
    from ceimap.stats.run import write_results

    out = Path(out_dir)
    result, analysis = measure(sem_layer, stack_layers, classes, particles)
    check_output_folder(out, result.lamella.input_paths, overwrite=overwrite)
    prov = provenance(result.lamella.input_paths,
                      {"source": "napari plugin (class map as shown in the viewer, possibly edited)",
                       "od": {e: r for e, r in result.od_reports.items()}})
    with AtomicFolder(out) as tmp:
        write_results(tmp, result, analysis, prov)
    return out / "report.html"


def spectrum_at(layer, point_world) -> tuple[np.ndarray, np.ndarray] | None:
    """Energies and OD spectrum of the stack pixel under a world point (None outside the stack)."""
    meta = _meta(layer)
    y, x = np.round(world_to_stxm_pixels(layer, point_world)[0]).astype(int)
    data = np.asarray(layer.data)
    if not (0 <= y < data.shape[1] and 0 <= x < data.shape[2]):
        return None
    return np.asarray(meta["energies_ev"], float), np.asarray(data[:, y, x], float)


# ----------------------------------------------------------------------------------------------------------
# live classification: feature cache, quick refit, coarse-to-fine prediction
# ----------------------------------------------------------------------------------------------------------

PREVIEW_POINTS = 2**18
"""Most lattice points the first preview classifies (a latency budget: ~0.1 µs per point and tree)."""
PREVIEW_SAMPLES = 2**13
"""Most annotated pixels (class-balanced) the preview model is fitted on."""
PREVIEW_PARAMS = {"random_forest": {}, "hist_gradient_boosting": {"max_iter": 25}}
"""Size of the preview model beyond its fewer training samples (the final model has the library's defaults):
the random forest keeps the library's tree count (12; the preview's speed comes from ``PREVIEW_SAMPLES`` and
``PREVIEW_POINTS``), gradient boosting stops after 25 of its 200 iterations."""
PREDICT_CHUNK = 2**17
"""Feature rows classified between two checks for stale work (~0.1–0.5 s)."""


def _check_annotations(labels: np.ndarray, shape) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise LayerError(f"annotations {labels.shape} do not match the SEM image {tuple(shape)}")
    if labels.size and (labels.min() < 0 or labels.max() > max(Class) or not np.issubdtype(labels.dtype, np.integer)):
        bad = np.setdiff1d(np.unique(labels), [int(c) for c in Class])
        if bad.size:
            raise LayerError(f"annotations hold codes {bad.tolist()}: use "
                             + ", ".join(f"{int(c)} {name}" for c, name in CLASS_NAMES.items() if c != Class.OUTSIDE))
    labels = labels.astype(np.uint8, copy=False)
    if np.count_nonzero(np.bincount(labels.ravel(), minlength=len(Class))[1:]) < 2:  # (a bincount: fast on 4 Mpx)
        raise LayerError("annotate at least two classes before training")
    return labels


def feature_key(spec, sem_image, pixel_size_nm: float, maps: dict, matrices: dict) -> str:
    """SHA-256 naming a feature stack: the feature spec, the SEM image and pixel size, the spectral maps and the
    registrations. Equal keys ⇔ equal features (a cache is valid only for its key)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    image = np.ascontiguousarray(sem_image)
    h.update(f"{image.dtype.str}{image.shape}{float(pixel_size_nm)!r}".encode())
    h.update(image.tobytes())
    for name, (values, edge) in maps.items():
        v = np.ascontiguousarray(values, dtype=np.float64)
        h.update(f"{name}|{edge}|{v.shape}".encode())
        h.update(v.tobytes())
    for edge in sorted(matrices):
        h.update(edge.encode())
        h.update(np.ascontiguousarray(matrices[edge], dtype=np.float64).tobytes())
    return h.hexdigest()


class FeatureCache:
    """The classifier's feature tiles of one lamella, computed once (float32) and reused by every re-prediction.

    Tiles are those of :func:`ceimap.segment.features.iter_feature_tiles` with the same ``tile_px`` (each computed with
    its halo), so a cached value equals the one a fresh computation — or :meth:`PixelClassifier.predict` with
    that ``tile_px`` — gives. Tiles are computed on demand (the view first) and the least recently used are
    dropped above ``max_mb`` (large images: the cache holds the region being worked on).

    Parameters
    ----------
    sem : SemImage
    spec : FeatureSpec
    maps : dict
        :func:`ceimap.segment.features.spectral_maps` of the lamella for ``spec``.
    matrices : dict of str to ndarray (3, 3)
        STXM pixel → SEM pixel registration of each edge of ``spec``.
    tile_px : int
    max_mb : float
    """

    def __init__(self, sem, spec, maps: dict, matrices: dict, *, tile_px: int = 1024, max_mb: float = 3072.0):
        from collections import OrderedDict

        self.sem_image = np.asarray(sem.image)
        self.pixel_size_nm = float(sem.pixel_size_nm)
        self.spec, self.maps, self.matrices = spec, maps, matrices
        self.tile_px, self.max_bytes = int(tile_px), float(max_mb) * 2**20
        self.shape = tuple(np.shape(self.sem_image))
        self.n_features = len(spec.names)
        self.key = feature_key(spec, self.sem_image, self.pixel_size_nm, maps, matrices)
        self.tiles: "OrderedDict[tuple[int, int], np.ndarray]" = OrderedDict()
        self.pinned: set = set()  # tiles never dropped (the view and the annotated ones, set by LivePredictor)
        self.seconds = 0.0  # time spent computing features

    @classmethod
    def for_lamella(cls, maps: dict, spec=None, **kwargs) -> "FeatureCache":
        """The cache of the lamella described by :func:`lamella_maps` (default spec: the edges present)."""
        from ceimap.segment.classifier import default_spec
        from ceimap.segment.features import spectral_maps

        spec = spec or default_spec(maps["od_stacks"])
        spectral = spectral_maps(maps["od_stacks"], spec, egt2g=maps["egt2g"], s_edge=maps["s_edge"])
        matrices = {e: np.asarray(maps["registrations"][e].matrix, float) for e in spec.edges}
        return cls(maps["sem"], spec, spectral, matrices, **kwargs)

    @property
    def nbytes(self) -> int:
        return int(sum(t.nbytes for t in self.tiles.values()))

    def tile_slices(self, tile_id) -> tuple[slice, slice]:
        ty, tx = tile_id
        t = self.tile_px
        return (slice(ty * t, min(self.shape[0], (ty + 1) * t)), slice(tx * t, min(self.shape[1], (tx + 1) * t)))

    def tiles_of(self, region=None, mask=None) -> list[tuple[int, int]]:
        """Tile ids touching a region (slices; None = everything) or holding a True pixel of a mask."""
        t = self.tile_px
        if mask is not None:
            yy, xx = np.nonzero(mask)
            n_x = self.shape[1] // t + 1
            return [(int(i // n_x), int(i % n_x)) for i in np.unique((yy // t) * n_x + xx // t)]
        ys, xs = region if region is not None else (slice(0, self.shape[0]), slice(0, self.shape[1]))
        return [(ty, tx) for ty in range(ys.start // t, (ys.stop - 1) // t + 1)
                for tx in range(xs.start // t, (xs.stop - 1) // t + 1)]

    def fill(self, tile_ids):
        """Compute the missing tiles among ``tile_ids`` (a generator: yields a progress message per tile)."""
        import time

        from ceimap.segment.features import iter_feature_tiles

        missing = [tid for tid in dict.fromkeys(tile_ids) if tid not in self.tiles]
        if not missing:
            return
        mask = np.zeros(self.shape, bool)
        for tid in missing:
            ys, xs = self.tile_slices(tid)
            mask[ys.start, xs.start] = True
        t0 = time.perf_counter()
        for i, ((ys, xs), tile) in enumerate(iter_feature_tiles(
                self.sem_image, self.pixel_size_nm, self.spec, self.maps, self.matrices, tile_px=self.tile_px,
                mask=mask)):
            self._store((ys.start // self.tile_px, xs.start // self.tile_px), tile, keep=missing)
            self.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            yield f"features (computed once): tile {i + 1}/{len(missing)}"

    def ensure(self, tile_ids) -> None:
        """:meth:`fill` run to the end."""
        for _ in self.fill(tile_ids):
            pass

    def _store(self, tid, tile, keep=()):
        self.tiles[tid] = np.asarray(tile, np.float32)
        self.tiles.move_to_end(tid)
        while self.nbytes > self.max_bytes and len(self.tiles) > 1:
            old = next((k for k in self.tiles if k not in keep and k not in self.pinned and k != tid), None)
            if old is None:
                break
            del self.tiles[old]

    def _tile(self, tid) -> np.ndarray:
        if tid not in self.tiles:
            self.ensure([tid])
        self.tiles.move_to_end(tid)
        return self.tiles[tid]

    def grid(self, rows, cols) -> np.ndarray:
        """Features at the pixels ``rows × cols`` (sorted index arrays), shape (len(rows), len(cols), n)."""
        rows, cols = np.asarray(rows, int), np.asarray(cols, int)
        out = np.empty((rows.size, cols.size, self.n_features), np.float32)
        t = self.tile_px
        for ty in np.unique(rows // t):
            ri = np.nonzero(rows // t == ty)[0]
            for tx in np.unique(cols // t):
                ci = np.nonzero(cols // t == tx)[0]
                tile = self._tile((int(ty), int(tx)))
                out[np.ix_(ri, ci)] = tile[np.ix_(rows[ri] - ty * t, cols[ci] - tx * t)]
        return out

    def at(self, mask) -> np.ndarray:
        """Features of the pixels where ``mask`` is True, row-major order (as :func:`ceimap.segment.features.features_at`)."""
        yy, xx = np.nonzero(np.asarray(mask, bool))
        out = np.empty((yy.size, self.n_features), np.float32)
        t = self.tile_px
        tid = (yy // t) * (self.shape[1] // t + 1) + xx // t
        for k in np.unique(tid):
            sel = tid == k
            ty, tx = int(yy[sel][0] // t), int(xx[sel][0] // t)
            out[sel] = self._tile((ty, tx))[yy[sel] - ty * t, xx[sel] - tx * t]
        return out


def samples_from_cache(cache: FeatureCache, maps: dict, annotations, name: str = "napari"):
    """:class:`ceimap.segment.classifier.TrainingSamples` of the annotated pixels, their features read from the cache
    (equal to :func:`ceimap.segment.classifier.lamella_samples` with the cache's ``tile_px``)."""
    from ceimap.segment.classifier import TrainingSamples

    labels = _check_annotations(annotations, cache.shape)
    mask = labels > 0
    stacks = maps["od_stacks"]
    edges = cache.spec.edges
    return TrainingSamples(
        name=name, features=cache.at(mask), labels=labels[mask], sem_pixel_nm=cache.pixel_size_nm,
        stxm_pixel_nm={e: float(stacks[e].pixel_size_nm) for e in edges},
        energy_range_ev={e: (float(np.min(stacks[e].energies_ev)), float(np.max(stacks[e].energies_ev)))
                         for e in edges})


def preview_classifier(samples, spec, *, estimator: str = "random_forest", seed: int = 0,
                       max_samples: int = PREVIEW_SAMPLES):
    """A small classifier for the first preview: :data:`PREVIEW_PARAMS` fitted on at most ``max_samples``
    annotated pixels drawn evenly from the classes (all of a class with fewer)."""
    from dataclasses import replace

    from ceimap.segment.classifier import PixelClassifier

    labels = samples.labels
    present = np.unique(labels)
    quota = max(1, max_samples // present.size)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([
        (idx if idx.size <= quota else rng.choice(idx, quota, replace=False))
        for idx in (np.nonzero(labels == c)[0] for c in present)]))
    small = replace(samples, features=samples.features[keep], labels=labels[keep])
    return PixelClassifier(spec, [small], estimator=estimator, params=PREVIEW_PARAMS.get(estimator), seed=seed)


def preview_step(region_shape, data_px_per_screen_px: float = 1.0, max_points: int = PREVIEW_POINTS) -> int:
    """Lattice step of the first preview: one point per screen pixel (no finer than the screen shows), coarser
    when the view holds more than ``max_points`` screen pixels."""
    n = float(np.prod(region_shape))
    k_screen = max(1, int(np.floor(data_px_per_screen_px)))
    k_budget = max(1, int(np.ceil(np.sqrt(n / max_points))))
    return max(k_screen, k_budget)


def _lattice(region, step: int):
    """Pixel rows and columns at the centres of the ``step``-blocks tiling ``region`` (clipped to it)."""
    (ys, xs), k = region, int(step)
    rows = np.minimum(np.arange(ys.start, ys.stop, k) + k // 2, ys.stop - 1)
    cols = np.minimum(np.arange(xs.start, xs.stop, k) + k // 2, xs.stop - 1)
    return rows, cols


def _entropy(p: np.ndarray, trained) -> np.ndarray:
    """Normalised entropy over the trained classes of probability rows (n, 4) — as PixelClassifier.predict."""
    from ceimap.segment.classifier import entropy_map

    return entropy_map(p[..., [int(c) - 1 for c in trained]], axis=-1)


@dataclass(frozen=True)
class Stage:
    """One displayed step of a coarse-to-fine prediction: full-image ``classes`` (uint8) and ``entropy``
    (float32, NaN where never predicted), the ``region`` it refreshed and the lattice ``step`` (1 = exact)."""

    name: str
    classes: np.ndarray
    entropy: np.ndarray
    region: tuple
    step: int

    def layers(self, pixel_size_nm: float) -> list[tuple]:
        """The ``prediction`` and ``uncertainty`` LayerData tuples of this stage."""
        from ._layers import classes_layer

        p = pixel_size_nm
        unc = np.where(self.classes != Class.OUTSIDE, self.entropy, np.nan).astype(np.float32)
        return [classes_layer(self.classes, p, name="prediction"),
                (unc, {"name": "uncertainty", "scale": (p, p), "units": ("nm", "nm"), "colormap": "inferno",
                       "contrast_limits": (0.0, 1.0), "opacity": 0.6, "visible": False,
                       "metadata": {"kind": "uncertainty"}}, "image")]


class Stale(Exception):
    """Raised inside a prediction when a newer edit made it useless."""


def _predict_rows(classifier, features, stale, what: str = "classifying"):
    """``predict_proba_features`` in chunks, checking ``stale()`` between them (raises :class:`Stale`).

    A generator: yields a progress message after each chunk and returns the probabilities (n, 4).
    """
    out = np.empty((len(features), 4), np.float32)
    for i in range(0, len(features), PREDICT_CHUNK):
        if stale():
            raise Stale
        out[i:i + PREDICT_CHUNK] = classifier.predict_proba_features(features[i:i + PREDICT_CHUNK])
        yield f"{what}: {min(len(features), i + PREDICT_CHUNK)}/{len(features)} pixels"
    return out


class LivePredictor:
    """Live re-prediction on one lamella: refit on the annotated pixels, then predict coarse to fine.

    Holds the :class:`FeatureCache` (features are never recomputed after an edit), the last classifier and
    prediction, and a generation counter: :meth:`run` (or :meth:`edit`) starts a new generation, and a run of
    an older generation stops at its next chunk (its remaining stages would show a stale prediction).

    Parameters
    ----------
    maps : dict
        :func:`lamella_maps` of the lamella.
    cache : FeatureCache, optional
        Default :meth:`FeatureCache.for_lamella` (default spec, 1024-pixel tiles).
    """

    def __init__(self, maps: dict, cache: FeatureCache | None = None, **cache_kwargs):
        self.maps = maps
        self.cache = cache or FeatureCache.for_lamella(maps, **cache_kwargs)
        self.generation = 0
        self.classifier = None
        self.classes = self.entropy = None

    def edit(self) -> int:
        """Mark every running prediction stale (a new edit arrived); returns the new generation."""
        self.generation += 1
        return self.generation

    def run(self, annotations=None, *, view=None, step: int | None = None, data_px_per_screen_px: float = 1.0,
            estimator: str = "random_forest", seed: int = 0, classifier=None, name: str = "napari"):
        """Refit and predict, as a generator of progress strings and :class:`Stage` objects (in display order).

        Parameters
        ----------
        annotations : ndarray, SEM shape, optional
            Class codes 1–4 where annotated. Without it, ``classifier`` (or the last one) predicts unchanged.
        view : tuple of slice, optional
            The SEM region on screen (default: the whole image).
        step : int, optional
            Lattice step of the preview (default :func:`preview_step` of the view and ``data_px_per_screen_px``).
        classifier : PixelClassifier, optional
            Use this model (e.g. a loaded file) instead of refitting.

        Yields
        ------
        str or Stage
            ``"preview"`` (a ``step`` lattice of the view, from a small model fitted on a class-balanced
            subsample of the annotations, shown upsampled; elsewhere the previous prediction), ``"view"`` (the
            cache tiles under the view, final model; skipped when they are the whole image) and ``"all"`` (the
            whole image: classes and entropy equal :meth:`PixelClassifier.predict` with the cache's
            ``tile_px``). A run stops silently (between chunks) when a newer generation starts.
        """
        from ceimap.segment.classifier import PixelClassifier

        token = self.edit()

        def stale():
            return self.generation != token

        cache = self.cache
        ny, nx = cache.shape
        full = (slice(0, ny), slice(0, nx))
        view = view or full
        if step is None:
            step = preview_step((view[0].stop - view[0].start, view[1].stop - view[1].start), data_px_per_screen_px)
        try:
            samples = None
            if classifier is None and annotations is not None:
                labels = _check_annotations(annotations, cache.shape)
                need = cache.tiles_of(mask=labels > 0) + cache.tiles_of(view)
                cache.pinned = set(need)
                for msg in cache.fill(need):
                    yield msg
                    if stale():
                        return
                samples = samples_from_cache(cache, self.maps, labels, name)
                yield f"preview model on {min(samples.labels.size, PREVIEW_SAMPLES)} annotated pixels"
                preview = preview_classifier(samples, cache.spec, estimator=estimator, seed=seed)
            else:
                classifier = classifier or self.classifier
                if classifier is None:
                    raise LayerError("train a classifier or load a model first")
                preview = classifier
                cache.pinned = set(cache.tiles_of(view))
                for msg in cache.fill(cache.tiles_of(view)):
                    yield msg
                    if stale():
                        return
            classes = np.zeros(cache.shape, np.uint8) if self.classes is None else self.classes.copy()
            entropy = np.full(cache.shape, np.nan, np.float32) if self.entropy is None else self.entropy.copy()
            # 1. preview: the lattice of the view, upsampled
            rows, cols = _lattice(view, step)
            feats = cache.grid(rows, cols).reshape(rows.size * cols.size, -1)
            p = yield from _predict_rows(preview, feats, stale, f"preview (lattice step {step})")
            h, w = view[0].stop - view[0].start, view[1].stop - view[1].start

            def upsampled(values):  # each lattice point fills its step × step block
                grid = values.reshape(rows.size, cols.size)
                return np.repeat(np.repeat(grid, step, axis=0), step, axis=1)[:h, :w]
            classes[view] = upsampled((np.argmax(p, axis=1) + 1).astype(np.uint8))
            entropy[view] = upsampled(_entropy(p, preview.classes))
            yield Stage("preview", classes.copy(), entropy.copy(), view, step)
            # 2. the final model, the view at full resolution
            if samples is not None:
                yield f"training on {samples.labels.size} annotated pixels"
                if stale():
                    return
                classifier = PixelClassifier(cache.spec, [samples], estimator=estimator, seed=seed)
                if stale():
                    return
            self.classifier = classifier
            trained = classifier.classes
            view_tiles = cache.tiles_of(view)
            rest_tiles = [tid for tid in cache.tiles_of(full) if tid not in view_tiles]
            for tiles, name in ((view_tiles, "view"), (rest_tiles, "all")):
                if not tiles:
                    continue
                for tid in tiles:
                    for msg in cache.fill([tid]):
                        yield msg
                        if stale():
                            return
                    sl = cache.tile_slices(tid)
                    p = yield from _predict_tile(classifier, cache._tile(tid), (sl[0].start, sl[1].start), stale,
                                                 f"the {name} at full resolution")
                    classes[sl] = (np.argmax(p, axis=-1) + 1).astype(np.uint8)
                    entropy[sl] = _entropy(p, trained)
                region = _bounding_region([cache.tile_slices(t) for t in tiles]) if tiles is view_tiles else full
                yield Stage("all" if region == full else name, classes.copy(), entropy.copy(), region, 1)
            self.classes, self.entropy = classes, entropy
        except Stale:
            return


def _bounding_region(regions):
    return (slice(min(r[0].start for r in regions), max(r[0].stop for r in regions)),
            slice(min(r[1].start for r in regions), max(r[1].stop for r in regions)))


def _predict_tile(classifier, tile, origin, stale, what: str):
    """Class probabilities (h, w, 4) of a cached feature tile, exactly as :meth:`PixelClassifier.predict` computes
    them for that tile (its ``predict_proba_tile``); a generator that raises :class:`Stale` before it starts."""
    h, w = tile.shape[:2]
    if stale():
        raise Stale
    p = classifier.predict_proba_tile(tile, origin=origin)
    yield f"{what}: {h * w} pixels"
    return p
