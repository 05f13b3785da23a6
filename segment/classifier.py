"""Supervised pixel classifier: train on a few annotation strokes, apply to other lamellae.

Training samples are the feature vectors (:mod:`ceimap.segment.features`) of the annotated SEM pixels
(:class:`ceimap.Class` codes: ``NMC``, ``INTERPHASE``, ``ELECTROLYTE``, ``VOID``; ``OUTSIDE`` = not annotated) of
one or many lamellae. The classifier is a class-balanced random forest (default) or histogram gradient boosting
(``estimator="hist_gradient_boosting"``); the forest is the default because it scored at least as well on the
example lamellae and fits far faster, which matters: the model is refitted on every load. The trees are small
(strokes lie in the bulk of their class), so prediction cost is per tree: 12 trees are the default, as more did
not score higher (the figures of both choices are in ``benchmarks/README.md``). It is applied in two stages, see
:meth:`PixelClassifier._fit`; the forest is evaluated block by block (:func:`_predict_proba`, the numbers of
scikit-learn's ``predict_proba``). It gives per-class probabilities and an uncertainty map (the normalised
entropy of the probabilities: 0 certain, 1 all classes equally likely), which shows where to annotate next.
:func:`leave_one_lamella_out` reports how well a model trained on the other lamellae classifies each lamella's
annotations. :func:`refine_boundaries` re-decides the map's NMC and void boundaries on the SEM and
:func:`place_interphase` re-draws its interphase where the STXM chemistry measured it (what ``ceimap run --model``
applies, :func:`ceimap.segment.pipeline.classify_with_model`).

**Model files are pure data.** Loading a model never unpickles, imports or executes anything from the
file and trusts no object graph: the file is a NumPy ``.npz`` archive read with ``allow_pickle=False``
holding only numeric arrays — the annotated pixels' feature vectors, their labels and lamella index —
and one UTF-8 JSON header (format and feature-spec versions, the feature spec, the estimator name and its
hyper-parameters with the seed, class codes, the SEM and STXM pixel sizes, the edges and energy ranges
the features were computed from, package versions, the validation figures) plus a SHA-256 of all of it.
The forest is refitted from that data on load, deterministically (fixed seed; identical predictions to
the model that was saved). A model that fails any check — not an ``.npz``, an object array, missing or
extra entries, a wrong format or feature-spec version, a hash that does not match (corruption or a hand
edit) — is refused with :class:`~ceimap.segment.errors.CeimapInputError` naming the file. The hash guards
integrity, not authorship: safety comes from the file holding nothing but numbers and JSON.

One module past 800 lines, on purpose: the model file format (what is stored, the checks on load) and the
classifier that is refitted from it on every load must change together, and the supervised map's two
post-steps (:func:`refine_boundaries`, :func:`place_interphase`) are thin calls into the unsupervised path's
rooms (:mod:`ceimap.segment.refine`, :mod:`ceimap.segment.chemistry`, :mod:`ceimap.segment.interphase`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import Class
from .errors import CeimapInputError
from .features import (FEATURE_SPEC_VERSION, FeatureSpec, features_at, normalise_sem, sem_pyramid,
                       spectral_maps, spectral_sources, tile_sampler, tile_slices)

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "TrainingSamples",
    "PixelClassifier",
    "lamella_samples",
    "leave_one_lamella_out",
    "macro_f1",
    "entropy_map",
    "refine_boundaries",
    "place_interphase",
]

MODEL_FORMAT = "ceimap-pixel-classifier"
MODEL_FORMAT_VERSION = 1
ANNOTATED_CLASSES = tuple(c for c in Class if c is not Class.OUTSIDE)
"""The classes a model is trained on and predicts, in code order (in an annotation image ``Class.OUTSIDE`` means
"not annotated"); column ``j`` of the probabilities is class ``ANNOTATED_CLASSES[j]``."""
ESTIMATORS = ("random_forest", "hist_gradient_boosting")
DEFAULT_PARAMS = {
    "random_forest": {"n_estimators": 12, "min_samples_leaf": 1, "max_features": "sqrt",
                      "interphase_max_depth": 3},
    "hist_gradient_boosting": {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
                               "l2_regularization": 0.0, "interphase_max_depth": 3},
}
_PARAM_TYPES = {"n_estimators": int, "min_samples_leaf": int, "max_features": (str, float, int),
                "max_depth": (int, type(None)), "max_iter": int, "learning_rate": float,
                "max_leaf_nodes": int, "l2_regularization": float, "interphase_max_depth": (int, type(None))}
_ARRAYS = {"features": np.float32, "labels": np.uint8, "lamella": np.uint16}
MAX_MODEL_BYTES = 4 * 1024 ** 3
N_JOBS = 2
"""Threads of the forest (fit and predict); the trees are small, so more threads mostly add overhead."""
LATTICE_PX = 2
"""Default stride of the coarse prediction lattice of :meth:`PixelClassifier.predict` (1 = every pixel)."""
SEM_PIXEL_RATIO_MAX = 2.0
STXM_PIXEL_RATIO_MAX = 3.0
MIN_ENERGY_OVERLAP = 0.8


@dataclass(frozen=True)
class TrainingSamples:
    """Annotated pixels of one lamella, ready for training.

    Attributes
    ----------
    name : str
    features : ndarray of float32, shape (n, n_features)
    labels : ndarray of uint8, shape (n,)
        Class codes 1–4.
    sem_pixel_nm : float
    stxm_pixel_nm : dict of str to float
        Per edge.
    energy_range_ev : dict of str to (float, float)
        Per edge, the energies measured.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    sem_pixel_nm: float
    stxm_pixel_nm: dict = field(default_factory=dict)
    energy_range_ev: dict = field(default_factory=dict)


def lamella_samples(name: str, sem, od_stacks: dict, registrations: dict, annotations: np.ndarray,
                    spec: FeatureSpec | None = None, *, egt2g=None, s_edge=None,
                    tile_px: int = 1024) -> TrainingSamples:
    """Feature vectors of the annotated pixels of one lamella.

    Parameters
    ----------
    name : str
        Lamella name (for the validation table).
    sem : SemImage
    od_stacks : dict of str to Stack
        Aligned OD stacks (every edge of ``spec.edges``).
    registrations : dict of str to Registration
    annotations : ndarray of uint8, SEM shape
        0 = not annotated, 1–4 class codes.
    spec : FeatureSpec, optional
        Default :class:`FeatureSpec` restricted to the edges present.
    egt2g, s_edge : optional
        Precomputed spectral maps (see :func:`ceimap.segment.features.spectral_maps`).

    Returns
    -------
    TrainingSamples
    """
    if spec is None:
        spec = default_spec(od_stacks)
    annotations = np.asarray(annotations)
    mask = annotations > 0
    maps = spectral_maps(od_stacks, spec, egt2g=egt2g, s_edge=s_edge)
    matrices = {e: np.asarray(registrations[e].matrix, float) for e in spec.edges}
    feats = features_at(mask, sem.image, sem.pixel_size_nm, spec, maps, matrices, tile_px=tile_px)
    return TrainingSamples(
        name=name, features=feats, labels=annotations[mask].astype(np.uint8),
        sem_pixel_nm=float(sem.pixel_size_nm),
        stxm_pixel_nm={e: float(od_stacks[e].pixel_size_nm) for e in spec.edges},
        energy_range_ev={e: (float(np.min(od_stacks[e].energies_ev)), float(np.max(od_stacks[e].energies_ev)))
                         for e in spec.edges},
    )


def default_spec(od_stacks: dict) -> FeatureSpec:
    """The default feature spec with the spectral features of the edges present (Ni-L, S-L)."""
    edges = tuple(e for e in FeatureSpec().edges if e in od_stacks)
    return FeatureSpec(edges=edges)


def entropy_map(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised Shannon entropy of class probabilities (0 certain … 1 uniform), float32."""
    p = np.clip(np.asarray(probabilities, dtype=np.float32), 1e-12, 1.0)
    n = p.shape[axis]
    return (-(p * np.log(p)).sum(axis=axis) / np.float32(np.log(n))).astype(np.float32)


def macro_f1(predicted: np.ndarray, truth: np.ndarray, classes=ANNOTATED_CLASSES) -> tuple[float, dict]:
    """Macro F1 over the classes present in ``truth`` (pixels where truth is one of ``classes``).

    Returns
    -------
    macro : float
    per_class : dict of int to float
    """
    predicted, truth = np.asarray(predicted).ravel(), np.asarray(truth).ravel()
    keep = np.isin(truth, classes)
    predicted, truth = predicted[keep], truth[keep]
    per = {}
    for c in classes:
        t, p = truth == c, predicted == c
        if not t.any():
            continue
        tp = np.sum(t & p)
        per[int(c)] = float(2 * tp / (t.sum() + p.sum())) if (t.sum() + p.sum()) else 0.0
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _make_estimator(estimator: str, params: dict, seed: int, *, stage: str = "texture"):
    params = dict(params)
    depth = params.pop("interphase_max_depth", None)
    if stage == "interphase" and depth is not None:
        params["max_depth"] = depth
    if estimator == "random_forest":
        from sklearn.ensemble import RandomForestClassifier
        return RandomForestClassifier(class_weight="balanced", random_state=seed, n_jobs=N_JOBS, **params)
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(class_weight="balanced", random_state=seed, early_stopping=False,
                                          **params)


class PixelClassifier:
    """A trained pixel classifier and the data it was trained from.

    Its state is the training data (so that it can be saved as pure data and refitted identically) and
    the fitted estimator.

    Parameters
    ----------
    spec : FeatureSpec
    samples : list of TrainingSamples
        One per lamella (all computed with ``spec``).
    estimator : {"random_forest", "hist_gradient_boosting"}
    params : dict, optional
        Hyper-parameters (defaults in ``DEFAULT_PARAMS``).
    seed : int
    validation : dict, optional
        Figures to keep with the model (e.g. :func:`leave_one_lamella_out`).
    """

    def __init__(self, spec: FeatureSpec, samples: list, *, estimator: str = "random_forest",
                 params: dict | None = None, seed: int = 0, validation: dict | None = None):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if not samples:
            raise ValueError("no training samples")
        self.spec = spec
        self.estimator = estimator
        self.params = {**DEFAULT_PARAMS[estimator], **(params or {})}
        self.seed = int(seed)
        self.validation = dict(validation or {})
        self.lamellae = [{"name": s.name, "sem_pixel_nm": s.sem_pixel_nm, "stxm_pixel_nm": dict(s.stxm_pixel_nm),
                          "energy_range_ev": {e: list(r) for e, r in s.energy_range_ev.items()},
                          "n_annotated": {int(c): int(np.sum(s.labels == c)) for c in ANNOTATED_CLASSES}}
                         for s in samples]
        self.features = np.ascontiguousarray(np.concatenate([s.features for s in samples]), dtype=np.float32)
        self.labels = np.concatenate([s.labels for s in samples]).astype(np.uint8)
        self.lamella = np.concatenate([np.full(len(s.labels), i, np.uint16) for i, s in enumerate(samples)])
        if self.features.shape != (self.labels.size, len(spec.names)):
            raise ValueError(f"features have shape {self.features.shape}, expected "
                             f"({self.labels.size}, {len(spec.names)}) for the feature spec")
        self.classes = np.unique(self.labels)
        if self.classes.size < 2:
            raise ValueError("annotations name fewer than two classes: nothing to learn")
        self.source = None
        self.sha256 = None          # content hash (stored in the file, checked on load)
        self.file_sha256 = None     # hash of the file's bytes, for provenance
        self._fit()

    def _fit(self) -> None:
        """Fit the two stages (deterministic for a given seed).

        Stage 1 (all features) tells NMC, electrolyte-like matter (electrolyte and interphase) and void
        apart; stage 2 (``spec.interphase_features`` only) splits electrolyte-like pixels into interphase and
        electrolyte. At STXM resolution an NMC/electrolyte boundary pixel holds Ni and S and sits next to
        NMC in the SEM, like an interphase pixel, whereas annotations of electrolyte lie in the bulk: a single
        classifier learns "Ni near NMC = interphase" and paints every boundary of an uncycled lamella. The
        chemical shift of the interphase's S edge is what partial volume cannot produce. Stage 2 trees
        are shallow (``interphase_max_depth``, default 3): a decision on a shift and its validity needs a
        few thresholds, and deep trees fit the noise of the shift of one lamella's strokes (trained on the
        4.25 V and charged strokes together, unlimited trees called 17 % of every lamella interphase,
        depth 3 trees 6–9 % where the truth has 6–7 %, 0.3 % on the charged one).
        """
        texture = np.where(self.labels == Class.INTERPHASE, int(Class.ELECTROLYTE), self.labels)
        self.texture_model = _make_estimator(self.estimator, self.params, self.seed)
        if np.unique(texture).size >= 2:
            self.texture_model.fit(self.features, texture)
        else:
            self.texture_model = _Constant(int(texture[0]))
        self.interphase_columns = _interphase_columns(self.spec)
        chem = (self.labels == Class.INTERPHASE) | (self.labels == Class.ELECTROLYTE)
        self.interphase_model = None
        if np.any(self.labels[chem] == Class.INTERPHASE) and np.any(self.labels[chem] == Class.ELECTROLYTE):
            self.interphase_model = _make_estimator(self.estimator, self.params, self.seed,
                                                    stage="interphase").fit(
                self.features[chem][:, self.interphase_columns], self.labels[chem])
        elif np.any(self.labels == Class.INTERPHASE):
            self.interphase_model = _Constant(int(Class.INTERPHASE))
        for model in (self.texture_model, self.interphase_model):
            if hasattr(model, "n_jobs"):
                model.n_jobs = 1     # fitted with N_JOBS threads; prediction runs tiles in N_JOBS threads
        self._texture_tables = _leaf_tables(self.texture_model)
        self._interphase_tables = _leaf_tables(self.interphase_model)
        self.used_columns = _used_columns(self.texture_model, np.arange(len(self.spec.names)))
        if self.interphase_model is not None and self.used_columns is not None:
            more = _used_columns(self.interphase_model, self.interphase_columns)
            self.used_columns = None if more is None else np.union1d(self.used_columns, more)

    # -- prediction --------------------------------------------------------------------------------------
    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of classes 1–4 for feature rows, shape (n, 4), float32 (0 for untrained classes).

        Column ``j`` is class ``ANNOTATED_CLASSES[j]``.
        """
        features = np.asarray(features, np.float32)
        out = np.zeros((len(features), len(ANNOTATED_CLASSES)), np.float32)
        if not len(features):
            return out
        column = {int(c): j for j, c in enumerate(ANNOTATED_CLASSES)}
        p = _predict_proba(self.texture_model, self._texture_tables, features)
        for j, c in enumerate(self.texture_model.classes_):
            out[:, column[int(c)]] = p[:, j]
        if self.interphase_model is not None:
            # stage 2 only where stage 1 gives electrolyte-like matter a chance (elsewhere it multiplies 0)
            ely, inter = column[Class.ELECTROLYTE], column[Class.INTERPHASE]
            rows = np.flatnonzero(out[:, ely] > 0)
            classes = [int(c) for c in self.interphase_model.classes_]
            if rows.size and Class.INTERPHASE in classes:
                q = _predict_proba(self.interphase_model, self._interphase_tables,
                                   features[rows][:, self.interphase_columns])
                p_int = q[:, classes.index(Class.INTERPHASE)].astype(np.float32)
                out[rows, inter] = out[rows, ely] * p_int
                out[rows, ely] *= 1.0 - p_int
        return out

    def predict(self, sem, od_stacks: dict, registrations: dict, *, egt2g=None, s_edge=None,
                tile_px: int = 1024, mask: np.ndarray | None = None,
                lattice_px: int = LATTICE_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Classify every SEM pixel of a lamella, tile by tile.

        The forest runs on a lattice and near class changes (:meth:`predict_proba_tile`), and the features are
        computed for those pixels only, and only the columns its trees split on
        (:func:`ceimap.segment.features.tile_sampler`; the full-resolution filters of each tile once, the pyramid scales
        and spectral maps at the pixels): the probabilities equal those of :meth:`predict_proba_tile` on whole
        feature tiles (:func:`ceimap.segment.features.feature_tile`) exactly.

        Parameters
        ----------
        sem : SemImage
        od_stacks : dict of str to Stack
        registrations : dict of str to Registration
        egt2g, s_edge : optional
            Precomputed spectral maps.
        tile_px : int
        mask : ndarray of bool, SEM shape, optional
            Only the tiles holding a True pixel are classified (e.g. the region on screen, for a quick preview;
            the values there equal those of the whole-image prediction); elsewhere the class is 0 and the
            probabilities 0.
        lattice_px : int
            Stride of the coarse prediction lattice (:meth:`predict_proba_tile`); 1 classifies every pixel.

        Returns
        -------
        classes : ndarray of uint8, SEM shape
            The most probable class code (1–4).
        probabilities : ndarray of float32, shape (5, ny, nx)
            Index = class code (index 0, outside, is 0 here).
        entropy : ndarray of float32, SEM shape
            Normalised entropy of the probabilities of the trained classes.
        """
        maps = spectral_maps(od_stacks, self.spec, egt2g=egt2g, s_edge=s_edge)
        matrices = {e: np.asarray(registrations[e].matrix, float) for e in self.spec.edges}
        ny, nx = np.shape(sem.image)
        probs = np.zeros((5, ny, nx), np.float32)
        classes = np.zeros((ny, nx), np.uint8)
        entropy = np.zeros((ny, nx), np.float32)
        trained = [int(c) for c in self.classes]
        norm, _ = normalise_sem(sem.image, self.spec.sem_percentiles)
        pyramid = sem_pyramid(norm, sem.pixel_size_nm, self.spec, columns=self.used_columns,
                              n_threads=N_JOBS)
        sources = spectral_sources(maps)

        def one(slices):
            ys, xs = slices
            # features of the pixels the forest is evaluated at only (lattice, then near class changes)
            at = tile_sampler(norm, slices, sem.pixel_size_nm, self.spec, maps, matrices, pyramid=pyramid,
                              sources=sources, columns=self.used_columns)
            p = np.moveaxis(self._lattice_proba((ys.stop - ys.start, xs.stop - xs.start), at, lattice_px,
                                                (ys.start, xs.start)), -1, 0)
            probs[1:, ys, xs] = p
            classes[ys, xs] = np.argmax(p, axis=0) + 1
            entropy[ys, xs] = entropy_map(p[[c - 1 for c in trained]], axis=0)

        tiles = tile_slices((ny, nx), tile_px, mask)
        # tiles in parallel threads (filters and tree traversal release the GIL): memory ≈ n_jobs tiles
        with ThreadPoolExecutor(max_workers=max(1, min(N_JOBS, len(tiles)))) as pool:
            for _ in pool.map(one, tiles):
                pass
        return classes, probs, entropy       # outside the tiles of ``mask``: class 0, probabilities 0, entropy 0

    def predict_proba_tile(self, tile: np.ndarray, *, lattice_px: int = LATTICE_PX,
                           origin: tuple = (0, 0)) -> np.ndarray:
        """Probabilities of classes 1–4 of a feature tile (ny, nx, n_features) → (ny, nx, 4), float32.

        With ``lattice_px`` = k > 1 the forest is first evaluated on a lattice of every k-th pixel (plus the
        last row and column; lattice rows and columns are those of the whole image, ``origin`` being the
        tile's first pixel, so that tiles cut differently share their lattice). Inside a lattice cell whose four
        corners, and those of the eight cells around it, all have the same most probable class, the probabilities are interpolated bilinearly
        between the corners (a convex combination keeps that class the most probable); every other pixel
        is evaluated exactly. So the forest runs on about 1/k² of the pixels plus a band of 2–3 cells around
        class boundaries, and the class map differs from the pixel-by-pixel one only where a structure
        narrower than a lattice cell lies wholly inside an agreeing 3 × 3 block of cells (measured on the
        three example lamellae at k = 2: see ``benchmarks/README.md``).
        """
        h, w, _ = tile.shape
        return self._lattice_proba((h, w), lambda yy, xx: tile[yy, xx], lattice_px, origin)

    def _lattice_proba(self, shape, at, lattice_px: int, origin) -> np.ndarray:
        """:meth:`predict_proba_tile` with the features of a tile given as ``at(rows, columns)`` → (n, n_features)
        (:func:`ceimap.segment.features.tile_sampler`, or indexing of a computed feature tile)."""
        h, w = shape
        k = int(lattice_px)
        if k <= 1 or h < 2 * k or w < 2 * k:
            yy, xx = np.divmod(np.arange(h * w), w)
            return self._proba_at(at, yy, xx).reshape(h, w, 4)
        ly = np.unique(np.r_[0, np.arange(-int(origin[0]) % k, h, k), h - 1])
        lx = np.unique(np.r_[0, np.arange(-int(origin[1]) % k, w, k), w - 1])
        gy, gx = np.meshgrid(ly, lx, indexing="ij")
        p_lat = self._proba_at(at, gy.ravel(), gx.ravel()).reshape(ly.size, lx.size, 4)
        c = np.argmax(p_lat, axis=-1)
        agree = (c[:-1, :-1] == c[1:, :-1]) & (c[:-1, :-1] == c[:-1, 1:]) & (c[:-1, :-1] == c[1:, 1:])
        agree = ndimage.binary_erosion(agree, np.ones((3, 3), bool), border_value=1)
        iy = np.clip(np.searchsorted(ly, np.arange(h), side="right") - 1, 0, ly.size - 2)
        ix = np.clip(np.searchsorted(lx, np.arange(w), side="right") - 1, 0, lx.size - 2)
        ty = ((np.arange(h) - ly[iy]) / (ly[iy + 1] - ly[iy])).astype(np.float32)[:, None, None]
        tx = ((np.arange(w) - lx[ix]) / (lx[ix + 1] - lx[ix])).astype(np.float32)[None, :, None]
        rows = p_lat[iy] * (1 - ty) + p_lat[iy + 1] * ty                   # separable: rows, then columns
        out = rows[:, ix] * (1 - tx)
        out += rows[:, ix + 1] * tx
        exact = ~agree[iy][:, ix]
        if exact.any():
            out[exact] = self._proba_at(at, *np.nonzero(exact))
        return out

    def _proba_at(self, at, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Probabilities at tile pixels (``yy``, ``xx``), features made and classified block by block (a block's
        feature rows stay in the CPU cache from ``at`` through every tree)."""
        out = np.empty((yy.size, len(ANNOTATED_CLASSES)), np.float32)
        for i in range(0, yy.size, _FOREST_CHUNK):
            out[i:i + _FOREST_CHUNK] = self.predict_proba_features(at(yy[i:i + _FOREST_CHUNK], xx[i:i + _FOREST_CHUNK]))
        return out

    # -- compatibility -----------------------------------------------------------------------------------
    def check_lamella(self, sem, od_stacks: dict, *, path=None) -> None:
        """Refuse a lamella the model cannot be applied to (CeimapInputError naming the model file).

        Checks: every edge the features need is present; each edge's energies cover at least
        ``MIN_ENERGY_OVERLAP`` of the range the model was trained on; the SEM pixel size is within a factor
        ``SEM_PIXEL_RATIO_MAX`` and the STXM pixel sizes within ``STXM_PIXEL_RATIO_MAX`` of the training
        lamellae's (features are defined in nm, but textures at very different sampling differ).
        """
        where = path or self.source
        missing = [e for e in self.spec.edges if e not in od_stacks]
        if missing:
            raise CeimapInputError(
                f"the model needs STXM stacks at {', '.join(self.spec.edges)}; the lamella lacks "
                f"{', '.join(missing)}", path=where)
        sem_px = [lam["sem_pixel_nm"] for lam in self.lamellae]
        px = float(sem.pixel_size_nm)
        if px > SEM_PIXEL_RATIO_MAX * max(sem_px) or px < min(sem_px) / SEM_PIXEL_RATIO_MAX:
            raise CeimapInputError(
                f"the model was trained on SEM pixels of {min(sem_px):.3g}–{max(sem_px):.3g} nm; this lamella's "
                f"{px:.3g} nm is more than {SEM_PIXEL_RATIO_MAX:g}× away (train a model at this pixel size)",
                path=where)
        for edge in self.spec.edges:
            od = od_stacks[edge]
            trained = [lam["stxm_pixel_nm"][edge] for lam in self.lamellae]
            p = float(od.pixel_size_nm)
            if p > STXM_PIXEL_RATIO_MAX * max(trained) or p < min(trained) / STXM_PIXEL_RATIO_MAX:
                raise CeimapInputError(
                    f"{edge}: the model was trained on STXM pixels of {min(trained):.3g}–{max(trained):.3g} nm; "
                    f"this stack's {p:.3g} nm is more than {STXM_PIXEL_RATIO_MAX:g}× away", path=where)
            lo = max(r["energy_range_ev"][edge][0] for r in self.lamellae)
            hi = min(r["energy_range_ev"][edge][1] for r in self.lamellae)
            e = np.asarray(od.energies_ev, float)
            overlap = max(0.0, min(hi, e.max()) - max(lo, e.min()))
            if hi > lo and overlap < MIN_ENERGY_OVERLAP * (hi - lo):
                raise CeimapInputError(
                    f"{edge}: the model's features were computed from energies {lo:.1f}–{hi:.1f} eV; this "
                    f"stack covers {e.min():.1f}–{e.max():.1f} eV (less than {MIN_ENERGY_OVERLAP:.0%} overlap)",
                    path=where)

    # -- persistence -------------------------------------------------------------------------------------
    def header(self) -> dict:
        """The JSON header written to (and checked in) a model file, without the hash."""
        import scipy
        import sklearn

        from . import __version__
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "ceimap_version": __version__,
            "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__},
            "feature_spec": self.spec.to_dict(),
            "estimator": self.estimator,
            "params": self.params,
            "seed": self.seed,
            "class_codes": {c.name.lower(): int(c) for c in ANNOTATED_CLASSES},
            "classes_trained": [int(c) for c in self.classes],
            "lamellae": self.lamellae,
            "validation": self.validation,
            "n_samples": int(self.labels.size),
        }

    def save(self, path) -> str:
        """Write the model file (``.npz``; pure data). Returns its content SHA-256 (hex)."""
        path = Path(path)
        header = self.header()
        arrays = {"features": self.features, "labels": self.labels, "lamella": self.lamella}
        header["sha256"] = _content_hash(header, arrays)
        blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=blob, **arrays)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
        self.source, self.sha256 = str(path), header["sha256"]
        self.file_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        return header["sha256"]

    @classmethod
    def load(cls, path) -> "PixelClassifier":
        """Read a model file, check it, and refit the classifier from its data (deterministic).

        Raises
        ------
        CeimapInputError
            The file is missing, not a ceimap model, holds anything but plain numeric arrays, has another
            format or feature-spec version, or its content does not match its SHA-256.
        """
        header, arrays = read_model_file(path)
        spec = FeatureSpec.from_dict(header["feature_spec"])
        samples = []
        for i, lam in enumerate(header["lamellae"]):
            sel = arrays["lamella"] == i
            samples.append(TrainingSamples(
                name=str(lam["name"]), features=arrays["features"][sel], labels=arrays["labels"][sel],
                sem_pixel_nm=float(lam["sem_pixel_nm"]),
                stxm_pixel_nm={str(e): float(v) for e, v in lam["stxm_pixel_nm"].items()},
                energy_range_ev={str(e): (float(v[0]), float(v[1])) for e, v in lam["energy_range_ev"].items()}))
        model = cls(spec, samples, estimator=header["estimator"], params=header["params"], seed=header["seed"],
                    validation=header.get("validation"))
        model.source, model.sha256 = str(path), header["sha256"]
        model.file_sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return model

    def describe(self) -> dict:
        """What a run records about the model it used (file, hash, estimator, feature spec, lamellae)."""
        return {"file": None if self.source is None else Path(self.source).name,
                "path": None if self.source is None else str(Path(self.source).resolve()),
                "sha256": self.sha256, "file_sha256": self.file_sha256, "estimator": self.estimator,
                "params": self.params, "seed": self.seed, "feature_spec": self.spec.to_dict(), "trained_on": [lam["name"] for lam in self.lamellae],
                "n_samples": int(self.labels.size), "validation": self.validation}


PSF_FWHM_NM = 50.0
"""STXM probe width assumed by :func:`refine_boundaries` and :func:`place_interphase` (the default of
:func:`ceimap.segment.assign.segment_lamella`)."""
INTERPHASE_MAX_NM = 400.0
"""Thickest interphase expected by :func:`place_interphase` (the default of :func:`ceimap.segment.assign.segment_lamella`)."""


def refine_boundaries(classes: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, stxm_pixel_nm: float,
                      *, psf_fwhm_nm: float = PSF_FWHM_NM, tile_px: int | None = None) -> np.ndarray:
    """Re-decide a classifier's NMC and void boundaries on the SEM, as the unsupervised path does.

    The forest decides each pixel from features smoothed over tens of nm and from STXM maps at 35–45 nm
    pixels, so its boundaries are placed to within a few SEM pixels, and the bright edge the SEM draws along
    every solid/empty boundary reads as a rim of electrolyte; most of its errors lie there
    (``benchmarks/README.md``). The project's SEM boundary refinement
    (:func:`ceimap.segment.refine.refine_sem_boundaries`: local-contrast NMC and empty boundaries within one STXM
    pixel plus the probe width, thin rims resolved, NMC boundaries snapped to the midpoint of the levels met;
    without its crack step) uses levels measured on this image, so it applies to the classifier's map
    unchanged. Interphase is kept where the classifier
    put it and the refined map is still electrolyte-like (it is a chemical call, not an SEM one).

    Parameters
    ----------
    classes : ndarray of uint8
        Class codes 1–4 (:meth:`PixelClassifier.predict`).
    sem_image : ndarray
    pixel_size_nm : float
        SEM pixel size.
    stxm_pixel_nm : float
        The coarsest STXM pixel size of the lamella's stacks.
    psf_fwhm_nm : float
        STXM probe width.
    tile_px : int, optional
        Refine tiles of this side, each with a margin of eight refinement bands, instead of the whole image at
        once (large images: bounded memory; the result equals the whole-image one away from tile seams, where
        a region's level can be measured over a different extent).

    Returns
    -------
    ndarray of uint8
    """
    from .refine import refine_sem_boundaries

    classes = np.asarray(classes)
    ny, nx = classes.shape
    if tile_px is not None and max(ny, nx) > tile_px:
        halo = max(64, int(np.ceil(8 * (float(stxm_pixel_nm) + float(psf_fwhm_nm)) / float(pixel_size_nm))))
        out = np.empty_like(classes, dtype=np.uint8)
        for ys, xs in tile_slices((ny, nx), tile_px):
            ya, xa = max(0, ys.start - halo), max(0, xs.start - halo)
            yb, xb = min(ny, ys.stop + halo), min(nx, xs.stop + halo)
            part = refine_boundaries(classes[ya:yb, xa:xb], np.asarray(sem_image)[ya:yb, xa:xb], pixel_size_nm,
                                     stxm_pixel_nm, psf_fwhm_nm=psf_fwhm_nm)
            out[ys, xs] = part[ys.start - ya:ys.stop - ya, xs.start - xa:xs.stop - xa]
        return out
    interphase = classes == Class.INTERPHASE
    label = np.where(interphase, int(Class.ELECTROLYTE), classes)
    image = np.asarray(sem_image, dtype=float)
    band_nm = float(stxm_pixel_nm) + float(psf_fwhm_nm)
    # no crack step: the classifier's voids come from the annotations (see refine_sem_boundaries)
    label = refine_sem_boundaries(label, image, pixel_size_nm, band_nm=band_nm, psf_fwhm_nm=psf_fwhm_nm,
                                  crack_max_nm=None)
    out = np.asarray(label, dtype=np.uint8).copy()
    out[interphase & (out == Class.ELECTROLYTE)] = Class.INTERPHASE
    out[classes == Class.OUTSIDE] = Class.OUTSIDE
    return out


def place_interphase(classes: np.ndarray, od_stacks: dict, registrations: dict, sem_pixel_nm: float, *,
                     psf_fwhm_nm: float = PSF_FWHM_NM,
                     interphase_max_nm: float = INTERPHASE_MAX_NM) -> tuple[np.ndarray, dict]:
    """Re-draw a classifier map's interphase where the STXM chemistry measured it, as the unsupervised path does.

    The interphase stage decides from S-edge-shift maps at 35–45 nm STXM pixels, so it finds the band but
    places its outer edge no better than a few SEM pixels. The chemistry of the unsupervised path measures the interphase fraction of
    each STXM pixel (:func:`ceimap.segment.chemistry.classify_stxm`: detected against the null of the NMC and
    electrolyte cores), and :func:`ceimap.segment.interphase.interphase_band` draws, on the electrolyte side of this
    map's NMC, the band whose view through the STXM probe reproduces the measured amounts. Here:

    - the classifier still decides NMC, electrolyte-like matter and void; only electrolyte-like pixels are
      split into interphase and electrolyte;
    - the band is drawn only in connected pieces that hold some of the classifier's interphase (a model trained
      without interphase strokes, or one that finds none on this lamella, gets none), and only where it is at
      least half the probe thick (a sharp NMC edge leaves a partial-volume residual: the charged example
      measures a median 5 nm and gets no band);
    - NMC surfaces beyond the measured STXM field, where neither the chemistry nor the classifier's spectral
      features see anything, get the median thickness of the measured surfaces (bare ones included);
    - when the chemistry measures no interphase at all (no systematic residual above its null), the
      classifier's interphase is kept as it is.

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes 1–4 on the SEM grid (e.g. :func:`refine_boundaries`' result).
    od_stacks, registrations : dict by edge
        The lamella's aligned OD stacks and STXM → SEM registrations.
    sem_pixel_nm : float
    psf_fwhm_nm, interphase_max_nm : float
        STXM probe width and thickest interphase expected (the unsupervised path's defaults).

    Returns
    -------
    classes : ndarray of uint8
    info : dict
        ``placed_by`` ("chemistry" or "classifier"), ``reason``, and when placed by the chemistry
        ``beyond_field_nm`` (thickness given to surfaces beyond the STXM field, None if there are none),
        ``beyond_field_surface_px``, ``changed_fraction`` (pixels moved between interphase and electrolyte).
    """
    from .chemistry import stxm_chemistry
    from .interphase import interphase_band

    classes = np.asarray(classes)
    found = classes == Class.INTERPHASE
    if not found.any():
        return classes, {"placed_by": "classifier", "reason": "the classifier found no interphase"}
    chem = stxm_chemistry(od_stacks, registrations, classes.shape, psf_fwhm_nm=psf_fwhm_nm,
                          interphase_max_nm=interphase_max_nm)
    measured = chem.chemistry
    if not np.any(measured.interphase_measured):
        return classes, {"placed_by": "classifier", "reason": "the chemistry measured no interphase"}
    band = interphase_band(classes == Class.NMC, found | (classes == Class.ELECTROLYTE), measured.interphase_fraction,
                           measured.interphase_measured, measured.known, chem.matrix, float(sem_pixel_nm),
                           chem.stxm_pixel_nm, psf_fwhm_nm=psf_fwhm_nm, interphase_max_nm=interphase_max_nm,
                           support=found, beyond_field=True)
    out = classes.astype(np.uint8, copy=True)
    out[found] = Class.ELECTROLYTE
    out[band["band"]] = Class.INTERPHASE
    return out, {"placed_by": "chemistry", "reason": "band fitted to the measured interphase fractions",
                 "beyond_field_nm": band["beyond_field_nm"],
                 "beyond_field_surface_px": band["beyond_field_surface"],
                 "changed_fraction": float(np.mean(out != classes))}


def _leaf_tables(model):
    """Per tree of a fitted random forest: (tree, class probabilities of every node, shape (n_classes, n_nodes)).

    The probabilities are those of :meth:`sklearn.tree.DecisionTreeClassifier.predict_proba` (node values
    normalised, float64); None for other estimators.
    """
    from sklearn.ensemble import RandomForestClassifier

    if not isinstance(model, RandomForestClassifier):
        return None
    tables = []
    for est in model.estimators_:
        value = est.tree_.value[:, 0, :model.n_classes_].astype(np.float64)
        normaliser = value.sum(axis=1)[:, None]
        normaliser[normaliser == 0.0] = 1.0
        tables.append((est.tree_, np.ascontiguousarray((value / normaliser).T)))
    return tables


_FOREST_CHUNK = 8192
"""Rows per block of :func:`_predict_proba`: a block of feature rows stays in the CPU cache while every tree
walks it (scikit-learn walks all rows once per tree: memory-bound on millions of rows)."""


def _predict_proba(model, tables, x: np.ndarray) -> np.ndarray:
    """``model.predict_proba(x)``; for a random forest, the same numbers (bit for bit) computed block by block.

    scikit-learn's forest runs each tree over all rows and accumulates (n, n_classes) float64 arrays per tree;
    with small trees that is bound by memory traffic. Here each block of ``_FOREST_CHUNK`` rows is walked by
    every tree (``Tree.apply``) and the leaves' probabilities summed in the same order, then divided by the
    number of trees, as scikit-learn does: identical values, faster (``benchmarks/README.md``).
    """
    if tables is None:
        return model.predict_proba(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_classes = tables[0][1].shape[0]
    out = np.empty((len(x), n_classes), np.float64)
    for i in range(0, len(x), _FOREST_CHUNK):
        block = x[i:i + _FOREST_CHUNK]
        acc = np.zeros((n_classes, len(block)), np.float64)
        for tree, table in tables:
            leaf = tree.apply(block)
            for c in range(n_classes):
                acc[c] += table[c].take(leaf)
        out[i:i + len(block)] = acc.T
    out /= len(tables)
    return out


def _used_columns(model, columns: np.ndarray):
    """Feature columns (indices into ``columns``' space) a fitted forest splits on; None if not a forest."""
    if isinstance(model, _Constant):
        return np.array([], int)
    if not hasattr(model, "estimators_"):
        return None
    used = set()
    for est in model.estimators_:
        f = est.tree_.feature
        used.update(int(columns[i]) for i in f[f >= 0])
    return np.array(sorted(used), int)


class _Constant:
    """Stand-in estimator when the annotations hold a single class for a stage."""

    def __init__(self, code: int):
        self.classes_ = np.array([code])

    def predict_proba(self, x):
        return np.ones((len(x), 1))


def _interphase_columns(spec: FeatureSpec) -> np.ndarray:
    names = spec.names
    chosen = spec.interphase_features or [n for n in names if not n.startswith("sem_") and n != "stxm_field"]
    chosen = chosen or names
    return np.array([names.index(n) for n in chosen], dtype=int)


def _content_hash(header: dict, arrays: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode("ascii"))
        h.update(a.tobytes())
    return h.hexdigest()


def _refuse(problem: str, path) -> CeimapInputError:
    return CeimapInputError(f"not a usable ceimap model file: {problem}", path=path)


def read_model_file(path) -> tuple[dict, dict]:
    """Read and verify a model file without executing anything from it.

    Returns
    -------
    header : dict
    arrays : dict of str to ndarray
        ``features`` (float32, (n, n_features)), ``labels`` (uint8 1–4), ``lamella`` (uint16).
    """
    path = Path(path)
    if not path.is_file():
        raise CeimapInputError("model file not found", path=path)
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise _refuse(f"larger than {MAX_MODEL_BYTES / 1024 ** 3:.0f} GB", path)
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise _refuse("not a NumPy .npz archive (no zip signature)", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            expected = {"header", *_ARRAYS}
            if names != expected:
                raise _refuse(f"expected the entries {sorted(expected)}, found {sorted(names)}", path)
            raw = {name: npz[name] for name in sorted(names)}
    except CeimapInputError:
        raise
    except ValueError as exc:  # object arrays (pickles) are refused by allow_pickle=False
        raise _refuse(f"it holds something other than plain numeric arrays ({exc})", path) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _refuse(f"not a NumPy .npz archive ({type(exc).__name__}: {exc})", path) from None
    blob = raw.pop("header")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _refuse("the header is not a UTF-8 byte array", path)
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"the header is not JSON ({exc})", path) from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise _refuse(f"the header does not say format {MODEL_FORMAT!r}", path)
    if header.get("format_version") != MODEL_FORMAT_VERSION:
        raise _refuse(f"model format version {header.get('format_version')!r}; this ceimap reads version "
                      f"{MODEL_FORMAT_VERSION}", path)
    for name, dtype in _ARRAYS.items():
        if raw[name].dtype != np.dtype(dtype):
            raise _refuse(f"entry {name!r} has dtype {raw[name].dtype}, expected {np.dtype(dtype)}", path)
    digest = _content_hash(header, raw)
    if header.get("sha256") != digest:
        raise _refuse("its SHA-256 does not match its content (the file was modified or corrupted)", path)
    _check_header(header, raw, path)
    return header, raw


def _check_header(header: dict, arrays: dict, path) -> None:
    spec_dict = header.get("feature_spec")
    if not isinstance(spec_dict, dict) or spec_dict.get("version") != FEATURE_SPEC_VERSION:
        found = spec_dict.get("version") if isinstance(spec_dict, dict) else None
        raise _refuse(f"feature spec version {found!r}; this ceimap computes version {FEATURE_SPEC_VERSION} "
                      "(retrain the model with this version)", path)
    try:
        spec = FeatureSpec.from_dict(spec_dict)
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(f"invalid feature spec ({exc})", path) from None
    if header.get("estimator") not in ESTIMATORS:
        raise _refuse(f"unknown estimator {header.get('estimator')!r}", path)
    params = header.get("params")
    if not isinstance(params, dict) or any(k not in _PARAM_TYPES or not isinstance(v, _PARAM_TYPES[k])
                                           or isinstance(v, bool) for k, v in params.items()):
        raise _refuse(f"hyper-parameters outside the accepted set: {params!r}", path)
    if not isinstance(header.get("seed"), int):
        raise _refuse("the seed is not an integer", path)
    feats, labels, lamella = arrays["features"], arrays["labels"], arrays["lamella"]
    n = labels.size
    if feats.shape != (n, len(spec.names)) or lamella.shape != (n,) or labels.ndim != 1:
        raise _refuse(f"array shapes {feats.shape}, {labels.shape}, {lamella.shape} do not agree with "
                      f"{len(spec.names)} features", path)
    if not np.all(np.isfinite(feats)):
        raise _refuse("non-finite feature values", path)
    if not np.all(np.isin(labels, ANNOTATED_CLASSES)):
        raise _refuse("labels outside the class codes 1–4", path)
    lams = header.get("lamellae")
    if not isinstance(lams, list) or not lams or (n and lamella.max() >= len(lams)):
        raise _refuse("the lamella table does not match the samples", path)
    for lam in lams:
        try:
            str(lam["name"])
            float(lam["sem_pixel_nm"])
            for e in spec.edges:
                float(lam["stxm_pixel_nm"][e])
                lo, hi = (float(v) for v in lam["energy_range_ev"][e])
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse(f"incomplete lamella record ({exc!r})", path) from None


def leave_one_lamella_out(samples: list, spec: FeatureSpec, *, estimator: str = "random_forest",
                          params: dict | None = None, seed: int = 0) -> dict:
    """Train on all lamellae but one, score the held-out lamella's annotations; for each lamella.

    Returns
    -------
    dict
        ``{name: {"macro_f1": …, "per_class_f1": {code: …}, "n": …}}``; empty with fewer than two lamellae.
    """
    out = {}
    if len(samples) < 2:
        return out
    for i, held in enumerate(samples):
        rest = [s for j, s in enumerate(samples) if j != i]
        if len(np.unique(np.concatenate([s.labels for s in rest]))) < 2:
            continue
        clf = PixelClassifier(spec, rest, estimator=estimator, params=params, seed=seed)
        pred = np.array(ANNOTATED_CLASSES)[np.argmax(clf.predict_proba_features(held.features), axis=1)]
        macro, per = macro_f1(pred, held.labels)
        out[held.name] = {"macro_f1": macro, "per_class_f1": {str(k): v for k, v in per.items()},
                          "n": int(held.labels.size)}
    return out
