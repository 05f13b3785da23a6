"""Automatic class assignment: from registered OD stacks and the SEM image to the 4-class map.

ceimap names the classes itself, from spectral signatures and physics, without any truth:

1. **One STXM grid.** Every edge is resampled onto the pixel lattice of a reference edge (Ni-L when
   present), extended by whole pixels over the fields of the other edges (:func:`union_grid`: each
   stack is its own scan, and what only the S-L stack covers still has chemistry), through the
   registration matrices (``inv(M_edge) @ M_grid`` maps grid pixels to edge pixels).
2. **Noise from the data.** Transmission counts are Poisson, so the OD noise is
   ``σ(E, x) = σ₀(E) · exp(OD/2)``; ``σ₀(E)`` is estimated per frame from the median absolute value of a
   Laplacian of the frame divided by ``exp(OD/2)`` (robust to the few object edges).
3. **Signatures.** Per pixel and edge: the resonance (mean OD over the edge's resonance window minus the
   linear pre-edge baseline extrapolated under it) and the total absorption. Strong Ni L3 resonance →
   NMC; absorbing matter without Ni (with S²⁻ resonance when S-L exists) → electrolyte; absorption
   consistent with zero at all edges → empty (void, or outside the lamella when it is the empty region
   along the field border — the lamella edge).
4. **Unmixing in transmission.** A pixel straddling a boundary transmits the area-weighted mean of its
   phases' transmissions, so lateral partial volume is linear in ``T = exp(−OD)`` (not in OD: the PSF
   blurs intensity). Each edge is fitted per pixel (weighted NNLS, ``σ_T = σ₀ e^{−OD/2}``) with the
   *local* bulk NMC transmission (a normalised Gaussian average of NMC-core pixels nearby, so particles
   of different Ni valence — the bimodal 4.7 V lamella — are each their own reference), the local bulk
   electrolyte (core electrolyte far from NMC), each at a thinner and a thicker version ``T**k`` (lamella
   wedge, density, sub-pixel porosity are linear in OD), and vacuum (``T = 1``), with a soft
   sum-to-one row (areal fractions). NMC fraction from Ni-L, electrolyte fraction from S-L when present;
   where only one edge measured, its own fit gives all three (at S-L, NMC is the non-resonant absorber).
5. **Interphase = what the mixture cannot explain.** For pixels near NMC that are not NMC, the
   noise-whitened residuals are decomposed; when their leading singular value clears the Gavish–Donoho
   noise threshold there is a systematic signature (reduced Ni, shifted S), and each pixel's projection
   on it, in units of its scatter over core pixels, is a z-score (combined over the edges that measured
   the pixel, Stouffer). Detected pixels (z above the null's
   upper tail) give an interphase endmember (mean of the top decile) and are unmixed again with it to get
   an interphase fraction. No systematic residual → no interphase (the charged lamella).
6. **SEM resolution.** A random forest on multiscale SEM features
   (:func:`skimage.feature.multiscale_basic_features`: smooth NMC, porous electrolyte, dark voids) is
   trained on SEM pixels whose chemistry is confident and far from STXM class boundaries
   (self-training); its probabilities are multiplied by the upsampled chemistry fractions
   (:func:`ceimap.segment.register.warp_to_sem`) as a floored prior; NMC and empty boundaries are then snapped to
   the SEM contrast with local thresholds (:func:`refine_nmc_boundaries`, :func:`refine_empty_boundaries`;
   thin dark pieces enclosed by NMC, and gaps between NMC on both sides no wider than a crack, are
   cracks → void; :func:`mark_cracks`); electrolyte-grey rims thinner than the resolution between NMC and
   a void are the SEM edge effect and are split between the two (:func:`resolve_thin_rims`). Empty
   regions along the field border are outside the lamella, voids joined to them through a narrow neck
   stay voids (:func:`split_empty`). The interphase is a band on the electrolyte side of the NMC surface
   whose local thickness is fitted so that the band, seen through the STXM (probe ⊗ pixel footprint,
   sampled on the STXM grid, restricted to the pixels where the fraction was measured), gives the
   interphase amount the chemistry measured there (:func:`fit_interphase_thickness`); the interphase
   fractions are calibrated on the pixels that define the endmember (fraction 1 by definition). Bands
   thinner than half the probe are not drawn (unresolvable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
from scipy import ndimage

from .decompose import nnls_fit, optimal_rank_threshold
from .edges import EDGES
from .register import warp_to_sem
from .workers import thread_count

__all__ = [
    "Segmentation",
    "segment_lamella",
    "classify_stxm",
    "to_reference_grid",
    "union_grid",
    "od_noise_scale",
    "edge_signature",
    "name_spectrum",
    "split_empty",
    "tolerant_f1",
    "interphase_thickness_map",
    "refine_nmc_boundaries",
    "refine_empty_boundaries",
    "mark_cracks",
    "resolve_thin_rims",
    "stxm_view",
    "fit_interphase_thickness",
    "snap_nmc_boundaries",
    "stxm_chemistry",
    "interphase_band",
]

OUTSIDE, NMC, INTERPHASE, ELECTROLYTE, VOID = 0, 1, 2, 3, 4
CLASS_NAMES = ("outside", "nmc", "interphase", "electrolyte", "void")


@dataclass(frozen=True)
class Segmentation:
    """The class map of one lamella.

    Attributes
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes on the SEM grid (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void).
    probabilities : ndarray of float32, shape (5, ny, nx), or None
        Per-class probability on the SEM grid, in class-code order.
    details : dict
        Intermediate results: ``stxm`` (STXM-grid maps: fractions, interphase z, classes) on the grid
        whose pixel → SEM pixel matrix is ``stxm_matrix`` (the reference edge's lattice extended over
        every edge's field, :func:`union_grid`), the reference edge, noise levels, reference spectra,
        thresholds, timings.
    """

    classes: np.ndarray
    probabilities: np.ndarray | None
    details: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# grids and noise
# ----------------------------------------------------------------------------------------------------------

def union_grid(od_stacks: dict, registrations: dict, reference_edge: str, sem_shape=None):
    """The reference edge's pixel lattice, extended to cover the fields of every edge.

    Edges are measured over different fields (each stack is its own scan); a pixel that only one edge
    measured still has chemistry. The grid keeps the reference edge's pixel size and orientation and is
    extended by whole pixels, so the reference data land on it without resampling.

    Parameters
    ----------
    od_stacks : dict of str to Stack
    registrations : dict of str to Registration
        Per edge, the matrix STXM pixel → SEM pixel.
    reference_edge : str
    sem_shape : (int, int), optional
        When given, the grid is not extended beyond the SEM image (nothing to classify there).

    Returns
    -------
    shape : (int, int)
    matrix : ndarray, shape (3, 3)
        Grid pixel → SEM pixel.
    """
    m_ref = np.asarray(registrations[reference_edge].matrix, dtype=float)
    inv_ref = np.linalg.inv(m_ref)
    ny, nx = od_stacks[reference_edge].shape_yx
    lo, hi = np.array([0.0, 0.0]), np.array([nx - 1.0, ny - 1.0])
    for edge, st in od_stacks.items():
        h, w = st.shape_yx
        corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]]).T
        sem_xy = np.asarray(registrations[edge].matrix, dtype=float) @ corners
        if sem_shape is not None:
            sem_xy[0] = np.clip(sem_xy[0], -0.5, sem_shape[1] - 0.5)
            sem_xy[1] = np.clip(sem_xy[1], -0.5, sem_shape[0] - 0.5)
        ref_xy = (inv_ref @ sem_xy)[:2]
        # grid pixels whose centre lies in the field
        lo = np.minimum(lo, np.ceil(ref_xy.min(axis=1) - 1e-6))
        hi = np.maximum(hi, np.floor(ref_xy.max(axis=1) + 1e-6))
    lo = np.minimum(lo, 0.0)
    shift = np.array([[1.0, 0, lo[0]], [0, 1.0, lo[1]], [0, 0, 1.0]])
    shape = (int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1)
    return shape, m_ref @ shift


def to_reference_grid(od_stacks: dict, registrations: dict, reference_edge: str | None = None, *,
                      grid: tuple | None = None):
    """Resample every edge's OD stack onto the grid of one reference edge.

    Parameters
    ----------
    od_stacks : dict of str to Stack
        Aligned OD stacks per edge.
    registrations : dict of str to Registration
        Per edge, the matrix STXM pixel → SEM pixel.
    reference_edge : str, optional
        Grid to use; default ``"Ni-L"`` when present, else the first edge.
    grid : (shape, matrix), optional
        Another common grid (grid pixel → SEM pixel matrix), e.g. :func:`union_grid`; default the
        reference edge's own pixels.

    Returns
    -------
    reference_edge : str
    cubes : dict of str to ndarray, shape (n_energy, ny, nx)
        OD on the reference grid (bilinear; NaN where the edge's field does not reach, or outside the
        region every energy frame measured, ``metadata["valid_region"]`` of an aligned stack).
    """
    edges = list(od_stacks)
    if reference_edge is None:
        reference_edge = "Ni-L" if "Ni-L" in od_stacks else edges[0]
    if grid is None:
        (ny, nx), m_ref = od_stacks[reference_edge].shape_yx, registrations[reference_edge].matrix
        own = reference_edge
    else:
        (ny, nx), m_ref = grid
        own = None
    m_ref = np.asarray(m_ref, dtype=float)
    cubes = {}
    for edge, st in od_stacks.items():
        data = np.asarray(st.data, dtype=float)
        valid = st.metadata.get("valid_region") if isinstance(st.metadata, dict) else None
        if valid is not None and np.shape(valid) == data.shape[1:] and not np.all(valid):
            data = np.where(np.asarray(valid, bool)[None], data, np.nan)
        if edge == own:
            cubes[edge] = data
            continue
        m_edge = np.asarray(registrations[edge].matrix, dtype=float)
        # grid pixel -> SEM -> edge pixel
        to_edge = np.linalg.inv(m_edge) @ m_ref
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        xs = to_edge[0, 0] * xx + to_edge[0, 1] * yy + to_edge[0, 2]
        ys = to_edge[1, 0] * xx + to_edge[1, 1] * yy + to_edge[1, 2]
        h, w = data.shape[1:]
        outside = (xs < -0.5) | (xs > w - 0.5) | (ys < -0.5) | (ys > h - 0.5)
        # pixels not measured (NaN, outside the valid region) stay unmeasured over their footprint
        finite = np.all(np.isfinite(data), axis=0)
        if not finite.all():
            outside |= ndimage.map_coordinates(finite.astype(float), [ys, xs], order=0, mode="nearest") < 0.5
        out = np.empty((data.shape[0], ny, nx))
        for k, frame in enumerate(data):
            f = np.where(np.isfinite(frame), frame, np.nanmedian(frame))
            out[k] = ndimage.map_coordinates(f, [ys, xs], order=1, mode="nearest")
        out[:, outside] = np.nan
        cubes[edge] = out
    return reference_edge, cubes


def _singular_values_vectors(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors of a tall matrix from its small Gram matrix."""
    gram = x.T @ x
    w, v = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    return np.sqrt(np.clip(w[order], 0, None)), v[:, order].T


def _laplacian_noise(od: np.ndarray) -> np.ndarray:
    """Rough per-frame noise at zero OD from the MAD of a 4-neighbour Laplacian (variance 20 σ²)."""
    out = np.empty(od.shape[0])
    kern = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float)
    for k, frame in enumerate(od):
        finite = np.isfinite(frame)
        f = np.where(finite, frame, 0.0)
        lap = ndimage.convolve(f, kern, mode="reflect") / np.sqrt(20.0)
        scale = np.exp(np.clip(ndimage.uniform_filter(f, 3), -1, 6) / 2.0)
        ok = ndimage.binary_erosion(finite, iterations=1, border_value=0)
        v = (lap / scale)[ok]
        out[k] = 1.4826 * np.median(np.abs(v - np.median(v))) if v.size >= 10 else np.nan
    return out


def od_noise_scale(od: np.ndarray, *, max_rank: int = 10) -> np.ndarray:
    """Per-frame OD noise at zero OD, ``σ₀(E)``, assuming Poisson counts: ``σ(E, x) = σ₀(E) e^{OD/2}``.

    The spectra of a lamella are a mixture of a few phases, so the stack is low-rank plus noise. The
    stack, whitened per frame by a rough noise level (MAD of a Laplacian), is decomposed by SVD and
    truncated at the Gavish–Donoho threshold; the residual of that low-rank model, divided by
    ``exp(OD/2)``, gives ``σ₀(E)`` as a robust (MAD) standard deviation per frame, corrected for the
    degrees of freedom the model takes. This measures the per-pixel noise even when the frames were
    interpolated (drift correction correlates neighbouring pixels and fools purely spatial estimates).

    Parameters
    ----------
    od : ndarray, shape (n_energy, ny, nx)
        OD frames (pixels with NaN in any frame are ignored).
    max_rank : int
        Most components the low-rank model may keep.

    Returns
    -------
    ndarray, shape (n_energy,)
    """
    od = np.asarray(od, dtype=float)
    n_e = od.shape[0]
    rough = _laplacian_noise(od)
    bad = ~np.isfinite(rough) | (rough <= 0)
    if bad.all():
        return np.full(n_e, 1e-3)
    rough[bad] = np.median(rough[~bad])
    x = od.reshape(n_e, -1).T
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] < 4 * n_e or n_e < 4:
        return rough
    scale = rough[None, :]
    y = x / scale
    mean = y.mean(axis=0)
    s, vt = _singular_values_vectors(y - mean)
    thr, _ = optimal_rank_threshold(s, y.shape)
    k = int(min(max(np.sum(s > thr), 1), max_rank, n_e - 2))
    x_hat = (((y - mean) @ vt[:k].T) @ vt[:k] + mean) * scale
    r = (x - x_hat) / np.exp(np.clip(x_hat, -1, 6) / 2.0)
    mad = 1.4826 * np.median(np.abs(r - np.median(r, axis=0)), axis=0)
    out = mad * np.sqrt(n_e / (n_e - k))
    bad = ~np.isfinite(out) | (out <= 0)
    out[bad] = rough[bad]
    return out


# ----------------------------------------------------------------------------------------------------------
# signatures
# ----------------------------------------------------------------------------------------------------------

def _windows(energies_ev: np.ndarray, edge: str | None):
    """Boolean pre-edge and resonance windows for an edge (from the tabulated onset)."""
    e = np.asarray(energies_ev, dtype=float)
    if edge in EDGES:
        onset = EDGES[edge].onset_ev
    else:  # unknown edge: the steepest rise of the mean spectrum is not available here; use the range
        onset = e[0] + 0.3 * (e[-1] - e[0])
    pre = e < onset - 4.5
    if pre.sum() < 2:
        pre = e <= np.quantile(e, 0.15)
    res = (e >= onset - 4.0) & (e <= onset + 4.0)
    if res.sum() < 1:
        res = ~pre
    return pre, res


def edge_signature(energies_ev: np.ndarray, od: np.ndarray, edge: str | None,
                   sigma0: np.ndarray | float | None = None) -> dict:
    """Resonance and absorption of spectra across one edge.

    Parameters
    ----------
    energies_ev : ndarray, shape (n_energy,)
    od : ndarray, shape (..., n_energy)
        Spectra.
    edge : str or None
        Edge name (``"Ni-L"``, ``"S-L"`` …) for the windows (pre-edge below onset − 4.5 eV, resonance
        onset ± 4 eV, onsets from :data:`ceimap.segment.edges.EDGES`).
    sigma0 : float or ndarray (n_energy,), optional
        OD noise at zero OD; with it the result also holds signal-to-noise ratios.

    Returns
    -------
    dict
        ``resonance`` (mean OD over the resonance window above the extrapolated linear pre-edge baseline),
        ``absorption`` (mean OD over all energies), and with ``sigma0`` ``resonance_snr``,
        ``absorption_snr`` (same leading shape as ``od``).
    """
    e = np.asarray(energies_ev, dtype=float)
    od = np.asarray(od, dtype=float)
    pre, res = _windows(e, edge)
    ep = e[pre]
    a = np.stack([np.ones_like(ep), ep - ep.mean()], axis=1)
    coef = np.linalg.lstsq(a, np.moveaxis(od[..., pre], -1, 0).reshape(pre.sum(), -1), rcond=None)[0]
    er = e[res] - ep.mean()
    base = coef[0][None, :] + er[:, None] * coef[1][None, :]          # (n_res, n_pix)
    resonance = (np.moveaxis(od[..., res], -1, 0).reshape(res.sum(), -1) - base).mean(axis=0)
    resonance = resonance.reshape(od.shape[:-1])
    out = {"resonance": resonance, "absorption": od.mean(axis=-1)}
    if sigma0 is not None:
        s0 = np.broadcast_to(np.asarray(sigma0, dtype=float), e.shape)
        # noise of the resonance estimate: window mean minus extrapolated baseline (propagated)
        pinv = np.linalg.pinv(a)                                          # (2, n_pre)
        lin = np.zeros((res.sum(), e.size))
        lin[:, np.nonzero(res)[0]] = np.eye(res.sum())
        lin[:, np.nonzero(pre)[0]] -= (np.stack([np.ones_like(er), er], 1) @ pinv)
        g = lin.mean(axis=0)
        sd_res = np.sqrt(np.sum((g * s0) ** 2))
        sd_abs = np.sqrt(np.sum(s0 ** 2)) / e.size
        out["resonance_snr"] = resonance / sd_res
        out["absorption_snr"] = out["absorption"] / sd_abs
    return out


def name_spectrum(spectra: dict, sigma0: dict, *, snr: float = 5.0) -> str:
    """Name one spectrum (or a class mean) from its signatures: ``"nmc"``, ``"electrolyte"`` or ``"void"``.

    Parameters
    ----------
    spectra : dict of str to (energies_ev, od)
        Spectrum per edge.
    sigma0 : dict of str to float or ndarray
        Noise of the spectrum per edge (OD, per energy or one value).
    snr : float
        Signal-to-noise ratio above which a resonance or an absorption counts as present.

    Returns
    -------
    str
        ``"nmc"`` when the Ni L3 resonance is present; else ``"electrolyte"`` when the S L resonance is
        present or there is absorption at any edge (Ni-free matter in a sulfide composite); else
        ``"void"`` (no absorption at any edge).
    """
    sig = {edge: edge_signature(e, np.asarray(od)[None], edge, sigma0[edge])
           for edge, (e, od) in spectra.items()}
    if "Ni-L" in sig and sig["Ni-L"]["resonance_snr"][0] > snr:
        return "nmc"
    if "S-L" in sig and sig["S-L"]["resonance_snr"][0] > snr:
        return "electrolyte"
    if any(s["absorption_snr"][0] > snr for s in sig.values()):
        return "electrolyte"
    return "void"


# ----------------------------------------------------------------------------------------------------------
# STXM-grid chemistry
# ----------------------------------------------------------------------------------------------------------

def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    v = values[np.isfinite(values)]
    return float(threshold_otsu(v)) if v.size > 1 and np.ptp(v) > 0 else float(np.median(v))


def _normalised_average(cube: np.ndarray, mask: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian average of ``cube`` (n, ny, nx) over ``mask`` pixels only; returns (average, weight)."""
    wsum = ndimage.gaussian_filter(mask.astype(float), sigma_px, mode="nearest")
    out = np.empty_like(cube)
    for k in range(cube.shape[0]):
        out[k] = ndimage.gaussian_filter(np.where(mask, cube[k], 0.0), sigma_px, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= wsum
    return out, wsum


def _open_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """``ndimage.binary_opening(mask, structure=skimage.morphology.disk(radius))``, from two distance transforms.

    A pixel survives the erosion when no background pixel (nor any pixel beyond the image border:
    ``border_value=0``) lies within ``radius``, i.e. its exact Euclidean distance to the background
    exceeds ``radius``; the dilation adds every pixel within ``radius`` of a survivor. Distances between
    pixel centres are square roots of integers, so both comparisons are exact and the result is the same
    pixel for pixel, at a cost independent of the radius (the direct opening grows as its square).
    """
    padded = np.pad(np.asarray(mask, bool), 1)            # the outside of the image is background
    eroded = ndimage.distance_transform_edt(padded) > radius
    if not eroded.any():
        return np.zeros(np.shape(mask), bool)
    return (ndimage.distance_transform_edt(~eroded) <= radius)[1:-1, 1:-1]


def split_empty(empty: np.ndarray, pixel_size_nm: float, *, lamella_edge_nm: float = 1000.0,
                neck_nm: float = 150.0, vacuum: np.ndarray | None = None,
                field: np.ndarray | None = None) -> np.ndarray:
    """Split empty pixels into outside-the-lamella (True) and voids (False).

    An empty region is outside when it runs along the field border for at least ``lamella_edge_nm`` (the
    lamella's edge crosses the field; a pore touching the border does so over its own width only), or
    when it mostly overlaps ``vacuum`` (e.g. outside found on another grid). The image often joins a void
    to the outside through a dark neck (a thin wall lost in the blur, curtaining stripes), so regions are
    judged on the empty mask opened with discs ``lamella_edge_nm / 2`` across (the lamella edge is smooth
    on the scale of its contact with the border); what the opening leaves beside the outside is the
    edge's fringe, unless it reaches deeper than ``neck_nm`` beyond it, lies off the field border and
    opens onto the outside through a mouth narrower than itself — a pore behind a neck, which stays a
    void (each of its pixels follows the nearer of the pore's body and the outside).

    Parameters
    ----------
    empty : ndarray of bool, shape (ny, nx)
    pixel_size_nm : float
    lamella_edge_nm : float
        Minimum contact with the field border of an outside region.
    neck_nm : float
        How far beyond the outside proper a pore must reach to be a void rather than fringe.
    vacuum : ndarray of bool, optional
    field : ndarray of bool, optional
        The measured field (default: the whole image); its border is where the lamella edge is sought.

    Returns
    -------
    ndarray of bool
        True where empty and outside.
    """
    empty = np.asarray(empty, bool)
    if not empty.any():
        return np.zeros(empty.shape, bool)
    border = np.zeros(empty.shape, bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    if field is not None:
        border = (border | ndimage.binary_dilation(~field)) & field

    def outside_ids(lab, n):
        contact = np.bincount(lab[border], minlength=n + 1) * pixel_size_nm
        out = contact >= lamella_edge_nm
        if vacuum is not None:
            over = np.bincount(lab[vacuum & empty], minlength=n + 1)
            size = np.bincount(lab.ravel(), minlength=n + 1)
            out |= over > 0.5 * np.maximum(size, 1)
        out[0] = False
        return out

    # the lamella edge is smooth on the scale of the contact it must have with the border: the outside
    # proper is the union of discs half that length across which fit in the empty mask (the field
    # border is not a wall: the mask is padded by replication)
    r = max(int(lamella_edge_nm / 4.0 / float(pixel_size_nm)), 1)
    core = _open_disk(np.pad(empty, r + 1, mode="edge"), r)
    core = core[r + 1:-r - 1, r + 1:-r - 1] & empty
    core_lab, n_core = ndimage.label(core)
    seeds = outside_ids(core_lab, n_core)[core_lab]
    rest = empty & ~seeds
    rest_lab, n_rest = ndimage.label(rest)
    if n_rest == 0:
        return seeds
    # what the discs leave is the edge's fringe unless it reaches deeper than ``neck_nm`` beyond the
    # outside proper: then it holds a void (a pore joined to the outside through a dark neck)
    if seeds.any():
        d_seed = ndimage.distance_transform_edt(~seeds) * float(pixel_size_nm)
    else:
        d_seed = np.full(empty.shape, np.inf)
    body = rest & (d_seed > neck_nm)
    has_body = np.bincount(rest_lab[body], minlength=n_rest + 1) > 0
    mouth = ndimage.binary_dilation(seeds) & rest
    mouth_nm = np.bincount(rest_lab[mouth], minlength=n_rest + 1) * float(pixel_size_nm)
    touches = mouth_nm > 0
    # ... and only when it opens onto the outside through a mouth narrower than itself (a bay of the
    # lamella edge is widest at its mouth; a pore behind a neck is wider than the neck)
    width_nm = 2.0 * np.asarray(ndimage.maximum(ndimage.distance_transform_edt(rest), rest_lab,
                                                np.arange(n_rest + 1)), float) * float(pixel_size_nm)
    # (what runs along the field border beside the outside is the outside: the edge leaving the field)
    on_border = np.bincount(rest_lab[border], minlength=n_rest + 1) > 0
    has_body &= ~touches | ((mouth_nm < width_nm) & ~on_border)
    body &= has_body[rest_lab]
    rest_out = (~has_body | ~touches) & (touches | outside_ids(rest_lab, n_rest))
    rest_out[0] = False
    out = seeds | rest_out[rest_lab]
    # a region touching the outside and holding a void body: each pixel follows the nearer of the two
    mixed = (has_body & touches)[rest_lab] & rest
    if mixed.any():
        d_body = ndimage.distance_transform_edt(~body) * float(pixel_size_nm)
        out |= mixed & (d_seed <= d_body)
    return out


def _per_edge(function, edges: list) -> dict:
    """``{edge: function(edge)}``, the edges in threads of their own (independent whole-array numpy / ndimage
    work, which releases the GIL: 1.0 s of the 3.6 s chemistry of a two-edge lamella; one thread in a batch
    worker, :func:`ceimap.segment.workers.thread_count`); the same values as a loop."""
    n_threads = min(len(edges), thread_count())
    if n_threads < 2:
        return {e: function(e) for e in edges}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_threads) as threads:
        return dict(zip(edges, threads.map(function, edges)))


def _unmix_edge(cube: np.ndarray, valid: np.ndarray, nmc_core: np.ndarray, ely_core: np.ndarray,
                sigma0: np.ndarray, local_sigma_px: float, ely_sigma_px: float, thickness_scales: tuple) -> dict:
    """One edge's per-pixel unmixing in transmission (:func:`classify_stxm`): local NMC and electrolyte
    references, each at a thinner and a thicker version, vacuum, and a soft sum-to-one row.

    Returns
    -------
    dict
        ``fractions`` (ny, nx, 3) NMC / electrolyte / empty, ``residual`` (ny, nx, n_energy) weighted by the
        noise, ``references`` (global NMC and electrolyte OD spectra), ``fit_inputs`` (transmissions,
        references and noise of the fit, each with the sum-to-one row).
    """
    n_e, ny, nx = cube.shape
    cube = np.where(valid[None], cube, 0.0)
    trans = np.exp(-np.clip(cube, -1.0, 8.0))
    ok_nmc = nmc_core & valid
    ok_ely = ely_core & valid
    local = []
    for ok, sig_px in ((ok_nmc, local_sigma_px), (ok_ely, ely_sigma_px)):
        if ok.any():
            glob = trans[:, ok].mean(axis=1)
            loc, wsum = _normalised_average(trans, ok, sig_px)
            loc[:, wsum < 1e-3] = glob[:, None]
        else:
            glob = np.ones(n_e)
            loc = np.ones_like(trans)
        local.append((glob, loc))
    references = {"nmc": -np.log(local[0][0]), "electrolyte": -np.log(local[1][0])}
    t_pix = np.moveaxis(trans, 0, -1).reshape(-1, n_e)
    # each phase at a thinner and a thicker version (T**k): lamella wedge, density and sub-pixel
    # porosity change the amount of a phase along the beam (linear in OD, not in T); a non-negative
    # combination of the two brackets any thickness in between
    refs = []
    for glob, loc in local:
        t_loc = np.clip(np.moveaxis(loc, 0, -1).reshape(-1, n_e), 1e-6, 1.0)
        refs += [t_loc ** k for k in thickness_scales]
    refs.append(np.ones((ny * nx, n_e)))
    refs = np.stack(refs, axis=1)
    n_k = len(thickness_scales)
    # noise of T: sigma_T = T * sigma_OD = sigma0 * exp(-OD / 2)
    sd = sigma0[None, :] * np.sqrt(np.clip(t_pix, 1e-4, None))
    # areal fractions cover the pixel: a soft sum-to-one row (sd 0.05) lifts the degeneracy of a
    # spectrally flat phase (electrolyte at Ni-L) with vacuum
    t_aug = np.concatenate([t_pix, np.ones((ny * nx, 1))], axis=1)
    refs_aug = np.concatenate([refs, np.ones(refs.shape[:2] + (1,))], axis=2)
    sd_aug = np.concatenate([sd, np.full((ny * nx, 1), 0.05)], axis=1)
    fit = nnls_fit(t_aug, refs_aug, constant=False, weights=1.0 / sd_aug)
    model = np.einsum("pj,pjf->pf", fit.abundances, refs)
    ab = fit.abundances
    fractions = np.stack([ab[:, :n_k].sum(axis=1), ab[:, n_k:2 * n_k].sum(axis=1), ab[:, -1]],
                         axis=1).reshape(ny, nx, 3)
    return {"fractions": fractions, "residual": ((t_pix - model) / sd).reshape(ny, nx, n_e),
            "references": references, "fit_inputs": (t_aug, refs_aug, sd_aug)}


def classify_stxm(cubes: dict, energies: dict, pixel_size_nm: float, *, psf_fwhm_nm: float = 50.0,
                  interphase_max_nm: float = 400.0, z_tail: float = 0.995,
                  thickness_scales: tuple = (0.7, 1.3), sigma0: dict | None = None) -> dict:
    """Chemistry on one STXM grid: phase fractions, interphase score and classes.

    Parameters
    ----------
    cubes : dict of str to ndarray (n_energy, ny, nx)
        OD per edge on a common grid (NaN where an edge does not reach).
    energies : dict of str to ndarray
        Energies per edge (eV).
    pixel_size_nm : float
        Pixel size of the common grid.
    psf_fwhm_nm : float
        STXM spot size (zone-plate resolution), sets the core erosion and the boundary band.
    interphase_max_nm : float
        Thickest interphase expected (tens to a few hundred nm): electrolyte farther than this from NMC
        is bulk electrolyte, and interphase is searched for within this distance (+ PSF) of NMC.
    z_tail : float
        Quantile of the null (core pixels) interphase score used as the detection threshold.
    thickness_scales : tuple of float
        Each reference enters the fit as ``T_ref ** k`` for these ``k`` (thinner / thicker versions), so
        that changes of lamella thickness, density and sub-pixel porosity (±30 %) are not residual.
    sigma0 : dict, optional
        Noise ``σ₀(E)`` per edge (estimated with :func:`od_noise_scale` when omitted).

    Returns
    -------
    dict
        ``fractions`` (3, ny, nx) NMC / electrolyte / empty, ``interphase_z``, ``interphase`` (bool),
        ``classes`` (uint8, codes 0–4), ``probabilities`` (5, ny, nx), ``nmc_core``, ``electrolyte_core``,
        ``references`` (per edge: ``nmc`` mean, ``electrolyte``), ``sigma0``, ``interphase_rank``
        (per edge), ``z_threshold``, ``signatures``.
    """
    edges = list(cubes)
    ny, nx = next(iter(cubes.values())).shape[1:]
    px = float(pixel_size_nm)
    psf_px = psf_fwhm_nm / px
    if sigma0 is None:
        sigma0 = {e: od_noise_scale(cubes[e]) for e in edges}
    valid = {e: np.all(np.isfinite(cubes[e]), axis=0) for e in edges}
    sig = {e: edge_signature(energies[e], np.moveaxis(np.nan_to_num(cubes[e]), 0, -1), e, sigma0[e])
           for e in edges}

    # --- empty: absorption consistent with zero at every edge (combined SNR over edges)
    snr2 = np.zeros((ny, nx))
    for e in edges:
        snr2 += np.where(valid[e], sig[e]["absorption_snr"], 0.0) ** 2 * np.sign(sig[e]["absorption_snr"])
    abs_snr = np.sign(snr2) * np.sqrt(np.abs(snr2))

    # --- NMC core: Ni resonance (Otsu between Ni-free and Ni-rich), eroded by the PSF
    ni_edge = "Ni-L" if "Ni-L" in edges else None
    if ni_edge is not None:
        ni_res = np.where(valid[ni_edge], sig[ni_edge]["resonance"], np.nan)
        thr_ni = _otsu(ni_res[sig[ni_edge]["resonance_snr"] > 3]) if np.any(
            sig[ni_edge]["resonance_snr"] > 3) else np.inf
        ni_rich = ni_res > thr_ni
    else:
        ni_rich = np.zeros((ny, nx), bool)
    erode = max(int(np.ceil(psf_px)), 1)
    nmc_core = ndimage.binary_erosion(ni_rich, iterations=erode) if ni_rich.any() else ni_rich
    if nmc_core.sum() < 10:
        nmc_core = ni_rich
    # --- empty: absorption below the noise (3 sigma) away from NMC
    absorbing = abs_snr > 3.0
    # --- electrolyte core: absorbing, no Ni, far from NMC (beyond the thickest interphase + PSF)
    d_nmc_nm = ndimage.distance_transform_edt(~ni_rich) * px if ni_rich.any() else np.full((ny, nx), np.inf)
    non_ni = absorbing & ~ni_rich
    if ni_edge is not None:
        # where Ni-L did not measure, the distance to NMC is unknown: no electrolyte core there
        non_ni &= (sig[ni_edge]["resonance_snr"] < 3.0) & valid[ni_edge]
    far = d_nmc_nm > interphase_max_nm + psf_fwhm_nm
    ely_core = ndimage.binary_erosion(non_ni, iterations=erode) & far
    if ely_core.sum() < 10:
        order = np.argsort(-np.where(non_ni, d_nmc_nm, -1).ravel())
        ely_core = np.zeros(ny * nx, bool)
        ely_core[order[:max(10, int(0.2 * non_ni.sum()))]] = True
        ely_core = ely_core.reshape(ny, nx) & non_ni
    # --- references per edge, as transmissions: a pixel that straddles a boundary transmits the
    # area-weighted mean of its phases' transmissions (lateral partial volume is linear in
    # T = exp(-OD), not in OD); vacuum transmits 1. Local NMC (Gaussian over cores, ~ a particle
    # radius: each particle its own Ni valence) and local electrolyte (~1 µm: lamella thickness wedge).
    local_sigma_px = max(250.0 / px, 2.0)
    ely_sigma_px = max(1000.0 / px, 4.0)
    unmixed = _per_edge(lambda e: _unmix_edge(cubes[e], valid[e], nmc_core, ely_core, sigma0[e], local_sigma_px,
                                              ely_sigma_px, thickness_scales), edges)
    fractions = {e: unmixed[e]["fractions"] for e in edges}
    resid_w = {e: unmixed[e]["residual"] for e in edges}
    refs_out = {e: unmixed[e]["references"] for e in edges}
    fit_inputs = {e: unmixed[e]["fit_inputs"] for e in edges}
    n_k = len(thickness_scales)

    # combine: NMC from Ni-L (Ni is specific to NMC), electrolyte from S-L where it exists (S is
    # specific to the electrolyte), empty from the reference edge
    main = ni_edge if ni_edge is not None else edges[0]
    f_nmc = fractions[main][..., 0] if ni_edge is not None else np.zeros((ny, nx))
    f_ely = fractions[main][..., 1]
    f_empty = fractions[main][..., 2]
    s_edge = "S-L" if "S-L" in edges else None
    if s_edge is not None and s_edge != main:
        f_ely = np.where(valid[s_edge], fractions[s_edge][..., 1], f_ely)
    # where the main edge did not measure, another edge's own fit (its NMC reference, from the NMC cores
    # the main edge found, is the non-resonant absorption of NMC at that edge) gives all three
    known = valid[main].copy()
    for e in sorted(edges, key=lambda e: e != s_edge):
        alt = valid[e] & ~known
        if e == main or not alt.any():
            continue
        f_nmc = np.where(alt, fractions[e][..., 0], f_nmc)
        f_ely = np.where(alt, fractions[e][..., 1], f_ely)
        f_empty = np.where(alt, fractions[e][..., 2], f_empty)
        known |= alt
    f_nmc = np.clip(f_nmc, 0, 1.5)
    f_ely = np.clip(f_ely, 0, 1.5)
    f_empty = np.clip(f_empty, 0, 1.5)
    frac = np.stack([f_nmc, f_ely, f_empty])
    frac = frac / np.maximum(frac.sum(axis=0, keepdims=True), 1e-9)
    if ni_edge is not None and not valid[ni_edge].all():
        # NMC seen only by the other edges counts for the distance to NMC too
        nmc_any = ni_rich | (~valid[ni_edge] & known & (frac[0] > 0.5))
        if nmc_any.any():
            d_nmc_nm = ndimage.distance_transform_edt(~nmc_any) * px

    # --- interphase: systematic residual near NMC, not NMC itself
    is_nmc = frac[0] > 0.5          # NMC covers most of the pixel
    band = (~is_nmc) & absorbing & (d_nmc_nm <= interphase_max_nm + psf_fwhm_nm) & (d_nmc_nm > 0) & known
    null = (nmc_core | ely_core) & known
    z_total = np.zeros((ny, nx))
    n_edges = np.zeros((ny, nx))
    ranks = {}
    n_used = 0
    for e in edges:
        r = resid_w[e]
        ok_band = band & valid[e]
        ok_null = null & valid[e]
        if ok_band.sum() < 20 or ok_null.sum() < 20:
            ranks[e] = 0
            continue
        rb = r[ok_band]
        s, vt = _singular_values_vectors(rb)
        # noise level of the whitened residuals from the null pixels (≈1 when the noise model holds)
        noise = float(np.sqrt(np.mean(r[ok_null] ** 2)))
        thr, _ = optimal_rank_threshold(s, rb.shape, noise_sigma=noise)
        rank = int(np.sum(s > thr))
        ranks[e] = rank
        if rank == 0:
            continue
        v = vt[0]
        proj = r @ v
        if np.mean(proj[ok_band]) < 0:
            v, proj = -v, -proj
        null_sd = 1.4826 * np.median(np.abs(proj[ok_null] - np.median(proj[ok_null])))
        z_e = (proj - np.median(proj[ok_null])) / max(null_sd, 1e-12)
        z_total += np.where(valid[e], z_e, 0.0)
        n_edges += valid[e]
        n_used += 1
    if n_used:
        # Stouffer: each pixel's z-scores combined over the edges that measured it
        z_total /= np.sqrt(np.maximum(n_edges, 1.0))
        z_thr = max(float(np.quantile(z_total[null], z_tail)), 3.0)
        detected = band & (z_total > z_thr)
        f_int = np.zeros((ny, nx))
        if detected.sum() >= 10:
            # interphase endmember: the mean transmission of the most interphase-like pixels (upper decile
            # of the score: band centres, nearly pure); then unmix the band with it as a third phase
            top = detected & (z_total >= np.quantile(z_total[detected], 0.9))
            f_sum = np.zeros((ny, nx))
            n_sum = np.zeros((ny, nx))
            for e in edges:
                t_pix, refs, sd = fit_inputs[e]
                ok_top = (top & valid[e]).ravel()
                sel = (band & valid[e]).ravel()
                if ok_top.sum() < 5 or not sel.any():
                    continue
                t_int = t_pix[ok_top].mean(axis=0)
                # the interphase too at a thinner and a thicker version (the lamella wedge changes it
                # like the other phases); the last column is the sum-to-one row, kept at 1
                t_int_k = np.stack([np.concatenate([np.clip(t_int[:-1], 1e-6, 1.0) ** k, t_int[-1:]])
                                    for k in thickness_scales])
                refs_int = np.concatenate([refs[sel], np.broadcast_to(t_int_k, (sel.sum(),) + t_int_k.shape)],
                                          axis=1)
                fit = nnls_fit(t_pix[sel], refs_int, constant=False, weights=1.0 / sd[sel])
                ab = fit.abundances
                f_e = np.zeros(ny * nx)
                f_e[sel] = ab[:, -n_k:].sum(axis=1) / np.maximum(ab.sum(axis=1), 1e-9)
                # the endmember is the mean of the top pixels, so their mean fraction is 1 by definition;
                # per-pixel NNLS hands some of it to absent phases (noise only pushes abundances up), a
                # bias the top pixels measure
                f_top = float(np.mean(f_e[ok_top]))
                if f_top > 0.5:
                    f_e /= f_top
                f_sum += f_e.reshape(ny, nx)
                n_sum += sel.reshape(ny, nx)
                refs_out[e]["interphase"] = -np.log(np.clip(t_int[:-1], 1e-6, None))
            f_int = np.where(n_sum > 0, f_sum / np.maximum(n_sum, 1), 0.0)
        z_full = np.nan
        # keep the amounts of the detected pixels and of their band neighbours (the PSF spreads a band
        # over about one pixel more; dropping those tails would thin the band)
        near_detected = ndimage.binary_dilation(detected) & band
        f_int = np.where(near_detected, np.clip(f_int, 0, 1), 0.0)
        measured_int = near_detected
        interphase = detected & (f_int >= 0.5)
    else:
        z_thr = z_full = np.inf
        f_int = np.zeros((ny, nx))
        measured_int = np.zeros((ny, nx), bool)
        interphase = np.zeros((ny, nx), bool)

    # --- classes on the STXM grid
    empty = (frac[2] > np.maximum(frac[0], frac[1])) & known
    outside = split_empty(empty, px, field=known)
    classes = np.full((ny, nx), ELECTROLYTE, np.uint8)
    classes[is_nmc] = NMC
    classes[empty & ~outside] = VOID
    classes[outside] = OUTSIDE
    classes[interphase] = INTERPHASE
    p_int = f_int
    prob = np.zeros((5, ny, nx))
    prob[NMC] = frac[0]
    prob[ELECTROLYTE] = frac[1] * (1 - p_int)
    prob[INTERPHASE] = frac[1] * p_int
    prob[OUTSIDE] = frac[2] * outside
    prob[VOID] = frac[2] * ~outside
    prob[:, ~known] = np.nan
    frac[:, ~known] = np.nan
    return {
        "fractions": frac, "interphase_z": z_total, "interphase": interphase, "classes": classes,
        "probabilities": prob, "known": known, "nmc_core": nmc_core, "electrolyte_core": ely_core, "band": band,
        "interphase_fraction": p_int, "interphase_measured": measured_int, "z_full": z_full,
        "references": refs_out, "sigma0": sigma0, "interphase_rank": ranks, "z_threshold": z_thr,
        "absorption_snr": abs_snr,
    }


def tolerant_f1(pred: np.ndarray, truth: np.ndarray, tolerance_px: float) -> dict:
    """F1 of a thin structure (e.g. the interphase band) with a spatial tolerance.

    A predicted pixel is a true positive when a truth pixel lies within ``tolerance_px`` of it (precision);
    a truth pixel is found when a predicted pixel lies within ``tolerance_px`` (recall).

    Parameters
    ----------
    pred, truth : ndarray of bool, shape (ny, nx)
    tolerance_px : float
        Tolerance in pixels of these maps (e.g. one STXM pixel in SEM pixels).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (NaN when both maps are empty), ``n_pred``, ``n_true``.

    Examples
    --------
    >>> t = np.zeros((1, 10), bool); t[0, 4] = True
    >>> p = np.zeros((1, 10), bool); p[0, 6] = True
    >>> tolerant_f1(p, t, 2)["f1"], tolerant_f1(p, t, 1)["f1"]
    (1.0, 0.0)
    """
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    n_p, n_t = int(pred.sum()), int(truth.sum())
    if n_p == 0 and n_t == 0:
        return {"precision": np.nan, "recall": np.nan, "f1": np.nan, "n_pred": 0, "n_true": 0}
    d_truth = ndimage.distance_transform_edt(~truth) if n_t else np.full(truth.shape, np.inf)
    d_pred = ndimage.distance_transform_edt(~pred) if n_p else np.full(pred.shape, np.inf)
    precision = float(np.mean(d_truth[pred] <= tolerance_px)) if n_p else 0.0
    recall = float(np.mean(d_pred[truth] <= tolerance_px)) if n_t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": float(f1), "n_pred": n_p, "n_true": n_t}


# ----------------------------------------------------------------------------------------------------------
# SEM resolution
# ----------------------------------------------------------------------------------------------------------

def _sem_features(sem: np.ndarray, pixel_size_nm: float) -> np.ndarray:
    """Multiscale intensity / edge / texture features of the SEM image, from ~1 pixel to ~200 nm."""
    from skimage.feature import multiscale_basic_features

    img = np.asarray(sem, dtype=np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    sigma_max = max(200.0 / pixel_size_nm, 4.0)
    return multiscale_basic_features(img, sigma_min=1.0, sigma_max=sigma_max, num_sigma=5).astype(np.float32)


def _gaussian_filter_fft(images, sigma_px: float, truncate: float = 4.0):
    """``ndimage.gaussian_filter(image, sigma_px)`` (mode ``"reflect"``, kernel truncated at ``truncate``
    sigma) of each 2-D image in ``images``, by FFT: the same truncated, normalised kernel and the same
    boundary extension, equal to the direct filter up to rounding (~1e-15 relative), at a cost independent
    of the kernel width (the direct filter's grows with it: 2·4σ + 1 taps per pixel and axis)."""
    from scipy import fft

    images = [np.asarray(im, dtype=float) for im in images]
    radius = int(truncate * float(sigma_px) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    phi = np.exp(-0.5 / float(sigma_px) ** 2 * x ** 2)
    phi /= phi.sum()
    ny, nx = images[0].shape
    # the reflect extension (d c b a | a b c d | d c b a) is numpy's "symmetric" pad; a circular
    # convolution as long as the padded image wraps nothing into the pixels kept
    n0, n1 = fft.next_fast_len(ny + 2 * radius), fft.next_fast_len(nx + 2 * radius, real=True)
    kernel = fft.fft(phi, n0)[:, None] * fft.rfft(phi, n1)[None, :]
    out = []
    for im in images:
        padded = np.pad(im, radius, mode="symmetric")
        conv = fft.irfft2(fft.rfft2(padded, (n0, n1)) * kernel, (n0, n1))
        out.append(conv[2 * radius:2 * radius + ny, 2 * radius:2 * radius + nx])
    return out


def _local_level(image, mask, sigma_px):
    """Local mean of ``image`` over ``mask`` (Gaussian-weighted, width ``sigma_px``); global median where
    the mask has no weight nearby. (The level only ever decides which side of a threshold a pixel is on:
    the Gaussians are taken by FFT, :func:`_gaussian_filter_fft`, since they are tens of pixels wide.)"""
    num, den = _gaussian_filter_fft([np.where(mask, image, 0.0), mask.astype(float)], sigma_px)
    glob = float(np.median(image[mask]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-3, num / den, glob)


def _local_contrast(smoothed, region, surroundings, band_px, *, inner_margin_px):
    """Which pixels lie on ``region``'s side of the local midpoint grey level between it and its surroundings.

    The region's level is taken over its pixels deeper than ``inner_margin_px``, the surroundings' level
    over ``surroundings`` pixels farther than ``band_px`` from the region, both as local means (width
    ``4 * band_px``); contrast of either sign works.

    Returns
    -------
    (region_side, d_in, d_out, level_surroundings) or None
        Boolean map of the region's side, the distance maps inside / outside the region (px) and the
        local surroundings level; None when either reference has fewer than 10 pixels.
    """
    d_in = ndimage.distance_transform_edt(region)
    d_out = ndimage.distance_transform_edt(~region)
    inner = region & (d_in > inner_margin_px)
    outer = surroundings & (d_out > band_px)
    if inner.sum() < 10 or outer.sum() < 10:
        return None
    sigma_px = 4.0 * band_px
    level_in, level_out = _local_level(smoothed, inner, sigma_px), _local_level(smoothed, outer, sigma_px)
    region_side = np.sign(level_in - level_out) * (smoothed - 0.5 * (level_in + level_out)) > 0
    return region_side, d_in, d_out, level_out


def refine_nmc_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                          band_nm: float = 90.0) -> np.ndarray:
    """Snap the NMC boundary to the SEM contrast with a local threshold.

    Near the NMC boundary of a first label map (within ``band_nm``) and inside NMC, a pixel is NMC when
    its lightly smoothed SEM grey value lies on the NMC side of the midpoint between the local NMC level
    (NMC pixels deeper than ``band_nm``) and the local level of its surroundings (electrolyte-textured
    pixels farther than ``band_nm``). Contrast of either sign works. Pixels that leave NMC become void
    when darker than the midpoint between the surroundings and the darkest (vacuum) level of the image
    — thin dark cracks —, else electrolyte.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_nm : float
        Half-width of the band where the boundary may move (about the STXM pixel + PSF).

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    nmc = label == NMC
    if not nmc.any() or nmc.all():
        return label
    r = max(band_nm / float(pixel_size_nm), 1.0)
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.0)
    contrast = _local_contrast(sm, nmc, label == ELECTROLYTE, r, inner_margin_px=r)
    if contrast is None:
        return label
    nmc_side, d_in, d_out, lvl_out = contrast
    candidate = nmc | (d_out <= r)
    new_nmc = candidate & nmc_side & (label != VOID) | (nmc & nmc_side)
    # keep NMC pieces of a meaningful size (bigger than the band), fill pinholes
    lab, n = ndimage.label(new_nmc)
    if n:
        sizes = np.bincount(lab.ravel())
        new_nmc &= sizes[lab] >= np.pi * r ** 2
    out = label.copy()
    gained = new_nmc & ~nmc
    lost = nmc & ~new_nmc
    out[gained] = NMC
    dark = float(np.percentile(sm, 1.0))
    void_thr = 0.5 * (lvl_out + dark)
    darker = np.sign(lvl_out - dark) * (void_thr - sm) > 0
    out[lost & darker] = VOID
    out[lost & ~darker] = ELECTROLYTE
    # pieces that left NMC and are mostly rimmed by NMC are cracks (empty), however grey the blur
    lost_lab, n_lost = ndimage.label(lost)
    if n_lost:
        rim = ndimage.binary_dilation(lost) & ~lost
        near = ndimage.grey_dilation(lost_lab, size=3)
        tot = np.bincount(near[rim], minlength=n_lost + 1)
        on_nmc = np.bincount(near[rim & new_nmc], minlength=n_lost + 1)
        crack = on_nmc >= 0.6 * np.maximum(tot, 1)
        crack[0] = False
        out[crack[lost_lab] & lost] = VOID
    return out


def refine_empty_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                            band_nm: float = 90.0) -> np.ndarray:
    """Snap the boundary between empty (void / vacuum) and electrolyte-textured pixels to the SEM contrast.

    Within ``band_nm`` of the empty regions of a first label map, a pixel is empty when its smoothed SEM
    grey value is on the empty side of the midpoint between the local empty level and the local
    electrolyte level; only pixels connected to the first empty regions can join them (isolated dark
    electrolyte pores stay electrolyte).

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_nm : float

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    empty = label == VOID
    ely = label == ELECTROLYTE
    if empty.sum() < 10 or ely.sum() < 10:
        return label
    r = max(band_nm / float(pixel_size_nm), 1.0)
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.5)
    contrast = _local_contrast(sm, empty, ely, r, inner_margin_px=0.25 * r)
    if contrast is None:
        return label
    empty_side, d_in, d_out, _ = contrast
    candidate = empty | (ely & (d_out <= r))
    new_empty = candidate & empty_side
    new_empty = ndimage.binary_propagation(new_empty & empty, mask=new_empty)
    out = label.copy()
    out[new_empty & ~empty] = VOID
    out[empty & ~new_empty & (d_in <= r)] = ELECTROLYTE
    return out


def mark_cracks(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                max_width_nm: float = 90.0, nmc_rim_fraction: float = 0.6,
                gap_nm: float = 60.0) -> np.ndarray:
    """Label thin dark pieces enclosed by NMC (cracks) as empty.

    Non-NMC pixels that disappear under a morphological opening with a disc of ``max_width_nm`` diameter
    are thin structures; a connected thin piece whose rim is at least ``nmc_rim_fraction`` NMC and whose
    darkest fifth is darker than the midpoint between the electrolyte level and the darkest level of the
    image is a crack. Electrolyte-filled gaps between particles are as thin but electrolyte-grey, and stay.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    max_width_nm : float
    nmc_rim_fraction : float
    gap_nm : float
        Widest gap between NMC on both sides taken for a crack whatever its grey level (transverse cracks
        are 20–60 nm wide: thinner than the STXM resolution, no electrolyte layer there can be confirmed).

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    from skimage.morphology import disk

    nmc = label == NMC
    ely = label == ELECTROLYTE
    if not nmc.any() or not ely.any():
        return label
    r = max(int(round(max_width_nm / 2.0 / pixel_size_nm)), 1)
    non = ~nmc
    opened = ndimage.binary_opening(np.pad(non, r + 1, constant_values=True), structure=disk(r))
    thin = non & ~opened[r + 1:-r - 1, r + 1:-r - 1]
    lab, n = ndimage.label(thin)
    if n == 0:
        return label
    sm = ndimage.gaussian_filter(np.asarray(sem_image, dtype=float), 1.0)
    ely_level = float(np.median(sm[ely]))
    dark_level = float(np.percentile(sm, 1.0))
    thr = 0.5 * (ely_level + dark_level)
    sign = np.sign(ely_level - dark_level)
    rim = ndimage.binary_dilation(thin) & ~thin
    near = ndimage.grey_dilation(lab, size=3)
    tot = np.bincount(near[rim], minlength=n + 1)
    on_nmc = np.bincount(near[rim & nmc], minlength=n + 1)
    order = np.argsort(lab.ravel(), kind="stable")
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    vals = sm.ravel()[order]
    out = label.copy()
    for i in range(1, n + 1):
        if counts[i] < 3 or on_nmc[i] < nmc_rim_fraction * max(tot[i], 1):
            continue
        piece = vals[starts[i]:starts[i + 1]]
        dark = np.percentile(piece, 20) if sign > 0 else np.percentile(piece, 80)
        if sign * (thr - dark) > 0:
            out[lab == i] = VOID
    # a crack that runs out to the particle surface joins the electrolyte there, so its thin piece is not
    # rimmed by NMC; and a crack thinner than the SEM blur is no darker than electrolyte. A gap with NMC on
    # both sides no wider than a crack (``gap_nm``: NMC closed by a disc that wide) cannot hold a
    # resolvable electrolyte layer: it is a crack, whatever its grey
    r_gap = max(int(round(gap_nm / 2.0 / pixel_size_nm)), 1)
    closed = ndimage.binary_closing(np.pad(nmc, r_gap + 1), structure=disk(r_gap))
    gap = ~nmc & closed[r_gap + 1:-r_gap - 1, r_gap + 1:-r_gap - 1]
    out[gap & (label == ELECTROLYTE)] = VOID
    return out


def resolve_thin_rims(label: np.ndarray, pixel_size_nm: float, *, max_width_nm: float = 50.0) -> np.ndarray:
    """Split electrolyte-textured rims thinner than the resolution between NMC and empty space.

    The SEM draws a bright edge along every solid/empty boundary and blurs it over a few pixels, so a
    boundary between NMC and a void often reads as a thin rim of electrolyte-like grey. A layer of
    electrolyte thinner than ``max_width_nm`` (the STXM resolution: the chemistry cannot confirm it) lying
    between NMC and empty pixels is taken for that boundary: each of its pixels joins the nearer of the two.

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    pixel_size_nm : float
    max_width_nm : float
        Widest rim (NMC-to-empty gap) resolved this way.

    Returns
    -------
    ndarray, same shape and dtype as ``label``

    Examples
    --------
    >>> lab = np.full((5, 12), 4); lab[:, :5] = 1; lab[:, 5:7] = 3
    >>> resolve_thin_rims(lab, 10.0)[0].tolist()
    [1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4]
    """
    nmc = label == NMC
    empty = label == VOID
    if not nmc.any() or not empty.any():
        return label
    d_nmc = ndimage.distance_transform_edt(~nmc)
    d_empty = ndimage.distance_transform_edt(~empty)
    rim = (label == ELECTROLYTE) & (d_nmc + d_empty <= 1.0 + max_width_nm / float(pixel_size_nm))
    out = label.copy()
    out[rim & (d_empty < d_nmc)] = VOID
    out[rim & (d_empty >= d_nmc)] = NMC
    return out


def _noise_matched_sigma(image: np.ndarray, contrast: float) -> float:
    """Gaussian sigma (pixels, 0.5–2) that brings the image's white noise to 1/2.326 of half ``contrast``.

    Smoothing with a Gaussian of sigma ``s`` divides white noise by ``2·sqrt(pi)·s``; the noise is the MAD of
    the 4-neighbour Laplacian. A midpoint threshold between two levels ``contrast`` apart then errs on 1 % of
    the pure pixels.
    """
    lap = ndimage.laplace(np.asarray(image, dtype=float))[1:-1, 1:-1] / np.sqrt(20.0)
    noise = 1.4826 * float(np.median(np.abs(lap - np.median(lap))))
    return float(np.clip(2.326 * noise / (0.5 * max(abs(contrast), 1e-12)) / (2.0 * np.sqrt(np.pi)), 0.5, 2.0))


def snap_nmc_boundaries(label: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, *,
                        band_px: float = 2.0) -> np.ndarray:
    """Place every NMC boundary at the midpoint grey level between NMC and the phase it actually meets.

    A pixel covered more than half by NMC is brighter (or darker, for reversed contrast) than the midpoint
    between the pure NMC level and the pure level of its neighbour. The earlier boundary steps threshold NMC
    against the level of its surroundings at large (electrolyte beyond the interphase), which is the wrong
    neighbour twice: where NMC meets a void or a crack, that midpoint lies too close to the NMC level and
    every void grows by a pixel (a thin crack by a pixel on each side); where it meets an interphase, the
    interphase's own level is the right one. Pixels within ``band_px`` of an NMC–empty boundary are
    re-decided against the pure empty level (median of empty pixels more than two pixels from any other
    class; the image's 1st percentile when there are too few), then pixels within ``band_px`` of an
    NMC–electrolyte boundary against the local level of the electrolyte-side pixels just beyond the band
    (``band_px`` to ``2·band_px + 1`` pixels from NMC: the interphase where there is one). The NMC level is
    the local mean of NMC deeper than 90 nm. The image is smoothed only as much as its noise needs for a
    1 % error rate at each contrast (:func:`_noise_matched_sigma`).

    Parameters
    ----------
    label : ndarray of int, shape (ny, nx)
        Texture classes (1 NMC, 3 electrolyte-like, 4 empty).
    sem_image : ndarray, shape (ny, nx)
    pixel_size_nm : float
    band_px : float
        How far (SEM pixels) a boundary may move: the spread of an edge between two thresholds.

    Returns
    -------
    ndarray, same shape and dtype as ``label``
    """
    image = np.asarray(sem_image, dtype=float)
    out = label.copy()
    nmc = out == NMC
    r = max(90.0 / float(pixel_size_nm), 1.0)
    inner = nmc & (ndimage.distance_transform_edt(nmc) > r)
    if inner.sum() < 10:
        return out
    lvl_inner = float(np.median(image[inner]))
    for other in (VOID, ELECTROLYTE):
        nmc = out == NMC
        mine = out == other
        if mine.sum() < 10:
            continue
        d_nmc = ndimage.distance_transform_edt(~nmc)
        if other == VOID:
            deep = mine & (ndimage.distance_transform_edt(mine) > 2)
            lvl = float(np.median(image[deep])) if deep.sum() >= 20 else float(np.percentile(image, 1.0))
            sm = ndimage.gaussian_filter(image, _noise_matched_sigma(image, lvl_inner - lvl))
        else:
            shell = mine & (d_nmc > band_px) & (d_nmc <= 2 * band_px + 1)
            if shell.sum() < 10:
                continue
            sm = ndimage.gaussian_filter(image, _noise_matched_sigma(image, lvl_inner - np.median(image[shell])))
            lvl = _local_level(sm, shell, 4.0 * r)
        lvl_nmc = _local_level(sm, inner, 4.0 * r)
        band = (nmc & (ndimage.distance_transform_edt(~mine) <= band_px)) | (mine & (d_nmc <= band_px))
        nmc_side = np.sign(lvl_nmc - lvl) * (sm - 0.5 * (lvl_nmc + lvl)) > 0
        out[band & nmc_side] = NMC
        out[band & ~nmc_side] = other
    return out


MIN_THICKNESS_CERTAINTY = 0.16
"""Least measured share of the along-surface smoothing weight for a thickness (one smoothing sigma beyond the
last measured pixel of a straight surface; :func:`interphase_thickness_map`)."""


def interphase_thickness_map(nmc: np.ndarray, electrolyte: np.ndarray, interphase_fraction: np.ndarray,
                             pixel_size_nm: float, *, max_nm: float = 450.0,
                             smooth_nm: float = 50.0, certainty: np.ndarray | None = None,
                             min_certainty: float = MIN_THICKNESS_CERTAINTY) -> np.ndarray:
    """Local interphase thickness at each NMC surface pixel from an interphase-fraction map.

    Every electrolyte-side pixel within ``max_nm`` of NMC hands its interphase fraction to its nearest
    NMC pixel; the sum times the pixel size is the thickness there (area per unit boundary length: the
    amount is conserved when the STXM PSF blurs a band), smoothed along the surface over ``smooth_nm``.

    Where the fraction was not measured everywhere (the edge of the STXM field cuts the surface), the
    smoothing is a *normalised convolution*: each surface pixel weighs in with the measured share of its
    electrolyte-side pixels (its certainty), so unmeasured pixels count as unknown rather than as "no
    interphase"; the amount is thereby carried along the surface into the unmeasured part as far as the
    smoothing reaches — where the measured share of the smoothing weight is at least ``min_certainty``
    (0.16: one smoothing sigma beyond the last measured pixel of a straight surface). Beyond, 0.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-textured (electrolyte or interphase) pixels.
    interphase_fraction : ndarray, shape (ny, nx)
        Fraction of interphase in each pixel (0–1), e.g. upsampled from STXM.
    pixel_size_nm : float
    max_nm : float
        Farthest an interphase pixel may be from NMC.
    smooth_nm : float
        Gaussian smoothing along the surface (sigma).
    certainty : ndarray, shape (ny, nx), optional
        Share (0–1) of each pixel that was measured; default everywhere measured.
    min_certainty : float
        Least measured share of the smoothing weight for a surface pixel to get a thickness.

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        Thickness in nm on NMC surface pixels (0 elsewhere).

    Examples
    --------
    >>> nmc = np.zeros((20, 40), bool); nmc[:, :20] = True
    >>> frac = np.zeros((20, 40)); frac[:, 20:25] = 1.0          # a 5-pixel band
    >>> t = interphase_thickness_map(nmc, ~nmc, frac, 10.0, smooth_nm=20.0)
    >>> float(np.round(t[10, 19], 6))
    50.0
    """
    geometry = _thickness_geometry(nmc, electrolyte, pixel_size_nm, max_nm=max_nm, smooth_nm=smooth_nm,
                                   certainty=certainty, min_certainty=min_certainty)
    return _thickness_from_geometry(geometry, interphase_fraction)


def _thickness_geometry(nmc, electrolyte, pixel_size_nm, *, max_nm, smooth_nm, certainty, min_certainty,
                        nearest=None) -> dict:
    """What :func:`interphase_thickness_map` computes from the class masks alone (not from the fractions):
    which electrolyte-side pixel hands its fraction to which NMC surface pixel, and the normalisation of
    the smoothing. Computed once, it serves every fraction map on the same masks
    (:func:`fit_interphase_thickness` evaluates one per iteration). ``nearest``: the precomputed
    ``distance_transform_edt(~nmc, return_indices=True)``."""
    px = float(pixel_size_nm)
    dist, (iy, ix) = nearest if nearest is not None else ndimage.distance_transform_edt(~nmc, return_indices=True)
    cand = electrolyte & ~nmc & (dist * px <= max_nm)
    flat_near = (iy * nmc.shape[1] + ix)[cand]
    surface = nmc & ~ndimage.binary_erosion(nmc, border_value=1)
    # only the surface pixels that received something from the electrolyte side count as that surface
    n_in = np.bincount(flat_near, minlength=nmc.size).reshape(nmc.shape)
    receiving = (n_in > 0) & surface
    if certainty is None:
        cert = receiving.astype(float)
    else:
        c = np.clip(np.nan_to_num(np.asarray(certainty, dtype=float)[cand]), 0.0, 1.0)
        n_meas = np.bincount(flat_near, weights=c, minlength=nmc.size).reshape(nmc.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            cert = np.where(receiving, n_meas / np.maximum(n_in, 1), 0.0)
    sig = max(smooth_nm / px, 0.5)
    den = ndimage.gaussian_filter(cert, sig, mode="constant")
    reach = ndimage.gaussian_filter(receiving.astype(float), sig, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        known = receiving & (den > 1e-6) & (den >= min_certainty * reach)
    return {"px": px, "shape": nmc.shape, "cand": cand, "flat_near": flat_near, "sigma_px": sig, "den": den,
            "known": known}


def _thickness_from_geometry(geometry: dict, interphase_fraction: np.ndarray) -> np.ndarray:
    """:func:`interphase_thickness_map` of one fraction map on precomputed :func:`_thickness_geometry`."""
    px, shape, cand = geometry["px"], geometry["shape"], geometry["cand"]
    acc = np.bincount(geometry["flat_near"], weights=np.clip(interphase_fraction[cand], 0, 1) * px,
                      minlength=cand.size).reshape(shape)
    num = ndimage.gaussian_filter(acc, geometry["sigma_px"], mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(geometry["known"], num / geometry["den"], 0.0)
    return t.astype(np.float32)



def stxm_view(sem_map: np.ndarray, matrix: np.ndarray, stxm_shape, sigma_nm: float,
              sem_pixel_nm: float) -> np.ndarray:
    """What an STXM pixel sees of an SEM-grid map: blurred by the effective probe, sampled at pixel centres.

    Parameters
    ----------
    sem_map : ndarray, shape (ny_sem, nx_sem)
        Values on the SEM grid (e.g. an indicator of one class).
    matrix : ndarray, shape (3, 3)
        STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``.
    stxm_shape : (int, int)
    sigma_nm : float
        Gaussian sigma of the effective probe (zone-plate spot ⊗ pixel footprint).
    sem_pixel_nm : float

    Returns
    -------
    ndarray, shape ``stxm_shape``
    """
    blurred = ndimage.gaussian_filter(np.asarray(sem_map, dtype=float), sigma_nm / float(sem_pixel_nm))
    m = np.asarray(matrix, dtype=float)
    yy, xx = np.mgrid[0:stxm_shape[0], 0:stxm_shape[1]].astype(float)
    xs = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    ys = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    return ndimage.map_coordinates(blurred, [ys, xs], order=1, mode="nearest")


def fit_interphase_thickness(nmc: np.ndarray, electrolyte: np.ndarray, interphase_fraction: np.ndarray,
                             measured: np.ndarray, matrix: np.ndarray, sem_pixel_nm: float,
                             stxm_pixel_nm: float, psf_fwhm_nm: float, *, max_nm: float = 450.0,
                             smooth_nm: float = 100.0, n_iter: int = 6,
                             known: np.ndarray | None = None) -> np.ndarray:
    """Local interphase thickness whose band, seen through the STXM, reproduces the measured amounts.

    The band drawn on the SEM grid is blurred by the effective probe (spot FWHM ⊗ pixel footprint),
    sampled at the STXM pixel centres, restricted to the pixels where the chemistry measured an interphase
    fraction, and brought back to the SEM grid exactly like the measurement; the amount per unit of NMC
    surface (:func:`interphase_thickness_map`) of this prediction is compared with that of the measured
    fractions, and the thickness corrected by the difference (a Landweber iteration). What the PSF spreads
    over NMC pixels or outside the measured pixels, what bilinear resampling and curved surfaces do to the
    amount, is thereby accounted for instead of being lost.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-textured pixels on the SEM grid.
    interphase_fraction : ndarray, shape (ny_stxm, nx_stxm)
        Measured interphase fraction on the STXM grid.
    measured : ndarray of bool, shape (ny_stxm, nx_stxm)
        STXM pixels where the fraction was measured (elsewhere it is 0 by construction).
    matrix : ndarray, shape (3, 3)
        STXM pixel → SEM pixel.
    sem_pixel_nm, stxm_pixel_nm, psf_fwhm_nm : float
    max_nm : float
        Thickest band.
    smooth_nm : float
        Smoothing of the amounts along the surface (Gaussian sigma).
    n_iter : int
    known : ndarray of bool, shape (ny_stxm, nx_stxm), optional
        STXM pixels inside the measured field (where a fraction of 0 means "no interphase"); outside, the
        amounts are unknown and the thickness is carried along the surface from the measured part
        (:func:`interphase_thickness_map`'s normalised convolution). Default: the whole grid.

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        Thickness (nm) on NMC surface pixels, 0 elsewhere.
    """
    shape = nmc.shape
    stxm_shape = interphase_fraction.shape
    measured = np.asarray(measured, bool)

    # the share of each SEM pixel that the chemistry measured, resampled like the fractions, so that the
    # amounts are normalised by it (unmeasured is unknown, not "no interphase")
    known = np.ones(stxm_shape, bool) if known is None else np.asarray(known, bool)
    certainty = warp_to_sem(known.astype(float), matrix, shape, order=1, cval=0.0)
    nearest = ndimage.distance_transform_edt(~nmc, return_indices=True)
    dist, (iy, ix) = nearest
    # the masks do not change between iterations: what depends on them alone is computed once
    geometry = _thickness_geometry(nmc, electrolyte, sem_pixel_nm, max_nm=max_nm, smooth_nm=smooth_nm,
                                   certainty=certainty, min_certainty=MIN_THICKNESS_CERTAINTY, nearest=nearest)

    def amount(f_stxm):
        f_sem = warp_to_sem(np.where(measured, f_stxm, 0.0), matrix, shape, order=1, cval=0.0)
        return _thickness_from_geometry(geometry, np.nan_to_num(f_sem))

    a_meas = amount(interphase_fraction)
    surface = a_meas > 0
    sigma_nm = np.hypot(psf_fwhm_nm / 2.3548, stxm_pixel_nm / np.sqrt(12.0))
    depth_nm = (dist - 0.5) * sem_pixel_nm
    t = a_meas.astype(float)
    for _ in range(n_iter):
        band = electrolyte & (depth_nm <= t[iy, ix])
        a_pred = amount(stxm_view(band.astype(float), matrix, stxm_shape, sigma_nm, sem_pixel_nm))
        t = np.where(surface, np.clip(t + (a_meas - a_pred), 0.0, max_nm), 0.0)
    return t.astype(np.float32)


def stxm_chemistry(od_stacks: dict, registrations: dict, sem_shape, *, reference_edge: str | None = None,
                   psf_fwhm_nm: float = 50.0, interphase_max_nm: float = 400.0) -> dict:
    """The chemistry of :func:`segment_lamella` on its own: :func:`classify_stxm` on the union STXM grid.

    The edges are resampled onto one STXM grid covering all of them (:func:`union_grid`,
    :func:`to_reference_grid`), the OD noise of each edge is measured (:func:`od_noise_scale`) and the grid is
    classified (phase fractions, interphase detection against the null of the NMC and electrolyte cores,
    interphase fractions).

    Parameters
    ----------
    od_stacks : dict of str to Stack
        Aligned OD stacks per edge.
    registrations : dict of str to Registration
        Per edge, STXM pixel → SEM pixel.
    sem_shape : (int, int)
        Shape of the SEM image.
    reference_edge : str, optional
        STXM grid for the chemistry (default Ni-L).
    psf_fwhm_nm, interphase_max_nm : float
        As in :func:`classify_stxm`.

    Returns
    -------
    dict
        ``chemistry`` (:func:`classify_stxm`'s result), ``matrix`` (union-grid pixel → SEM pixel),
        ``stxm_pixel_nm`` (the reference edge's pixel size), ``reference_edge``.
    """
    if reference_edge is None:
        reference_edge = "Ni-L" if "Ni-L" in od_stacks else list(od_stacks)[0]
    grid_shape, matrix = union_grid(od_stacks, registrations, reference_edge, tuple(sem_shape))
    ref_edge, cubes = to_reference_grid(od_stacks, registrations, reference_edge, grid=(grid_shape, matrix))
    energies = {e: np.asarray(st.energies_ev, dtype=float) for e, st in od_stacks.items()}
    sigma0 = _per_edge(lambda e: od_noise_scale(np.asarray(od_stacks[e].data, dtype=float)), list(od_stacks))
    stxm_px = float(od_stacks[ref_edge].pixel_size_nm)
    chem = classify_stxm(cubes, energies, stxm_px, psf_fwhm_nm=psf_fwhm_nm,
                         interphase_max_nm=interphase_max_nm, sigma0=sigma0)
    return {"chemistry": chem, "matrix": matrix, "stxm_pixel_nm": stxm_px, "reference_edge": ref_edge}


def interphase_band(nmc: np.ndarray, electrolyte: np.ndarray, chemistry: dict, matrix: np.ndarray,
                    sem_pixel_nm: float, stxm_pixel_nm: float, *, psf_fwhm_nm: float = 50.0,
                    interphase_max_nm: float = 400.0, support: np.ndarray | None = None,
                    beyond_field: bool = False) -> dict:
    """The interphase on the SEM grid: a band on the electrolyte side of NMC as thick as the chemistry measured.

    The local thickness is the one whose band, seen through the STXM probe, reproduces the interphase
    fractions :func:`classify_stxm` measured (:func:`fit_interphase_thickness`); electrolyte-side pixels within
    that thickness of their nearest NMC pixel are the band. A band thinner than half the probe is not drawn:
    below the resolution the measured amount cannot be told from the partial-volume residual of a sharp NMC
    edge (no interphase after one charge). This is how :func:`segment_lamella` places the interphase (with the
    defaults ``support=None, beyond_field=False``); any NMC / electrolyte masks on the SEM grid will do, e.g. a
    trained classifier's.

    Parameters
    ----------
    nmc, electrolyte : ndarray of bool, shape (ny, nx)
        NMC and electrolyte-like (electrolyte or interphase) pixels on the SEM grid.
    chemistry : dict
        :func:`classify_stxm`'s result (``interphase_fraction``, ``interphase_measured``, ``known``).
    matrix : ndarray, shape (3, 3)
        Chemistry-grid pixel → SEM pixel.
    sem_pixel_nm, stxm_pixel_nm : float
        Pixel sizes of the SEM and of the chemistry grid.
    psf_fwhm_nm : float
        STXM probe width.
    interphase_max_nm : float
        Thickest interphase expected (the band reaches at most this plus the probe width).
    support : ndarray of bool, shape (ny, nx), optional
        Where another method found interphase (e.g. a classifier): connected pieces of the band (8-connected)
        that hold none of it are not drawn, and their surfaces count as bare.
    beyond_field : bool
        Give NMC surfaces outside the measured STXM field (too far from measured pixels for
        :func:`interphase_thickness_map` to carry a thickness to them along the surface) the median thickness
        of the measured surfaces (bare ones included) instead of none: the STXM field, not the lamella, ends
        there. A lamella whose measured median is below half the probe gets no band beyond the field.

    Returns
    -------
    dict
        ``band`` (bool, (ny, nx)), ``thickness_nm`` (float32 on NMC surface pixels),
        ``p_interphase`` (float32: on electrolyte-like pixels, a logistic in depth around the band's edge, one
        SEM pixel wide; 0 where no band is drawn), ``beyond_field_nm`` (the thickness given to surfaces beyond
        the field, None unless ``beyond_field``), ``beyond_field_surface`` (how many surface pixels got it).
    """
    nmc = np.asarray(nmc, bool)
    electrolyte = np.asarray(electrolyte, bool)
    shape = nmc.shape
    sem_px = float(sem_pixel_nm)
    out = {"band": np.zeros(shape, bool), "thickness_nm": np.zeros(shape, np.float32),
           "p_interphase": np.zeros(shape, np.float32), "beyond_field_nm": None, "beyond_field_surface": 0}
    fraction = np.asarray(chemistry["interphase_fraction"])
    if not nmc.any() or not fraction.max() > 0:
        return out
    max_nm, smooth_nm = interphase_max_nm + psf_fwhm_nm, 2.0 * psf_fwhm_nm
    thickness = fit_interphase_thickness(nmc, electrolyte, fraction, chemistry["interphase_measured"], matrix,
                                         sem_px, stxm_pixel_nm, psf_fwhm_nm, max_nm=max_nm,
                                         smooth_nm=smooth_nm, known=chemistry["known"])
    nearest = ndimage.distance_transform_edt(~nmc, return_indices=True)
    dist, (iy, ix) = nearest
    depth_nm = (dist - 0.5) * sem_px
    min_band_nm = max(0.5 * psf_fwhm_nm, 0.5 * sem_px)

    def draw(t):
        t_here = t[iy, ix]
        return electrolyte & (depth_nm <= t_here) & (t_here >= min_band_nm), t_here

    if support is not None:
        band, _ = draw(thickness)
        pieces, _ = ndimage.label(band, structure=np.ones((3, 3), bool))
        held = np.unique(pieces[band & np.asarray(support, bool)])
        dropped = band & ~np.isin(pieces, held)
        if dropped.any():
            # surfaces that feed only dropped pieces are bare
            feeds_kept = np.zeros(shape, bool)
            kept = band & ~dropped
            feeds_kept[iy[kept], ix[kept]] = True
            bare = np.zeros(shape, bool)
            bare[iy[dropped], ix[dropped]] = True
            thickness = np.where(bare & ~feeds_kept, 0.0, thickness).astype(np.float32)
    if beyond_field:
        certainty = warp_to_sem(np.asarray(chemistry["known"], float), matrix, shape, order=1, cval=0.0)
        geometry = _thickness_geometry(nmc, electrolyte, sem_px, max_nm=max_nm, smooth_nm=smooth_nm,
                                       certainty=certainty, min_certainty=MIN_THICKNESS_CERTAINTY, nearest=nearest)
        receiving = np.zeros(nmc.size, bool)
        receiving[geometry["flat_near"]] = True
        receiving = receiving.reshape(shape) & nmc
        unmeasured = receiving & ~geometry["known"]
        if geometry["known"].any():
            typical = float(np.median(thickness[geometry["known"]]))
            thickness = np.where(unmeasured, np.float32(typical), thickness).astype(np.float32)
            out["beyond_field_nm"] = typical
            out["beyond_field_surface"] = int(unmeasured.sum())
    band, t_here = draw(thickness)
    with np.errstate(over="ignore"):          # far beyond the band edge: exp → inf, the logistic → 0
        p_int = np.where(electrolyte, 1.0 / (1.0 + np.exp((depth_nm - t_here) / sem_px)), 0.0).astype(np.float32)
    p_int[t_here < min_band_nm] = 0.0
    out.update(band=band, thickness_nm=thickness, p_interphase=p_int)
    return out


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
    chem, matrix = chemistry["chemistry"], chemistry["matrix"]
    ref_edge, stxm_px = chemistry["reference_edge"], chemistry["stxm_pixel_nm"]
    t_chem = time.perf_counter()

    sem_px = float(sem.pixel_size_nm)
    shape = image.shape
    # chemistry on the SEM grid: texture-class fractions NMC / electrolyte(+interphase) / empty
    frac_sem = warp_to_sem(chem["fractions"], matrix, shape, order=1, cval=np.nan)
    inside = np.all(np.isfinite(frac_sem), axis=0)
    stxm_cls_sem = warp_to_sem(chem["classes"].astype(float), matrix, shape, order=0, cval=np.nan)

    feats = _sem_features(image, sem_px)
    n_feat = feats.shape[-1]
    flat_feats = feats.reshape(-1, n_feat)

    # training labels (self-training): confident chemistry far from STXM class boundaries
    texture = np.full(shape, -1, np.int16)
    cls = np.nan_to_num(stxm_cls_sem, nan=-1).astype(np.int16)
    texture[cls == NMC] = NMC
    texture[(cls == ELECTROLYTE) | (cls == INTERPHASE)] = ELECTROLYTE
    texture[(cls == VOID) | (cls == OUTSIDE)] = VOID
    conf = np.nan_to_num(np.max(frac_sem, axis=0), nan=0.0) > 0.8
    margin_px = int(np.ceil((stxm_px + psf_fwhm_nm) / sem_px))
    rng = np.random.default_rng(random_state)
    train_idx = []
    for c in (NMC, ELECTROLYTE, VOID):
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
    col = {NMC: 0, ELECTROLYTE: 1, VOID: 2}
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
    label = np.array([NMC, ELECTROLYTE, VOID])[np.argmax(post, axis=0)]
    label = refine_nmc_boundaries(label, image, sem_px, band_nm=stxm_px + psf_fwhm_nm)
    label = refine_empty_boundaries(label, image, sem_px, band_nm=stxm_px + psf_fwhm_nm)
    label = mark_cracks(label, image, sem_px, max_width_nm=crack_max_nm)
    label = resolve_thin_rims(label, sem_px, max_width_nm=psf_fwhm_nm)
    label = snap_nmc_boundaries(label, image, sem_px)
    empty = label == VOID
    # outside: empty regions along the field border (lamella edge) or mostly outside on the STXM grid
    outside = split_empty(empty, sem_px, vacuum=cls == OUTSIDE)
    classes = label.astype(np.uint8)
    classes[outside] = OUTSIDE
    # interphase: a band on the electrolyte side of the NMC surface whose local thickness is the amount
    # of interphase the chemistry measured there (conserved by the PSF blur and the resampling)
    nmc_sem = label == NMC
    placed = interphase_band(nmc_sem, label == ELECTROLYTE, chem, matrix, sem_px, stxm_px, psf_fwhm_nm=psf_fwhm_nm,
                             interphase_max_nm=interphase_max_nm)
    classes[placed["band"]] = INTERPHASE
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
    e_side = (other == ELECTROLYTE) | (other == INTERPHASE)
    probs[NMC] = p_nmc
    probs[INTERPHASE] = rest * e_side * p_band
    probs[ELECTROLYTE] = rest * e_side * (1.0 - p_band)
    probs[VOID] = rest * (other == VOID)
    probs[OUTSIDE] = rest * (other == OUTSIDE)
    t_end = time.perf_counter()
    details = {
        "reference_edge": ref_edge,
        "stxm": chem,
        "stxm_pixel_nm": stxm_px,
        "stxm_matrix": matrix,
        "sem_pixel_nm": sem_px,
        "n_train": {int(c): int(np.sum(y == c)) for c in present},
        "sem_texture_probabilities": p_sem,
        "interphase_thickness_nm": thickness_nm,
        "timings_s": {"chemistry": t_chem - t0, "sem_classifier": t_rf - t_chem, "total": t_end - t0},
    }
    return Segmentation(classes=classes, probabilities=probs, details=details)
