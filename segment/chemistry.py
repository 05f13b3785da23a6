"""The chemistry of each STXM pixel: phase fractions, interphase score and classes on one STXM grid.

1. **Signatures and cores.** Per pixel and edge the resonance and absorption (:mod:`ceimap.segment.signatures`)
   with the noise measured from the data (:mod:`ceimap.segment.noise`). NMC cores: Ni resonance, eroded by the
   probe; electrolyte cores: absorbing without Ni, far from NMC; empty: absorption consistent with zero.
2. **Unmixing in transmission** (:func:`ceimap.segment.decompose.unmix_transmission`): each edge is fitted
   per pixel with the local bulk NMC and electrolyte transmissions (each at a thinner and a thicker version)
   and vacuum. NMC fraction from Ni-L, electrolyte fraction from S-L when present; where only one edge
   measured, its own fit gives all three (at S-L, NMC is the non-resonant absorber).
3. **Interphase = what the mixture cannot explain.** For pixels near NMC that are not NMC, the noise-whitened
   residuals are decomposed; when their leading singular value clears the Gavish–Donoho noise threshold there
   is a systematic signature (reduced Ni, shifted S), and each pixel's projection on it, in units of its
   scatter over core pixels, is a z-score (combined over the edges that measured the pixel, Stouffer).
   Detected pixels (z above the null's upper tail) give an interphase endmember (mean of the top decile) and
   are unmixed again with it to get an interphase fraction. No systematic residual → no interphase.

:func:`stxm_chemistry` runs this on the union grid of a lamella's stacks (:mod:`ceimap.segment.grid`);
:func:`classify_stxm` on cubes already on one grid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from . import Class
from .decompose import _singular_values_vectors, nnls_fit, optimal_rank_threshold, unmix_transmission
from .grid import to_reference_grid, union_grid
from .noise import od_noise_scale
from .outside import split_empty
from .signatures import edge_signature
from .workers import thread_count

__all__ = ["StxmChemistry", "LamellaChemistry", "classify_stxm", "stxm_chemistry"]


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    v = values[np.isfinite(values)]
    return float(threshold_otsu(v)) if v.size > 1 and np.ptp(v) > 0 else float(np.median(v))


def _per_edge(function, edges: list) -> dict:
    """``{edge: function(edge)}``, the edges in threads of their own (independent whole-array numpy / ndimage
    work, which releases the GIL; one thread in a batch worker, :func:`ceimap.segment.workers.thread_count`); the
    same values as a loop."""
    n_threads = min(len(edges), thread_count())
    if n_threads < 2:
        return {e: function(e) for e in edges}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_threads) as threads:
        return dict(zip(edges, threads.map(function, edges)))


@dataclass(frozen=True)
class StxmChemistry:
    """The chemistry of one STXM grid (:func:`classify_stxm`). Maps have the grid's shape ``(ny, nx)``.

    Attributes
    ----------
    fractions : ndarray, shape (3, ny, nx)
        Areal fractions of NMC, electrolyte (interphase included) and empty, summing to 1 (NaN outside ``known``).
    interphase_z : ndarray
        Interphase score (Stouffer z over the edges; 0 when no edge found a systematic residual).
    interphase : ndarray of bool
        Pixels called interphase on the STXM grid (detected and fraction ≥ 0.5).
    classes : ndarray of uint8
        Class codes (:class:`ceimap.Class`) on the STXM grid.
    probabilities : ndarray, shape (5, ny, nx)
        Per-class probability in class-code order (NaN outside ``known``).
    known : ndarray of bool
        Pixels some edge measured.
    nmc_core, electrolyte_core : ndarray of bool
        Bulk NMC and bulk electrolyte pixels (the unmixing's references and the interphase score's null).
    band : ndarray of bool
        Where interphase is searched for: absorbing, not NMC, within ``interphase_max_nm`` + PSF of NMC.
    interphase_fraction : ndarray
        Interphase fraction per pixel (0–1; 0 where not measured).
    interphase_measured : ndarray of bool
        Pixels whose interphase fraction was measured (detected pixels and their band neighbours).
    z_full : float
        NaN when interphase was scored, inf otherwise (kept in the run record).
    references : dict of str to dict of str to ndarray
        Per edge, the OD spectra of the global ``nmc`` and ``electrolyte`` references and, when detected, the
        ``interphase`` endmember.
    sigma0 : dict of str to ndarray
        Per edge, the OD noise at zero OD per energy.
    interphase_rank : dict of str to int
        Per edge, the rank of the systematic residual (0: none).
    z_threshold : float
        Detection threshold of the interphase score (inf when not scored).
    absorption_snr : ndarray
        Absorption signal-to-noise ratio combined over the edges.
    """

    fractions: np.ndarray
    interphase_z: np.ndarray
    interphase: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    known: np.ndarray
    nmc_core: np.ndarray
    electrolyte_core: np.ndarray
    band: np.ndarray
    interphase_fraction: np.ndarray
    interphase_measured: np.ndarray
    z_full: float
    references: dict
    sigma0: dict
    interphase_rank: dict
    z_threshold: float
    absorption_snr: np.ndarray

    def record(self) -> dict:
        """The attributes as a dict, in declaration order (what a run keeps in ``Segmentation.details["stxm"]``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LamellaChemistry:
    """:func:`stxm_chemistry`'s result: the chemistry on the union STXM grid of a lamella's stacks.

    Attributes
    ----------
    chemistry : StxmChemistry
    matrix : ndarray, shape (3, 3)
        Grid pixel → SEM pixel.
    stxm_pixel_nm : float
        Pixel size of the grid (the reference edge's).
    reference_edge : str
    """

    chemistry: StxmChemistry
    matrix: np.ndarray
    stxm_pixel_nm: float
    reference_edge: str


def _absorption_snr(sig: dict, valid: dict, edges: list, shape) -> np.ndarray:
    """Absorption signal-to-noise ratio combined over the edges that measured each pixel (signed root of the sum
    of signed squares)."""
    snr2 = np.zeros(shape)
    for e in edges:
        snr2 += np.where(valid[e], sig[e]["absorption_snr"], 0.0) ** 2 * np.sign(sig[e]["absorption_snr"])
    return np.sign(snr2) * np.sqrt(np.abs(snr2))


def _cores(sig: dict, valid: dict, edges: list, absorbing: np.ndarray, px: float, psf_fwhm_nm: float,
           interphase_max_nm: float):
    """Ni-rich pixels, the NMC and electrolyte cores and the distance to NMC (nm).

    NMC core: Ni resonance (Otsu between Ni-free and Ni-rich), eroded by the PSF. Electrolyte core: absorbing,
    no Ni, farther from NMC than the thickest interphase + PSF, eroded by the PSF (where Ni-L did not measure,
    the distance to NMC is unknown: no electrolyte core there).
    """
    ny, nx = absorbing.shape
    psf_px = psf_fwhm_nm / px
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
    d_nmc_nm = ndimage.distance_transform_edt(~ni_rich) * px if ni_rich.any() else np.full((ny, nx), np.inf)
    non_ni = absorbing & ~ni_rich
    if ni_edge is not None:
        non_ni &= (sig[ni_edge]["resonance_snr"] < 3.0) & valid[ni_edge]
    far = d_nmc_nm > interphase_max_nm + psf_fwhm_nm
    ely_core = ndimage.binary_erosion(non_ni, iterations=erode) & far
    if ely_core.sum() < 10:
        order = np.argsort(-np.where(non_ni, d_nmc_nm, -1).ravel())
        ely_core = np.zeros(ny * nx, bool)
        ely_core[order[:max(10, int(0.2 * non_ni.sum()))]] = True
        ely_core = ely_core.reshape(ny, nx) & non_ni
    return ni_edge, ni_rich, nmc_core, ely_core, d_nmc_nm


def _combine_fractions(fractions: dict, valid: dict, edges: list, ni_edge: str | None, shape):
    """NMC / electrolyte / empty fractions from the edges' own fits, normalised; and the pixels some edge measured.

    NMC from Ni-L (Ni is specific to NMC), electrolyte from S-L where it exists (S is specific to the
    electrolyte), empty from the reference edge; where the main edge did not measure, another edge's own fit
    (its NMC reference, from the NMC cores the main edge found, is the non-resonant absorption of NMC at that
    edge) gives all three.
    """
    main = ni_edge if ni_edge is not None else edges[0]
    f_nmc = fractions[main][..., 0] if ni_edge is not None else np.zeros(shape)
    f_ely = fractions[main][..., 1]
    f_empty = fractions[main][..., 2]
    s_edge = "S-L" if "S-L" in edges else None
    if s_edge is not None and s_edge != main:
        f_ely = np.where(valid[s_edge], fractions[s_edge][..., 1], f_ely)
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
    return frac, known


def _interphase_score(resid_w: dict, valid: dict, edges: list, band: np.ndarray, null: np.ndarray, shape):
    """Per pixel, the z-score of the systematic residual (Stouffer over the edges that found one).

    For each edge the noise-whitened residuals of the ``band`` pixels are decomposed; when their leading singular
    value clears the Gavish–Donoho threshold (noise from the ``null`` pixels), each pixel's projection on the
    leading vector, centred and scaled by its MAD over the null pixels, is that edge's z-score.

    Returns
    -------
    z_total : ndarray (summed z-scores, not yet divided by ``sqrt(n_edges)``)
    n_edges : ndarray (edges that contributed at each pixel)
    ranks : dict of str to int
    n_used : int (edges with a systematic residual)
    """
    z_total = np.zeros(shape)
    n_edges = np.zeros(shape)
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
    return z_total, n_edges, ranks, n_used


def _interphase_fraction(detected: np.ndarray, z_total: np.ndarray, band: np.ndarray, valid: dict, edges: list,
                         fit_inputs: dict, thickness_scales: tuple, refs_out: dict) -> np.ndarray:
    """Interphase fraction of the band pixels, unmixed again with an interphase endmember.

    The endmember is the mean transmission of the most interphase-like pixels (upper decile of the score among the
    ``detected``: band centres, nearly pure), at a thinner and a thicker version like the other phases; the
    fractions are calibrated so that those pixels' mean is 1 (per-pixel NNLS hands some of it to absent phases:
    noise only pushes abundances up). Adds each edge's ``interphase`` endmember (OD) to ``refs_out``.
    """
    ny, nx = band.shape
    n_k = len(thickness_scales)
    if detected.sum() < 10:
        return np.zeros((ny, nx))
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
        # the interphase too at a thinner and a thicker version (the lamella wedge changes it like the other
        # phases); the last column is the sum-to-one row, kept at 1
        t_int_k = np.stack([np.concatenate([np.clip(t_int[:-1], 1e-6, 1.0) ** k, t_int[-1:]])
                            for k in thickness_scales])
        refs_int = np.concatenate([refs[sel], np.broadcast_to(t_int_k, (sel.sum(),) + t_int_k.shape)], axis=1)
        fit = nnls_fit(t_pix[sel], refs_int, constant=False, weights=1.0 / sd[sel])
        ab = fit.abundances
        f_e = np.zeros(ny * nx)
        f_e[sel] = ab[:, -n_k:].sum(axis=1) / np.maximum(ab.sum(axis=1), 1e-9)
        f_top = float(np.mean(f_e[ok_top]))
        if f_top > 0.5:
            f_e /= f_top
        f_sum += f_e.reshape(ny, nx)
        n_sum += sel.reshape(ny, nx)
        refs_out[e]["interphase"] = -np.log(np.clip(t_int[:-1], 1e-6, None))
    return np.where(n_sum > 0, f_sum / np.maximum(n_sum, 1), 0.0)


def _stxm_classes(frac: np.ndarray, is_nmc: np.ndarray, known: np.ndarray, interphase: np.ndarray,
                  p_int: np.ndarray, px: float):
    """Class codes and per-class probabilities on the STXM grid (NaN probabilities where nothing measured)."""
    ny, nx = known.shape
    empty = (frac[2] > np.maximum(frac[0], frac[1])) & known
    outside = split_empty(empty, px, field=known)
    classes = np.full((ny, nx), Class.ELECTROLYTE, np.uint8)
    classes[is_nmc] = Class.NMC
    classes[empty & ~outside] = Class.VOID
    classes[outside] = Class.OUTSIDE
    classes[interphase] = Class.INTERPHASE
    prob = np.zeros((5, ny, nx))
    prob[Class.NMC] = frac[0]
    prob[Class.ELECTROLYTE] = frac[1] * (1 - p_int)
    prob[Class.INTERPHASE] = frac[1] * p_int
    prob[Class.OUTSIDE] = frac[2] * outside
    prob[Class.VOID] = frac[2] * ~outside
    prob[:, ~known] = np.nan
    return classes, prob


def classify_stxm(cubes: dict, energies: dict, pixel_size_nm: float, *, psf_fwhm_nm: float = 50.0,
                  interphase_max_nm: float = 400.0, z_tail: float = 0.995,
                  thickness_scales: tuple = (0.7, 1.3), sigma0: dict | None = None) -> StxmChemistry:
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
        Noise ``σ₀(E)`` per edge (estimated with :func:`~ceimap.segment.noise.od_noise_scale` when omitted).

    Returns
    -------
    StxmChemistry
    """
    edges = list(cubes)
    ny, nx = next(iter(cubes.values())).shape[1:]
    px = float(pixel_size_nm)
    if sigma0 is None:
        sigma0 = {e: od_noise_scale(cubes[e]) for e in edges}
    valid = {e: np.all(np.isfinite(cubes[e]), axis=0) for e in edges}
    sig = {e: edge_signature(energies[e], np.moveaxis(np.nan_to_num(cubes[e]), 0, -1), e, sigma0[e])
           for e in edges}

    # --- signatures: absorbing (above the noise, 3 sigma, over the edges), Ni-rich, the cores
    abs_snr = _absorption_snr(sig, valid, edges, (ny, nx))
    absorbing = abs_snr > 3.0
    ni_edge, ni_rich, nmc_core, ely_core, d_nmc_nm = _cores(sig, valid, edges, absorbing, px, psf_fwhm_nm,
                                                           interphase_max_nm)
    # --- unmixing per edge, in transmission: local NMC references (Gaussian over cores, ~ a particle radius: each
    # particle its own Ni valence) and local electrolyte (~1 µm: lamella thickness wedge)
    local_sigma_px = max(250.0 / px, 2.0)
    ely_sigma_px = max(1000.0 / px, 4.0)
    unmixed = _per_edge(lambda e: unmix_transmission(cubes[e], valid[e], nmc_core, ely_core, sigma0[e],
                                                     local_sigma_px, ely_sigma_px, thickness_scales), edges)
    fractions = {e: unmixed[e]["fractions"] for e in edges}
    resid_w = {e: unmixed[e]["residual"] for e in edges}
    refs_out = {e: unmixed[e]["references"] for e in edges}
    fit_inputs = {e: unmixed[e]["fit_inputs"] for e in edges}
    frac, known = _combine_fractions(fractions, valid, edges, ni_edge, (ny, nx))
    if ni_edge is not None and not valid[ni_edge].all():
        # NMC seen only by the other edges counts for the distance to NMC too
        nmc_any = ni_rich | (~valid[ni_edge] & known & (frac[0] > 0.5))
        if nmc_any.any():
            d_nmc_nm = ndimage.distance_transform_edt(~nmc_any) * px

    # --- interphase: systematic residual near NMC, not NMC itself
    is_nmc = frac[0] > 0.5          # NMC covers most of the pixel
    band = (~is_nmc) & absorbing & (d_nmc_nm <= interphase_max_nm + psf_fwhm_nm) & (d_nmc_nm > 0) & known
    null = (nmc_core | ely_core) & known
    z_total, n_edges, ranks, n_used = _interphase_score(resid_w, valid, edges, band, null, (ny, nx))
    if n_used:
        # Stouffer: each pixel's z-scores combined over the edges that measured it
        z_total /= np.sqrt(np.maximum(n_edges, 1.0))
        z_thr = max(float(np.quantile(z_total[null], z_tail)), 3.0)
        detected = band & (z_total > z_thr)
        f_int = _interphase_fraction(detected, z_total, band, valid, edges, fit_inputs, thickness_scales, refs_out)
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

    classes, prob = _stxm_classes(frac, is_nmc, known, interphase, f_int, px)
    frac[:, ~known] = np.nan
    return StxmChemistry(
        fractions=frac, interphase_z=z_total, interphase=interphase, classes=classes, probabilities=prob,
        known=known, nmc_core=nmc_core, electrolyte_core=ely_core, band=band, interphase_fraction=f_int,
        interphase_measured=measured_int, z_full=z_full, references=refs_out, sigma0=sigma0, interphase_rank=ranks,
        z_threshold=z_thr, absorption_snr=abs_snr)


def stxm_chemistry(od_stacks: dict, registrations: dict, sem_shape, *, reference_edge: str | None = None,
                   psf_fwhm_nm: float = 50.0, interphase_max_nm: float = 400.0) -> LamellaChemistry:
    """The chemistry of :func:`~ceimap.segment.assign.segment_lamella` on its own: :func:`classify_stxm` on the
    union STXM grid.

    The edges are resampled onto one STXM grid covering all of them (:func:`~ceimap.segment.grid.union_grid`,
    :func:`~ceimap.segment.grid.to_reference_grid`), the OD noise of each edge is measured
    (:func:`~ceimap.segment.noise.od_noise_scale`) and the grid is classified (phase fractions, interphase
    detection against the null of the NMC and electrolyte cores, interphase fractions).

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
    LamellaChemistry
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
    return LamellaChemistry(chemistry=chem, matrix=matrix, stxm_pixel_nm=stxm_px, reference_edge=ref_edge)
