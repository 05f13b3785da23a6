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

import numpy as np
from scipy import ndimage

from .decompose import _singular_values_vectors, nnls_fit, optimal_rank_threshold, unmix_transmission
from .grid import to_reference_grid, union_grid
from .noise import od_noise_scale
from .outside import split_empty
from .signatures import edge_signature
from .workers import thread_count

__all__ = ["classify_stxm", "stxm_chemistry"]

OUTSIDE, NMC, INTERPHASE, ELECTROLYTE, VOID = 0, 1, 2, 3, 4


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    v = values[np.isfinite(values)]
    return float(threshold_otsu(v)) if v.size > 1 and np.ptp(v) > 0 else float(np.median(v))


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
        Noise ``σ₀(E)`` per edge (estimated with :func:`~ceimap.segment.noise.od_noise_scale` when omitted).

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
    unmixed = _per_edge(lambda e: unmix_transmission(cubes[e], valid[e], nmc_core, ely_core, sigma0[e], local_sigma_px,
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


def stxm_chemistry(od_stacks: dict, registrations: dict, sem_shape, *, reference_edge: str | None = None,
                   psf_fwhm_nm: float = 50.0, interphase_max_nm: float = 400.0) -> dict:
    """The chemistry of :func:`~ceimap.segment.assign.segment_lamella` on its own: :func:`classify_stxm` on the union STXM grid.

    The edges are resampled onto one STXM grid covering all of them (:func:`~ceimap.segment.grid.union_grid`,
    :func:`~ceimap.segment.grid.to_reference_grid`), the OD noise of each edge is measured (:func:`~ceimap.segment.noise.od_noise_scale`) and the grid is
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
