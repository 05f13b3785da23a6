"""The unsupervised path's orchestrator: registered OD stacks and the SEM image → the 5-class map on the SEM grid.

ceimap names the classes itself, from spectral signatures and physics, without any truth. One room per stage,
in the order :func:`segment_lamella` runs them:

1. **Chemistry per STXM pixel** (:func:`ceimap.segment.chemistry.stxm_chemistry`): every edge on one STXM grid
   (:mod:`ceimap.segment.grid`), the OD noise from the data (:mod:`ceimap.segment.noise`), signatures
   (:mod:`ceimap.segment.signatures`), unmixing in transmission
   (:func:`ceimap.segment.decompose.unmix_transmission`), the interphase as what the mixture cannot explain.
2. **SEM resolution** (here): a random forest on multiscale SEM features
   (:func:`skimage.feature.multiscale_basic_features`: smooth NMC, porous electrolyte, dark voids) is trained on
   SEM pixels whose chemistry is confident and far from STXM class boundaries (self-training); its
   probabilities are multiplied by the upsampled chemistry fractions
   (:func:`ceimap.segment.register.warp_to_sem`) as a floored prior.
3. **SEM boundary refinement** (:mod:`ceimap.segment.refine`): NMC and empty boundaries
   snapped to the SEM contrast, cracks, thin rims.
4. **Outside and voids** (:func:`ceimap.segment.outside.split_empty`): empty regions along the field border are
   outside the lamella, voids joined to them through a narrow neck stay voids.
5. **Interphase band** (:func:`ceimap.segment.interphase.interphase_band`): a band on the electrolyte side of
   the NMC surface as thick as the chemistry measured, seen through the STXM probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
from scipy import ndimage

from . import Class
from .chemistry import stxm_chemistry
from .interphase import interphase_band
from .outside import split_empty
from .refine import refine_sem_boundaries
from .register import warp_to_sem
from .workers import thread_count

__all__ = ["Segmentation", "segment_lamella"]


@dataclass(frozen=True)
class Segmentation:
    """The class map of one lamella.

    Attributes
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes (:class:`ceimap.Class`) on the SEM grid.
    probabilities : ndarray of float32, shape (5, ny, nx), or None
        Per-class probability on the SEM grid, in class-code order.
    details : dict
        Intermediate results: ``stxm`` (the STXM-grid chemistry as a dict,
        :meth:`ceimap.segment.chemistry.StxmChemistry.record`: fractions, interphase z, classes …) on the grid
        whose pixel → SEM pixel matrix is ``stxm_matrix`` (the reference edge's lattice extended over
        every edge's field, :func:`ceimap.segment.grid.union_grid`), the reference edge, noise levels,
        reference spectra, thresholds, timings.
    """

    classes: np.ndarray
    probabilities: np.ndarray | None
    details: dict = field(default_factory=dict)


def _sem_features(sem: np.ndarray, pixel_size_nm: float) -> np.ndarray:
    """Multiscale intensity / edge / texture features of the SEM image, from ~1 pixel to ~200 nm."""
    from skimage.feature import multiscale_basic_features

    img = np.asarray(sem, dtype=np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    sigma_max = max(200.0 / pixel_size_nm, 4.0)
    return multiscale_basic_features(img, sigma_min=1.0, sigma_max=sigma_max, num_sigma=5).astype(np.float32)


def segment_lamella(od_stacks: dict, registrations: dict, sem, *, reference_edge: str | None = None,
                    psf_fwhm_nm: float = 50.0, interphase_max_nm: float = 400.0,
                    n_train_per_class: int = 20000, n_trees: int = 40, chem_floor: float = 0.05,
                    crack_max_nm: float = 90.0,
                    random_state: int = 0) -> Segmentation:
    """Segment one lamella into outside / NMC / interphase / electrolyte / void on the SEM grid.

    Parameters
    ----------
    od_stacks : dict of str to Stack
        Aligned OD stacks per edge (``"Ni-L"`` needed for NMC; ``"S-L"`` optional).
    registrations : dict of str to Registration
        Per edge, STXM pixel → SEM pixel.
    sem : SemImage
    reference_edge : str, optional
        STXM grid for the chemistry (default Ni-L).
    psf_fwhm_nm : float
        STXM resolution (zone-plate spot FWHM).
    interphase_max_nm : float
        Thickest interphase expected.
    n_train_per_class : int
        SEM pixels per class used to train the SEM-resolution classifier.
    n_trees : int
        Trees of the random forest.
    crack_max_nm : float
        Widest thin dark piece inside NMC taken for a crack (transverse cracks are 20–60 nm; the SEM blur
        widens them).
    chem_floor : float
        Floor added to the chemistry prior (0–1) before it multiplies the SEM texture probabilities: how
        far the SEM may overrule the upsampled chemistry.
    random_state : int

    Returns
    -------
    Segmentation
    """
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    image = np.asarray(sem.image, dtype=np.float32)
    chemistry = stxm_chemistry(od_stacks, registrations, image.shape, reference_edge=reference_edge,
                               psf_fwhm_nm=psf_fwhm_nm, interphase_max_nm=interphase_max_nm)
    chem, matrix = chemistry.chemistry, chemistry.matrix
    ref_edge, stxm_px = chemistry.reference_edge, chemistry.stxm_pixel_nm
    t_chem = time.perf_counter()

    sem_px = float(sem.pixel_size_nm)
    shape = image.shape
    # chemistry on the SEM grid: texture-class fractions NMC / electrolyte(+interphase) / empty
    frac_sem = warp_to_sem(chem.fractions, matrix, shape, order=1, cval=np.nan)
    inside = np.all(np.isfinite(frac_sem), axis=0)
    stxm_cls_sem = warp_to_sem(chem.classes.astype(float), matrix, shape, order=0, cval=np.nan)

    feats = _sem_features(image, sem_px)
    n_feat = feats.shape[-1]
    flat_feats = feats.reshape(-1, n_feat)

    # training labels (self-training): confident chemistry far from STXM class boundaries
    texture = np.full(shape, -1, np.int16)
    cls = np.nan_to_num(stxm_cls_sem, nan=-1).astype(np.int16)
    texture[cls == Class.NMC] = Class.NMC
    texture[(cls == Class.ELECTROLYTE) | (cls == Class.INTERPHASE)] = Class.ELECTROLYTE
    texture[(cls == Class.VOID) | (cls == Class.OUTSIDE)] = Class.VOID
    conf = np.nan_to_num(np.max(frac_sem, axis=0), nan=0.0) > 0.8
    margin_px = int(np.ceil((stxm_px + psf_fwhm_nm) / sem_px))
    rng = np.random.default_rng(random_state)
    train_idx = []
    for c in (Class.NMC, Class.ELECTROLYTE, Class.VOID):
        m = ndimage.binary_erosion(texture == c, iterations=margin_px) & conf & inside
        idx = np.flatnonzero(m)
        if idx.size > n_train_per_class:
            idx = rng.choice(idx, n_train_per_class, replace=False)
        train_idx.append(idx)
    train_idx = np.concatenate(train_idx)
    y = texture.ravel()[train_idx]
    present = np.unique(y)
    rf = RandomForestClassifier(n_estimators=n_trees, max_depth=16, min_samples_leaf=5, n_jobs=thread_count(),
                                random_state=random_state)
    rf.fit(flat_feats[train_idx], y)
    col = {Class.NMC: 0, Class.ELECTROLYTE: 1, Class.VOID: 2}
    p_sem = np.zeros((flat_feats.shape[0], 3), np.float32)
    for start in range(0, flat_feats.shape[0], 200000):
        pr = rf.predict_proba(flat_feats[start:start + 200000])
        for j, c in enumerate(rf.classes_):
            p_sem[start:start + 200000, col[int(c)]] = pr[:, j]
    p_sem = np.moveaxis(p_sem.reshape(shape[0], shape[1], 3), -1, 0)
    t_rf = time.perf_counter()

    # combine: SEM texture likelihood × chemistry prior (tempered, floored so the SEM can overrule a
    # blurred or slightly misregistered chemistry at boundaries); SEM alone outside the STXM field
    prior = np.where(inside[None], np.nan_to_num(frac_sem), 1.0 / 3.0)
    post = p_sem * (prior + chem_floor)
    post /= np.maximum(post.sum(axis=0, keepdims=True), 1e-12)
    label = np.array([Class.NMC, Class.ELECTROLYTE, Class.VOID])[np.argmax(post, axis=0)]
    label = refine_sem_boundaries(label, image, sem_px, band_nm=stxm_px + psf_fwhm_nm, psf_fwhm_nm=psf_fwhm_nm,
                                  crack_max_nm=crack_max_nm)
    empty = label == Class.VOID
    # outside: empty regions along the field border (lamella edge) or mostly outside on the STXM grid
    outside = split_empty(empty, sem_px, vacuum=cls == Class.OUTSIDE)
    classes = label.astype(np.uint8)
    classes[outside] = Class.OUTSIDE
    # interphase: a band on the electrolyte side of the NMC surface whose local thickness is the amount
    # of interphase the chemistry measured there (conserved by the PSF blur and the resampling)
    nmc_sem = label == Class.NMC
    placed = interphase_band(nmc_sem, label == Class.ELECTROLYTE, chem.interphase_fraction, chem.interphase_measured,
                             chem.known, matrix, sem_px, stxm_px, psf_fwhm_nm=psf_fwhm_nm,
                             interphase_max_nm=interphase_max_nm)
    classes[placed["band"]] = Class.INTERPHASE
    p_int, thickness_nm = placed["p_interphase"], placed["thickness_nm"]
    # probabilities consistent with the final map (the texture posterior is not where the refined
    # boundaries are, so its iso-lines would misplace them): P(NMC) is a logistic of the signed distance
    # to the NMC boundary, ½ on the pixel edge; the rest goes to the class of the nearest non-NMC pixel,
    # shared between interphase and electrolyte by the soft band
    probs = np.zeros((5,) + shape, np.float32)
    if nmc_sem.any() and not nmc_sem.all():
        d_in, (jy, jx) = ndimage.distance_transform_edt(nmc_sem, return_indices=True)
        d_out = ndimage.distance_transform_edt(~nmc_sem)
        p_nmc = 1.0 / (1.0 + np.exp(-2.0 * np.where(nmc_sem, d_in - 0.5, 0.5 - d_out)))
        other, p_band = classes[jy, jx], p_int[jy, jx]
    else:
        p_nmc, other, p_band = nmc_sem.astype(float), classes, p_int
    rest = 1.0 - p_nmc
    e_side = (other == Class.ELECTROLYTE) | (other == Class.INTERPHASE)
    probs[Class.NMC] = p_nmc
    probs[Class.INTERPHASE] = rest * e_side * p_band
    probs[Class.ELECTROLYTE] = rest * e_side * (1.0 - p_band)
    probs[Class.VOID] = rest * (other == Class.VOID)
    probs[Class.OUTSIDE] = rest * (other == Class.OUTSIDE)
    t_end = time.perf_counter()
    details = {
        "reference_edge": ref_edge,
        "stxm": chem.record(),
        "stxm_pixel_nm": stxm_px,
        "stxm_matrix": matrix,
        "sem_pixel_nm": sem_px,
        "n_train": {int(c): int(np.sum(y == c)) for c in present},
        "sem_texture_probabilities": p_sem,
        "interphase_thickness_nm": thickness_nm,
        "timings_s": {"chemistry": t_chem - t0, "sem_classifier": t_rf - t_chem, "total": t_end - t0},
    }
    return Segmentation(classes=classes, probabilities=probs, details=details)
