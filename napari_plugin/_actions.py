"""What the plugin's widgets do, as plain functions over layers: no Qt, no viewer.

A *layer* here is anything with ``data``, ``metadata`` and ``name`` attributes — a napari layer, or a
``types.SimpleNamespace`` in tests. Every action reads the ceimap objects back from the layers it is given
(:func:`stack_from_layer`, :func:`sem_from_layer`, :func:`registration_from_layer`), calls the library
(``segment`` / ``stats``) and returns napari LayerData tuples ``(data, kwargs, layer_type)``. A returned tuple
whose name equals an existing layer's name updates that layer when napari adds it.

World coordinates are nanometres on the SEM frame (see :mod:`napari_plugin._layers`). Shapes and Points drawn
by the user are in world coordinates; :func:`world_to_stxm_pixels` and :func:`world_to_sem_pixels` bring them
onto a stack's or the SEM's pixel grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._layers import (classes_layer, egt2g_layer, particles_layer, stack_layer, stxm_world_matrix,
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
    """The :class:`segment.stack.Stack` an STXM image layer shows.

    Raises
    ------
    LayerError
        When the layer holds no STXM stack (no energies in its metadata, not 3-D).
    """
    from segment.stack import Stack

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
    """The :class:`segment.lamella.SemImage` an SEM image layer shows."""
    from segment.lamella import SemImage

    if not is_sem_layer(layer):
        raise LayerError(f"layer {getattr(layer, 'name', '?')!r} is not an SEM image opened by ceimap "
                         "(its pixel size is unknown)")
    meta = _meta(layer)
    return SemImage(np.asarray(layer.data, dtype=np.float32), float(meta["pixel_size_nm"]),
                    str(meta.get("pixel_size_source", "user")), str(meta.get("source", "")))


def registration_from_layer(layer):
    """The STXM → SEM :class:`segment.register.Registration` of a stack layer placed on the SEM frame.

    Raises
    ------
    LayerError
        When the layer is not registered onto an SEM frame.
    """
    from segment.register import Registration

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
        the empty region found automatically (:func:`segment.stack.find_i0`).
    align : bool
        Correct the drift between energy frames (:func:`segment.align.align_frames`).

    Returns
    -------
    LayerData tuple
        The aligned OD stack, named ``"<edge> OD aligned"``, placed like ``layer``; its metadata holds the
        drift shifts (``drift_px``) and the OD report.
    """
    from segment.align import align_frames
    from segment.stack import optical_density

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
    from stats.run import compact_record

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
        order. Given both → :func:`segment.register.matrix_from_landmarks`; else automatic
        (:func:`segment.register.register_stxm_to_sem` on :func:`segment.register.contrast_image`).
    kind : {"similarity", "affine"}
        Landmark transform.

    Returns
    -------
    LayerData tuple
        The same layer (same name: napari updates it in place) with its new affine and matrix.
    """
    from segment.register import (Registration, contrast_image, matrix_from_landmarks,
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
    from segment import decompose as dec

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
    from segment.pipeline import NI_EDGE, S_EDGE
    from segment.spectra import egt2g_map, s_edge_map

    sem = sem_from_layer(sem_layer)
    stacks, registrations = _stack_layers_by_edge(stack_layers)
    return {"sem": sem, "od_stacks": stacks, "registrations": registrations,
            "egt2g": egt2g_map(stacks[NI_EDGE]) if NI_EDGE in stacks else None,
            "s_edge": s_edge_map(stacks[S_EDGE]) if S_EDGE in stacks else None}


def train(maps: dict, annotations, *, estimator: str = "random_forest", seed: int = 0, name: str = "napari"):
    """Train a pixel classifier on the annotation strokes of one lamella (:mod:`segment.classifier`).

    Parameters
    ----------
    maps : dict
        :func:`lamella_maps` of the lamella.
    annotations : ndarray, SEM shape
        Class codes 1–4 where annotated, 0 elsewhere (a Labels layer's data).
    """
    from segment.classifier import PixelClassifier, default_spec, lamella_samples

    labels = np.asarray(annotations)
    if labels.shape != np.shape(maps["sem"].image):
        raise LayerError(f"annotations {labels.shape} do not match the SEM image {np.shape(maps['sem'].image)}")
    bad = np.setdiff1d(np.unique(labels), [0, 1, 2, 3, 4])
    if bad.size:
        raise LayerError(f"annotations hold codes {bad.tolist()}: use 1 NMC, 2 interphase, 3 electrolyte, 4 void")
    present = np.unique(labels[labels > 0])
    if present.size < 2:
        raise LayerError("annotate at least two classes before training")
    spec = default_spec(maps["od_stacks"])
    samples = lamella_samples(name, maps["sem"], maps["od_stacks"], maps["registrations"],
                              labels.astype(np.uint8), spec, egt2g=maps["egt2g"], s_edge=maps["s_edge"])
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
    unc = np.where(classes > 0, entropy, np.nan).astype(np.float32)
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
    """A :class:`segment.pipeline.PipelineResult` from the viewer's layers (what :func:`measure` and
    :func:`export_run` analyse).

    Parameters
    ----------
    sem_layer
        SEM image layer.
    stack_layers : list
        Aligned OD stack layers registered onto the SEM (one per edge; Ni-L required).
    classes : ndarray, optional
        Class map on the SEM grid (e.g. the user's edited Labels). When None the unsupervised segmentation
        runs (:func:`segment.assign.segment_lamella`).
    particles : ndarray, optional
        Particle ids; labelled from ``classes`` when None (:func:`segment.particles.label_particles`).
    """
    from segment.assign import segment_lamella
    from segment.lamella import Lamella
    from segment.particles import label_particles
    from segment.pipeline import NI_EDGE, PipelineResult

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
    from stats.run import egt2g_on_sem

    result = pipeline_result(sem_layer, stack_layers)
    p = result.lamella.sem.pixel_size_nm
    return [egt2g_layer(egt2g_on_sem(result), p), classes_layer(result.classes, p),
            particles_layer(result.particles, p)]


def measure(sem_layer, stack_layers, classes, particles=None):
    """Statistics of the current class map (:func:`stats.run.analyse_result`).

    Returns
    -------
    result : PipelineResult
    analysis : stats.analysis.Analysis
        ``analysis.summary`` (CONTRACT keys), ``analysis.particles`` (the per-particle table) …
    """
    from stats.run import analyse_result

    result = pipeline_result(sem_layer, stack_layers, classes=classes, particles=particles)
    return result, analyse_result(result)


def export_run(out_dir, sem_layer, stack_layers, classes, particles=None, *, overwrite: bool = False) -> Path:
    """Write a ``ceimap run`` results folder (CONTRACT outputs + report) from the viewer's layers, atomically.

    Returns
    -------
    Path
        The ``report.html`` written.
    """
    from stats.outputs import AtomicFolder, check_output_folder, provenance
    from stats.run import write_results

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
