"""Regions of NMC particles (bulk, surface bands) defined on the SEM grid and brought to the native STXM grid.

The e_g/t_2g statistics of ceimap are computed on *native* STXM pixels: one value per measured pixel, never
on the ~16 interpolated copies an STXM pixel gets when it is resampled to the SEM grid. This module decides,
for every STXM pixel of a stack, which NMC particle it belongs to and which region of that particle it samples.

Definitions
-----------
Distances are measured on the (fine) SEM grid in nm; a pixel's distance to a boundary is the distance from its
centre to the nearest centre of a pixel on the other side minus half an SEM pixel. For a pixel ``q`` of
particle ``p``:

* ``depth(q)`` — distance to the boundary of ``p`` (to any pixel that is not ``p``: interphase, electrolyte,
  void, outside, the image edge, or another particle);
* ``D_electrolyte(q)`` — distance to the nearest interphase or electrolyte pixel (the electrolyte side of the
  surface: the interphase *is* the contact with the electrolyte);
* ``D_void(q)`` — distance to the nearest void pixel;
* ``D_unknown(q)`` — distance to the nearest outside / unassigned pixel or the image edge;
* ``D_nmc(q)`` — distance to the nearest NMC pixel not in ``p`` (another particle, or unlabelled NMC).

The kind of surface nearest to ``q`` is the kind with the smallest distance. Electrolyte side and void are
judged at the probe's scale (:func:`contact_classes`), so a rim one or two SEM pixels wide of electrolyte or
interphase that a segmentation leaves between NMC and a void does not turn a void contact into an
electrolyte contact.

An STXM pixel does not sample a point: its value is the probe (Gaussian, FWHM ``psf_fwhm_nm``) convolved with
the pixel's square footprint, an effective Gaussian of ``σ_eff = √(σ_psf² + p²/12)`` (``p`` the STXM pixel
size). A pixel at depth ``d`` behind a straight edge receives the fraction ``f(d) = Φ(−d/σ_eff)`` of its signal
from beyond the edge; beyond the *contamination distance* ``c = 2.326·σ_eff`` less than 1 %. This matters:
next to electrolyte the NMC surface faces an interphase that holds (reduced) Ni, next to a void it faces
nothing, so bands that start at the NMC edge are blurred differently and a chemically null difference looks
real.

Where the surface bands start (:func:`surface_start_from_data`)
    The ratio is ``A_eg / A_t2g`` of fitted peak heights (:func:`ceimap.segment.spectra.egt2g_map`), and heights add
    up linearly over what the probe sees. A band pixel that sees NMC of ratio ``r`` with weight ``ω_N`` and
    class ``c`` with weight ``ω_c`` (Ni amount ``a_c`` and e_g height ``b_c`` per unit weight) reads

    ``r̂ = (ω_N a_N r + Σ ω_c b_c) / (ω_N a_N + Σ ω_c a_c)``, so its bias is
    ``β(d) = Σ ω_c(d) (b_c − r a_c) / Σ_all ω_c(d) a_c``.

    A void (``a = b = 0``) adds no bias to the expected heights, it only lowers the signal; a ratio of noisy
    heights is biased by ≈ ``r / SNR²`` (the reason of the SNR threshold of :mod:`ceimap.segment.spectra`), so a
    void-side pixel that keeps the fraction ``ρ`` of the bulk's signal reads ``r s² (1/ρ² − 1)`` high (``s``
    the bulk pixels' relative ratio uncertainty) — this term is included, it is small. The interphase holds
    reduced Ni: it biases the electrolyte-side band low, and that difference between the two bands is what a
    null lamella would show as an "effect". All of it is measured on the lamella:

    1. ``ω_c`` — the class map blurred by the Gaussian ``σ_eff`` (probe ⊗ pixel): at every STXM pixel centre
       for the fit below, and averaged over the NMC SEM pixels of each depth (one SEM pixel deep) on each
       side (nearest surface electrolyte side / void, the other kind farther than the band) for the profile;
    2. ``a_c, b_c`` — least squares of the fitted t_2g and e_g heights of every STXM pixel near an NMC
       surface or in the interphase on those weights (one coefficient per class present); ``r = b_N / a_N``;
       the excess ``γ_c = b_c − r a_c`` from one regression of ``A_eg − r A_t2g`` with its covariance;
    3. ``Δ(d) = β_electrolyte(d) − β_void(d)`` (bias of the paired difference, noise terms included) and its
       bound ``B(d) = |Δ(d)| + 1.645·se(Δ(d))`` (the bias the data cannot exclude at 95 %, one-sided);
    4. ``SE`` — the standard error of the per-particle paired difference (electrolyte − void band means) with
       the bands at the conservative 1 % depth ``c``. Only the spread of the differences enters, never their
       mean, so the rule cannot pick a depth for the p-value it gives;
    5. ``k`` — a bias ``B = k·SE`` shifts the paired t statistic by ``k``: under the null it is non-central
       t (``n_pairs − 1`` df, non-centrality ``k``). ``k`` is where that test's two-tailed rejection rate at
       α = 0.05 reaches ``max_fpr`` = 0.06 (:func:`bias_tolerance`; ≈ 0.29 for many pairs, 0.36 for 6),
       i.e. the remaining contamination may inflate the false-positive rate by at most one percentage point
       (the issue's bound is 0.07);
    6. the bias that matters is that of the *band means* the paired difference is made of: for a band
       starting at ``d``, ``Δ̄(d)`` is ``Δ`` averaged over the band's depths ``[d, d + band)`` weighted by the
       NMC pixels at each depth on each side, its standard error from the same covariance (the two sides
       share the fitted ``γ``), ``B̄(d) = |Δ̄(d)| + 1.645·se(Δ̄(d))`` (``criterion="band_mean"``, the default;
       ``criterion="pixel"`` bounds ``B(d)`` of the band's shallowest pixels instead, which starts the bands
       deeper).

    The start is the smallest depth ``d`` (SEM-pixel steps from 0) with ``B̄(d') ≤ k·SE`` for every deeper
    ``d'`` up to the 0.1 % depth ``3.09·σ_eff`` (the search stops there with a ``reason`` if the bound is
    never met). Its false-positive rate and power are measured by ``benchmarks/bench_calibration.py``
    (``benchmarks/README.md``, "calibration"). When the data cannot tell — fewer than 20 STXM pixels with an
    interphase weight ≥ 0.25 (no interphase: a thin one the map missed cannot be excluded), fewer than 3
    particles with both bands, no clean surface of one kind — the bands start at the conservative 1 % depth
    ``c`` and the ``reason`` says why. A given ``surface_offset_nm`` overrides the rule. The numbers
    (``a_c``, class ratios, the interphase's Ni fraction ``a_I / a_N``, ``SE``, ``k``, the bound profile
    ``B̄(d)`` or ``B(d)``) are kept in ``parameters["surface_offset_rule"]`` (``summary.json`` ``regions``;
    the report's methods). Bulk starts at ``c + band`` whatever the band start, so the bulk statistics do not
    depend on the rule.

    The rule takes the probe to be Gaussian and the fitted heights to be linear in the class weights; a PSF
    with wider wings than ``σ_eff`` or a registration error of the SEM→STXM mapping leave more contamination
    than modelled (the fitted void amount comes out slightly negative on simulated lamellae, a sign of that
    mismatch).

Why the band values are not corrected instead
    The same linear model could *remove* the neighbours' share from each band pixel (fitted heights minus
    ``Σ ω_c a_c`` and ``Σ ω_c b_c`` of the non-NMC classes, then the ratio) and let the bands start at the
    edge. That correction over-corrects (null lamellae come out significant; figures in
    ``benchmarks/README.md``, "calibration", "Tried and not adopted"), also with the blur fitted to the
    lamella's own edges and with every class subtracted. The reason is physical: the beam averages
    *transmission* over its footprint, not optical density, so a pixel's OD is ``−ln Σ ω_c e^(−OD_c)``,
    concave in the weights — the fitted heights are not linear in the class weights near an edge of strong
    contrast (a class without Ni, the void, gets a negative fitted Ni amount). A correction would have to
    unmix each pixel's spectrum in transmission (class mean spectra, per-pixel fit), which needs the OD stack
    here; not done.

===========================  ==================================================================================
region                        rule (pixel ``q`` of particle ``p``)
===========================  ==================================================================================
``surface_electrolyte``       ``surface_offset_nm ≤ depth < surface_offset_nm + surface_band_nm`` (offset
                              derived as above, ``c`` without Ni amplitude maps; width ``max(p, FWHM)``),
                              nearest surface kind electrolyte/
                              interphase, and no void and no unknown pixel within the band's outer depth
``surface_void``              the same depths, nearest surface kind void, no electrolyte/interphase and no
                              unknown pixel within the band's outer depth
``surface_excluded``          in the band depth, but near both kinds (or near unknown pixels, or the nearest
                              surface is another particle): mixed, not used in the comparison
``nmc_edge``                  NMC shallower than ``surface_offset_nm``: the probe sees the neighbours, so
                              these pixels are mixtures and enter no statistic of the particle
``nmc_transition``            NMC deeper than the band but not yet bulk (only with a custom ``bulk_margin_nm``)
``bulk``                      ``depth ≥ bulk_margin_nm`` (default ``c + surface_band_nm``, deeper if the
                              band starts deeper than ``c``)
``interphase``                class 2; assigned to the nearest particle
``electrolyte`` / ``void``    classes 3 / 4 (no particle)
``nmc_unassigned``            class 1 outside every labelled particle
``outside``                   class 0, or beyond the SEM image
===========================  ==================================================================================

Both surface bands are therefore the same depth into NMC, measured from the same kind of boundary (the NMC
class edge), where what the probe still sees of either neighbour cannot bias their difference, and pixels
within the band depth of both kinds are excluded: their mixing is alike by construction. Set
``surface_offset_nm=0`` to measure at the contact itself (the paper's "surface in contact with electrolyte"),
knowing that the electrolyte-side band then includes interphase signal. The interphase itself is a separate
region (reported as ``interphase``).

On the STXM grid each pixel takes the region and particle of the SEM pixel under its centre (the distances
already account for its footprint); :func:`ceimap.segment.register.transform_points` maps the centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ceimap.segment import Class
from ceimap.segment.register import transform_points

REGION_CODES = {
    "outside": 0,
    "bulk": 1,
    "surface_electrolyte": 2,
    "surface_void": 3,
    "surface_excluded": 4,
    "nmc_transition": 5,
    "interphase": 6,
    "electrolyte": 7,
    "void": 8,
    "nmc_unassigned": 9,
    "nmc_edge": 10,
}
"""Region codes of the region maps."""

REGION_NAMES = {code: name for name, code in REGION_CODES.items()}
_N_REGIONS = len(REGION_CODES)

CONTAMINATION_SIGMAS = 2.326
"""Depth, in effective probe sigmas, beyond which < 1 % of a pixel's signal comes from across an edge."""



@dataclass(frozen=True)
class RegionMaps:
    """Particle and region of every pixel, on the SEM grid and on the native STXM grid.

    Attributes
    ----------
    region : ndarray of uint8, shape (ny, nx)
        Region code (:data:`REGION_CODES`) of each STXM pixel.
    particle_id : ndarray of int64, shape (ny, nx)
        Particle of each STXM pixel (0 = none); interphase pixels carry their nearest particle.
    region_sem : ndarray of uint8, shape (ny_sem, nx_sem)
        Region code on the SEM grid.
    particle_sem : ndarray of int64, shape (ny_sem, nx_sem)
        Particle on the SEM grid (interphase assigned to the nearest particle).
    parameters : dict
        The distances used (nm): ``sigma_eff_nm``, ``contamination_nm``, ``surface_offset_nm``,
        ``surface_band_nm``, ``bulk_margin_nm``, ``psf_fwhm_nm``, ``stxm_pixel_nm``, ``sem_pixel_nm``.
    """

    region: np.ndarray
    particle_id: np.ndarray
    region_sem: np.ndarray
    particle_sem: np.ndarray
    parameters: dict = field(default_factory=dict)


def default_distances(stxm_pixel_nm: float, psf_fwhm_nm: float, surface_band_nm: float | None = None,
                      bulk_margin_nm: float | None = None, surface_offset_nm: float | None = None) -> dict:
    """The region distances (nm) derived from the STXM pixel size and the probe FWHM.

    Parameters
    ----------
    stxm_pixel_nm, psf_fwhm_nm : float
        STXM pixel size and probe (zone-plate PSF) full width at half maximum.
    surface_band_nm : float, optional
        Width (in depth) of the surface bands; default ``max(stxm_pixel_nm, psf_fwhm_nm)`` (one resolution
        element, so every surface has about one row of STXM pixels in its band).
    bulk_margin_nm : float, optional
        Minimum depth of bulk pixels; default ``surface_offset_nm + surface_band_nm``.
    surface_offset_nm : float, optional
        Depth at which the bands start; default the contamination distance (the conservative start; the
        data-derived start is :func:`surface_start_from_data`).

    Returns
    -------
    dict
        ``sigma_eff_nm`` (probe ⊗ pixel footprint), ``contamination_nm`` (``2.326·sigma_eff_nm``: < 1 % of
        the signal from beyond), ``surface_offset_nm``, ``surface_band_nm``, ``bulk_margin_nm``.

    Examples
    --------
    >>> d = default_distances(40.0, 50.0)
    >>> round(d["contamination_nm"], 1), d["surface_band_nm"], round(d["bulk_margin_nm"], 1)
    (56.2, 50.0, 106.2)
    """
    sigma_eff = effective_sigma_nm(stxm_pixel_nm, psf_fwhm_nm)
    contamination = CONTAMINATION_SIGMAS * sigma_eff
    offset = contamination if surface_offset_nm is None else float(surface_offset_nm)
    band = float(max(stxm_pixel_nm, psf_fwhm_nm)) if surface_band_nm is None else float(surface_band_nm)
    margin = offset + band if bulk_margin_nm is None else float(bulk_margin_nm)
    return {"sigma_eff_nm": sigma_eff, "contamination_nm": contamination, "surface_offset_nm": offset,
            "surface_band_nm": band, "bulk_margin_nm": margin}


def effective_sigma_nm(stxm_pixel_nm: float, psf_fwhm_nm: float) -> float:
    """σ of the Gaussian that approximates the probe (FWHM ``psf_fwhm_nm``) ⊗ the square pixel footprint.

    Examples
    --------
    >>> round(effective_sigma_nm(40.0, 50.0), 2)
    24.17
    """
    return float(np.sqrt((psf_fwhm_nm / (2 * np.sqrt(2 * np.log(2)))) ** 2 + stxm_pixel_nm ** 2 / 12.0))


def contact_classes(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float, scale_nm: float) -> np.ndarray:
    """The class map with electrolyte-side and void pixels judged at the probe's scale.

    A segmented map often puts a rim one or two SEM pixels wide of electrolyte or interphase between NMC and
    a void (partial-volume pixels at the boundary), which would make every NMC surface an electrolyte
    contact. What an STXM pixel sees is decided over the probe's footprint, so the kind of contact is too:
    each non-particle pixel of class 2, 3 or 4 takes the majority kind — electrolyte side (2, 3) or void
    (4) — among such pixels within a Gaussian neighbourhood of sigma ``scale_nm / 2``; pixels that change
    side become 3 (electrolyte) or 4 (void). NMC and outside pixels are unchanged. On a map without thin
    rims this changes nothing but the pixels along a flat electrolyte–void border (none) and the corners
    of curved ones.

    Parameters
    ----------
    classes, particles : ndarray, shape (ny, nx)
        Class map and particle labels.
    sem_pixel_nm : float
        SEM pixel size.
    scale_nm : float
        Probe scale (e.g. the contamination distance of :func:`default_distances`).

    Returns
    -------
    ndarray of uint8

    Examples
    --------
    >>> c = np.full((30, 30), 4, np.uint8); c[:, :10] = 1; c[:, 10] = 3   # 1-px electrolyte rim on a void
    >>> int(contact_classes(c, (c == 1).astype(int), 10.0, 56.0)[5, 10])
    4
    """
    classes = np.asarray(classes)
    out = classes.astype(np.uint8).copy()
    free = (np.asarray(particles) == 0) & np.isin(classes,
                                                  (Class.INTERPHASE, Class.ELECTROLYTE, Class.VOID))
    if not free.any():
        return out
    sigma = max(float(scale_nm) / 2.0 / float(sem_pixel_nm), 0.5)
    side = ndimage.gaussian_filter((free & (classes != Class.VOID)).astype(float), sigma)
    void = ndimage.gaussian_filter((free & (classes == Class.VOID)).astype(float), sigma)
    to_void = free & (classes != Class.VOID) & (void > side)
    to_electrolyte = free & (classes == Class.VOID) & (side > void)
    out[to_void] = Class.VOID
    out[to_electrolyte] = Class.ELECTROLYTE
    return out


def _distance_to(mask: np.ndarray, sem_pixel_nm: float, edge_counts: bool = False) -> np.ndarray:
    """Distance (nm) from each pixel centre to the boundary of ``mask`` (∞ when ``mask`` is empty).

    Distance to the nearest centre of a ``mask`` pixel minus half a pixel; 0 on ``mask`` itself. With
    ``edge_counts`` the image border counts as part of ``mask`` (one pixel beyond the edge).
    """
    if edge_counts:
        padded = np.pad(mask, 1, constant_values=True)
        d = ndimage.distance_transform_edt(~padded)[1:-1, 1:-1]
    else:
        if not mask.any():
            return np.full(mask.shape, np.inf)
        d = ndimage.distance_transform_edt(~mask)
    return np.where(d > 0, (d - 0.5) * sem_pixel_nm, 0.0)


def sem_regions(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float, stxm_pixel_nm: float,
                psf_fwhm_nm: float = 50.0, *, surface_band_nm: float | None = None,
                surface_offset_nm: float | None = None, bulk_margin_nm: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Region and particle of every SEM pixel (definitions in the module docstring).

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void).
    particles : ndarray of int, shape (ny, nx)
        NMC particle ids, 0 = not a particle.
    sem_pixel_nm : float
        SEM pixel size.
    stxm_pixel_nm : float
        Pixel size of the STXM stack whose pixels will be classified.
    psf_fwhm_nm : float
        Probe FWHM.
    surface_band_nm, surface_offset_nm, bulk_margin_nm : float, optional
        Band width, depth at which the band starts, minimum bulk depth (see :func:`default_distances`).

    Returns
    -------
    region_sem : ndarray of uint8
    particle_sem : ndarray of int64
        Particle id; interphase pixels get the id of the nearest particle.
    parameters : dict
    """
    classes = np.asarray(classes)
    particles = np.asarray(particles).astype(np.int64)
    dist = default_distances(stxm_pixel_nm, psf_fwhm_nm, surface_band_nm, bulk_margin_nm, surface_offset_nm)
    band, margin, offset = dist["surface_band_nm"], dist["bulk_margin_nm"], dist["surface_offset_nm"]
    reach = offset + band      # a pixel this close to a second kind of surface is in both bands: excluded
    params = {**dist, "psf_fwhm_nm": float(psf_fwhm_nm), "stxm_pixel_nm": float(stxm_pixel_nm),
              "sem_pixel_nm": float(sem_pixel_nm)}

    region = np.zeros(classes.shape, dtype=np.uint8)
    region[classes == Class.INTERPHASE] = REGION_CODES["interphase"]
    region[classes == Class.ELECTROLYTE] = REGION_CODES["electrolyte"]
    region[classes == Class.VOID] = REGION_CODES["void"]
    region[(classes == Class.NMC) & (particles == 0)] = REGION_CODES["nmc_unassigned"]

    in_particle = particles > 0
    nmc_any = in_particle | (classes == Class.NMC)
    kinds = contact_classes(classes, particles, sem_pixel_nm, dist["contamination_nm"])
    d_electrolyte = _distance_to(np.isin(kinds, (Class.INTERPHASE, Class.ELECTROLYTE)) & ~in_particle,
                                 sem_pixel_nm)
    d_void = _distance_to((kinds == Class.VOID) & ~in_particle, sem_pixel_nm)
    d_unknown = _distance_to((classes == Class.OUTSIDE) & ~in_particle, sem_pixel_nm, edge_counts=True)

    pad = int(np.ceil((margin + reach) / sem_pixel_nm)) + 2
    for sl, pid in _particle_slices(particles, pad):
        own = particles[sl] == pid
        depth = _distance_to(~own, sem_pixel_nm, edge_counts=True)
        d_nmc = _distance_to(nmc_any[sl] & ~own, sem_pixel_nm)
        de, dv, du = d_electrolyte[sl], d_void[sl], d_unknown[sl]
        kinds = np.stack([de, dv, du, d_nmc])  # nearest surface kind: 0 electrolyte, 1 void, 2 unknown, 3 nmc
        nearest = np.argmin(kinds, axis=0)
        in_band = (depth >= offset) & (depth < offset + band)
        clean_e = (nearest == 0) & (dv >= reach) & (du >= reach)
        clean_v = (nearest == 1) & (de >= reach) & (du >= reach)
        r = np.full(own.shape, REGION_CODES["nmc_transition"], dtype=np.uint8)
        r[depth < offset] = REGION_CODES["nmc_edge"]
        r[in_band] = REGION_CODES["surface_excluded"]
        r[in_band & clean_e] = REGION_CODES["surface_electrolyte"]
        r[in_band & clean_v] = REGION_CODES["surface_void"]
        r[depth >= margin] = REGION_CODES["bulk"]
        sub = region[sl]
        sub[own] = r[own]

    owner = particles.copy()
    inter = (classes == Class.INTERPHASE) & ~in_particle
    if inter.any() and in_particle.any():
        idx = ndimage.distance_transform_edt(~in_particle, return_distances=False, return_indices=True)
        owner[inter] = particles[idx[0][inter], idx[1][inter]]
    return region, owner, params


def _stxm_centres_on_sem(matrix, stxm_shape, sem_shape):
    """Nearest SEM pixel ``(iy, ix)`` under each STXM pixel centre (flattened) and whether it is inside."""
    ny, nx = int(stxm_shape[0]), int(stxm_shape[1])
    yy, xx = np.mgrid[0:ny, 0:nx]
    centres = transform_points(np.asarray(matrix, float), np.column_stack([xx.ravel(), yy.ravel()]))
    ix = np.floor(centres[:, 0] + 0.5).astype(np.int64)
    iy = np.floor(centres[:, 1] + 0.5).astype(np.int64)
    inside = (ix >= 0) & (iy >= 0) & (ix < sem_shape[1]) & (iy < sem_shape[0])
    return np.where(inside, iy, 0), np.where(inside, ix, 0), inside


def bias_tolerance(n_pairs: int, max_fpr: float = 0.06, alpha: float = 0.05) -> float:
    """Largest bias, in standard errors of the paired difference, that keeps a two-tailed paired t test's
    false-positive rate at level ``alpha`` at or below ``max_fpr``.

    A bias ``b`` shifts the t statistic by ``k = b / SE``: under the null it follows a non-central t with
    ``n_pairs − 1`` degrees of freedom and non-centrality ``k``, which rejects more often than ``alpha``.
    Returns the ``k`` at which that rate equals ``max_fpr``.

    Examples
    --------
    >>> round(bias_tolerance(1000), 2)      # ≈ the normal limit: P(|Z + k| > 1.96) = 0.06
    0.29
    """
    from scipy import optimize, stats

    df = max(int(n_pairs) - 1, 1)
    tq = float(stats.t.isf(alpha / 2, df))

    def excess(k):
        return float(stats.nct.sf(tq, df, k) + stats.nct.cdf(-tq, df, k)) - max_fpr

    return float(optimize.brentq(excess, 0.0, 5.0))


def surface_start_from_data(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float,
                            matrix: np.ndarray, stxm_pixel_nm: float, psf_fwhm_nm: float, egt2g: np.ndarray,
                            egt2g_sigma: np.ndarray, egt2g_valid: np.ndarray, amplitude_t2g: np.ndarray,
                            amplitude_eg: np.ndarray, *, surface_band_nm: float | None = None,
                            max_fpr: float = 0.06, alpha: float = 0.05, min_pairs: int = 3,
                            min_interphase_pixels: int = 20, criterion: str = "band_mean") -> dict:
    """Depth at which the surface bands start, derived from this lamella (rule in the module docstring).

    Parameters
    ----------
    classes, particles : ndarray, shape (ny_sem, nx_sem)
        Class map and particle labels.
    sem_pixel_nm : float
        SEM pixel size.
    matrix : ndarray, shape (3, 3)
        STXM pixel → SEM pixel.
    stxm_pixel_nm, psf_fwhm_nm : float
        STXM pixel size and probe FWHM.
    egt2g, egt2g_sigma, egt2g_valid : ndarray, shape (ny, nx)
        e_g/t_2g ratio, its uncertainty, validity (:class:`ceimap.segment.spectra.EgT2gMap`).
    amplitude_t2g, amplitude_eg : ndarray, shape (ny, nx)
        Fitted t_2g and e_g peak heights (OD) of every pixel (valid or not).
    surface_band_nm : float, optional
        Band width (default as :func:`default_distances`).
    max_fpr : float
        False-positive rate of the paired t test (at ``alpha``) that the remaining bias may cause at most.
    alpha : float
        Level of the test.
    min_pairs, min_interphase_pixels : int
        Below this many particles with both bands (at the conservative start) or STXM pixels with an
        interphase weight ≥ 0.25, the data cannot tell: the conservative 1 % depth is used.
    criterion : {"band_mean", "pixel"}
        Whose bias is bounded: ``"band_mean"`` (default) the band mean's — the average of ``Δ`` over the
        band's depths weighted by the NMC pixels at each depth on each side, with its standard error from
        the same covariance —, which is the bias the paired difference of band means carries; ``"pixel"``
        the band's shallowest pixels, ``B(d)`` at the start (more conservative).

    Returns
    -------
    dict
        ``surface_offset_nm`` (the start), ``rule`` (``"bias ≤ k·SE"`` or ``"fallback: 1 % contamination
        depth"``), ``reason``, ``k``, ``se_paired_difference``, ``n_pairs``,
        ``tolerance`` (k·SE), ``bias_bound_at_start``, ``bias_bound_at_contamination``, ``depths_nm`` and
        ``bias_bound`` (the profile), class Ni amounts ``ni_amount`` and ratios ``ratio`` by class,
        ``interphase_ni_fraction`` (interphase / NMC Ni per unit area), ``n_interphase_pixels``,
        ``noise_rel2`` (bulk pixels' squared relative ratio uncertainty).
    """
    from scipy import stats

    classes = np.asarray(classes)
    particles = np.asarray(particles).astype(np.int64)
    dist = default_distances(stxm_pixel_nm, psf_fwhm_nm, surface_band_nm)
    sigma, c1, band = dist["sigma_eff_nm"], dist["contamination_nm"], dist["surface_band_nm"]
    out = {"surface_offset_nm": c1, "rule": "fallback: 1 % contamination depth", "reason": None,
           "criterion": criterion, "max_fpr": float(max_fpr), "alpha": float(alpha), "k": np.nan,
           "se_paired_difference": np.nan,
           "n_pairs": 0, "tolerance": np.nan, "bias_bound_at_start": np.nan,
           "bias_bound_at_contamination": np.nan, "n_interphase_pixels": 0}

    def fallback(reason):
        out["reason"] = reason
        return out

    stxm_shape = np.asarray(egt2g).shape
    iy, ix, inside = _stxm_centres_on_sem(matrix, stxm_shape, classes.shape)
    a_t = np.asarray(amplitude_t2g, float).ravel()
    a_e = np.asarray(amplitude_eg, float).ravel()
    ratio = np.where(np.asarray(egt2g_valid, bool), np.asarray(egt2g, float), np.nan).ravel()
    rel = (np.asarray(egt2g_sigma, float) / np.asarray(egt2g, float)).ravel()

    # 1. the probe ⊗ pixel weight of every class seen by every STXM pixel (outside = class 0 too)
    sigma_px = sigma / float(sem_pixel_nm)
    weights_sem = np.stack([ndimage.gaussian_filter((classes == c).astype(np.float32), sigma_px, mode="nearest")
                            for c in Class])
    w = weights_sem[:, iy, ix].T.astype(float)                                 # (n_stxm, 5)
    ok = inside & np.isfinite(a_t) & np.isfinite(a_e)
    n_inter = int(np.sum(ok & (w[:, Class.INTERPHASE] >= 0.25)))
    out["n_interphase_pixels"] = n_inter
    if n_inter < min_interphase_pixels:
        return fallback(f"{n_inter} STXM pixel(s) with an interphase weight ≥ 0.25 (need "
                        f"{min_interphase_pixels}): the map cannot tell what an interphase holds")

    # 2. Ni amount (t2g height) and e_g height per unit weight of each class, by least squares on the pixels
    #    near an NMC surface or in the interphase (the amplitudes are linear in the mixture; the ratio is not)
    near = ok & (((w[:, Class.NMC] > 0.02) & (w[:, Class.NMC] < 0.98)) | (w[:, Class.INTERPHASE] > 0.02))
    present = [c for c in Class if w[near, c].max(initial=0.0) > 0.05]
    if Class.NMC not in present or near.sum() < 10 * len(present):
        return fallback(f"{int(near.sum())} STXM pixel(s) near NMC surfaces: too few to measure the classes' Ni")
    design = w[near][:, present]
    amount, *_ = np.linalg.lstsq(design, a_t[near], rcond=None)
    eg_height, *_ = np.linalg.lstsq(design, a_e[near], rcond=None)
    a = dict(zip(present, amount))
    b = dict(zip(present, eg_height))
    if a[Class.NMC] <= 0:
        return fallback("the NMC class holds no measurable Ni")
    r_nmc = b[Class.NMC] / a[Class.NMC]
    # excess e_g height over what the NMC's own ratio predicts, with its covariance (one regression)
    excess_y = a_e[near] - r_nmc * a_t[near]
    gamma, *_ = np.linalg.lstsq(design, excess_y, rcond=None)
    resid = excess_y - design @ gamma
    dof = max(int(near.sum()) - len(present), 1)
    cov = float(resid @ resid / dof) * np.linalg.pinv(design.T @ design)
    bulk_px = ok & (w[:, Class.NMC] > 0.99) & np.isfinite(ratio) & np.isfinite(rel)
    noise_rel2 = float(np.median(rel[bulk_px] ** 2)) if bulk_px.any() else 0.0

    # 3. what an NMC pixel at depth d sees, on each side: mean class weights of NMC SEM pixels by depth
    in_particle = particles > 0
    kinds = contact_classes(classes, particles, sem_pixel_nm, c1)
    d_e = _distance_to(np.isin(kinds, (Class.INTERPHASE, Class.ELECTROLYTE)) & ~in_particle, sem_pixel_nm)
    d_v = _distance_to((kinds == Class.VOID) & ~in_particle, sem_pixel_nm)
    d_u = _distance_to((classes == Class.OUTSIDE) & ~in_particle, sem_pixel_nm, edge_counts=True)
    depth = _distance_to(~in_particle, sem_pixel_nm, edge_counts=True)
    d_max = 3.09 * sigma                                                       # 0.1 % of the signal beyond
    reach = d_max + band
    side_e = in_particle & (d_e <= np.minimum(d_v, d_u)) & (d_v >= reach) & (d_u >= reach)
    side_v = in_particle & (d_v <= np.minimum(d_e, d_u)) & (d_e >= reach) & (d_u >= reach)
    if not side_e.any() or not side_v.any():
        return fallback("no clean electrolyte-side or void-side NMC surface")
    step = float(sem_pixel_nm)
    depths = np.arange(0.0, d_max + step, step)
    n_band = max(int(round(band / step)), 1)                 # depth steps in one band
    all_depths = np.arange(0.0, d_max + step * (n_band + 1), step)
    # per depth and side: the bias's sensitivity to γ (g·γ), the noise term, and the NMC pixel count
    g_side = np.full((2, all_depths.size, len(present)), np.nan)
    noise_side = np.full((2, all_depths.size), np.nan)
    count_side = np.zeros((2, all_depths.size))
    for j, d in enumerate(all_depths):
        for s_i, side in enumerate((side_e, side_v)):
            sel = side & (depth >= d) & (depth < d + step)
            if not sel.any():
                continue
            om = weights_sem[present][:, sel].mean(axis=1).astype(float)         # weights of present classes
            den = float(om @ amount)
            om_beyond = om.copy()
            om_beyond[present.index(Class.NMC)] = 0.0
            g_side[s_i, j] = om_beyond / den
            rho = den / a[Class.NMC]                                                    # signal relative to bulk
            noise_side[s_i, j] = r_nmc * noise_rel2 * (1.0 / rho ** 2 - 1.0)      # ratio-of-noisy-heights bias
            count_side[s_i, j] = float(sel.sum())
    if criterion == "pixel":
        ge, gv = g_side[0, :depths.size], g_side[1, :depths.size]                # (n_depths, n_present)
        profile = (ge - gv) @ gamma + noise_side[0, :depths.size] - noise_side[1, :depths.size]
        # the two sides' variances added (the covariance of the sides is left out)
        var_profile = (np.einsum("ij,jk,ik->i", np.nan_to_num(ge), cov, np.nan_to_num(ge))
                       + np.einsum("ij,jk,ik->i", np.nan_to_num(gv), cov, np.nan_to_num(gv)))
        var_profile[~np.isfinite(profile)] = np.nan
    elif criterion == "band_mean":
        profile, var_profile = np.full(depths.size, np.nan), np.full(depths.size, np.nan)
        for j in range(depths.size):
            band_idx = slice(j, j + n_band)
            parts = []
            for s_i in (0, 1):
                n = count_side[s_i, band_idx]
                ok_d = (n > 0) & np.isfinite(noise_side[s_i, band_idx])
                if not ok_d.any():
                    break
                wgt = np.where(ok_d, n, 0.0) / n[ok_d].sum()
                parts.append((wgt @ np.nan_to_num(g_side[s_i, band_idx]),
                              wgt @ np.nan_to_num(noise_side[s_i, band_idx])))
            if len(parts) < 2:
                continue
            gb = parts[0][0] - parts[1][0]
            profile[j] = float(gb @ gamma + parts[0][1] - parts[1][1])
            var_profile[j] = float(gb @ cov @ gb)
    else:
        raise ValueError(f"criterion must be 'pixel' or 'band_mean', not {criterion!r}")
    bound = np.abs(profile) + float(stats.norm.isf(0.05)) * np.sqrt(var_profile)

    # 4. the test's own uncertainty: SE of the per-particle paired difference with bands at the 1 % depth
    region1, owner1, _ = sem_regions(classes, particles, sem_pixel_nm, stxm_pixel_nm, psf_fwhm_nm,
                                     surface_band_nm=band, surface_offset_nm=c1)
    reg = np.where(inside, region1[iy, ix], 0)
    pid = np.where(inside, owner1[iy, ix], 0)
    diffs = []
    for p in np.unique(pid[pid > 0]):
        mine = (pid == p) & np.isfinite(ratio)
        ve = ratio[mine & (reg == REGION_CODES["surface_electrolyte"])]
        vv = ratio[mine & (reg == REGION_CODES["surface_void"])]
        if ve.size and vv.size:
            diffs.append(ve.mean() - vv.mean())
    n_pairs = len(diffs)
    out["n_pairs"] = n_pairs
    out.update(ni_amount={c.name.lower(): float(a[c]) for c in present},
               ratio={c.name.lower(): (float(b[c] / a[c]) if a[c] > 0 else np.nan) for c in present},
               interphase_ni_fraction=float(a.get(Class.INTERPHASE, np.nan) / a[Class.NMC]), noise_rel2=noise_rel2,
               depths_nm=[float(d) for d in depths], bias_bound=[float(v) for v in bound])
    if n_pairs < min_pairs:
        return fallback(f"{n_pairs} particle(s) with both bands at the 1 % depth (need {min_pairs}): no "
                        "standard error to compare the bias with")
    se = float(np.std(diffs, ddof=1) / np.sqrt(n_pairs))
    k = bias_tolerance(n_pairs, max_fpr, alpha)
    tol = k * se
    out.update(k=k, se_paired_difference=se, tolerance=tol)
    j1 = int(np.argmin(np.abs(depths - c1)))
    out["bias_bound_at_contamination"] = float(bound[j1])
    bad = ~(np.nan_to_num(bound, nan=np.inf) <= tol)
    if bad[-1]:
        out.update(surface_offset_nm=float(depths[-1]), rule="bias ≤ k·SE (not reached)",
                   bias_bound_at_start=float(bound[-1]),
                   reason=f"the bias bound exceeds k·SE = {tol:.4f} down to the 0.1 % depth "
                          f"({depths[-1]:.0f} nm): bands start there")
        return out
    first = int(np.nonzero(bad)[0].max() + 1) if bad.any() else 0
    rule = "bias ≤ k·SE" + (" (band mean)" if criterion == "band_mean" else "")
    out.update(surface_offset_nm=float(depths[first]), rule=rule, bias_bound_at_start=float(bound[first]))
    return out


def _particle_slices(particles: np.ndarray, pad: int):
    """(slice, particle id) of each particle's bounding box padded by ``pad`` pixels."""
    objects = ndimage.find_objects(particles)
    ny, nx = particles.shape
    for k, obj in enumerate(objects):
        if obj is None:
            continue
        ys, xs = obj
        sl = (slice(max(ys.start - pad, 0), min(ys.stop + pad, ny)),
              slice(max(xs.start - pad, 0), min(xs.stop + pad, nx)))
        yield sl, k + 1


def stxm_regions(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float, matrix: np.ndarray,
                 stxm_shape, stxm_pixel_nm: float, psf_fwhm_nm: float = 50.0, *,
                 surface_band_nm: float | None = None, surface_offset_nm: float | None = None,
                 bulk_margin_nm: float | None = None, ni_map: dict | None = None,
                 max_fpr: float = 0.06, start_criterion: str = "band_mean") -> RegionMaps:
    """Particle and region of every native STXM pixel.

    The regions are defined on the SEM grid (:func:`sem_regions`), with distances that already include the
    STXM pixel's footprint and the probe; each STXM pixel takes the region and particle of the SEM pixel
    under its centre (mapped by ``matrix``). Pixels whose centre falls outside the SEM image are
    ``outside``.

    Parameters
    ----------
    classes, particles : ndarray, shape (ny_sem, nx_sem)
        Class map and particle labels on the SEM grid.
    sem_pixel_nm : float
        SEM pixel size.
    matrix : ndarray, shape (3, 3)
        STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``.
    stxm_shape : (int, int)
        ``(ny, nx)`` of the STXM grid.
    stxm_pixel_nm : float
        STXM pixel size.
    psf_fwhm_nm : float
        Probe FWHM.
    surface_band_nm, surface_offset_nm, bulk_margin_nm : float, optional
        See :func:`default_distances`. A given ``surface_offset_nm`` is used as is.
    ni_map : dict, optional
        ``egt2g, egt2g_sigma, egt2g_valid, amplitude_t2g, amplitude_eg`` on this STXM grid. With it (and no
        ``surface_offset_nm``) the bands start at the depth derived from the data
        (:func:`surface_start_from_data`), bulk at the conservative 1 % depth + band; without it at the 1 %
        depth.
    max_fpr : float
        See :func:`surface_start_from_data`.
    start_criterion : {"pixel", "band_mean"}
        ``criterion`` of :func:`surface_start_from_data`.

    Returns
    -------
    RegionMaps
        ``parameters["surface_offset_rule"]`` says how the start was chosen, with the derived numbers.

    Examples
    --------
    >>> import numpy as np
    >>> classes = np.full((80, 80), 3, np.uint8); classes[10:70, 10:70] = 1
    >>> particles = (classes == 1).astype(np.uint32)
    >>> maps = stxm_regions(classes, particles, 10.0, np.diag([4.0, 4.0, 1.0]), (20, 20), 40.0)
    >>> int(maps.region[10, 10]) == REGION_CODES["bulk"], int(maps.particle_id[10, 10])
    (True, 1)
    """
    if surface_offset_nm is not None:
        rule = {"rule": "fixed (surface_offset_nm given)", "surface_offset_nm": float(surface_offset_nm),
                "reason": None}
    elif ni_map is None:
        rule = {"rule": "fallback: 1 % contamination depth", "reason": "no Ni amplitude maps given"}
    else:
        rule = surface_start_from_data(classes, particles, sem_pixel_nm, matrix, stxm_pixel_nm, psf_fwhm_nm,
                                       ni_map["egt2g"], ni_map["egt2g_sigma"], ni_map["egt2g_valid"],
                                       ni_map["amplitude_t2g"], ni_map["amplitude_eg"],
                                       surface_band_nm=surface_band_nm, max_fpr=max_fpr,
                                       criterion=start_criterion)
        surface_offset_nm = rule["surface_offset_nm"]
        if bulk_margin_nm is None:   # bulk stays beyond the conservative start: its statistics do not move
            d1 = default_distances(stxm_pixel_nm, psf_fwhm_nm, surface_band_nm)
            bulk_margin_nm = max(d1["bulk_margin_nm"], surface_offset_nm + d1["surface_band_nm"])
    region_sem, particle_sem, params = sem_regions(
        classes, particles, sem_pixel_nm, stxm_pixel_nm, psf_fwhm_nm, surface_band_nm=surface_band_nm,
        surface_offset_nm=surface_offset_nm, bulk_margin_nm=bulk_margin_nm)
    params["surface_offset_rule"] = rule
    ny, nx = int(stxm_shape[0]), int(stxm_shape[1])
    iy, ix, inside = _stxm_centres_on_sem(matrix, (ny, nx), region_sem.shape)
    region = np.where(inside, region_sem[iy, ix], 0).astype(np.uint8)
    particle_id = np.where(inside, particle_sem[iy, ix], 0).astype(np.int64)
    return RegionMaps(region=region.reshape(ny, nx), particle_id=particle_id.reshape(ny, nx),
                      region_sem=region_sem, particle_sem=particle_sem, parameters=params)


def pixel_table(maps: RegionMaps, egt2g: np.ndarray, egt2g_sigma: np.ndarray, egt2g_valid: np.ndarray):
    """One row per native STXM pixel inside the analysed area.

    Parameters
    ----------
    maps : RegionMaps
        Regions on the same STXM grid as the maps below.
    egt2g, egt2g_sigma : ndarray, shape (ny, nx)
        e_g/t_2g ratio and its standard uncertainty.
    egt2g_valid : ndarray of bool, shape (ny, nx)
        Pixels with a measurable ratio; invalid pixels keep their row with NaN values.

    Returns
    -------
    pandas.DataFrame
        Columns ``x, y, particle_id, region, egt2g, egt2g_sigma`` (``x`` column, ``y`` row of the STXM
        grid; ``region`` a name of :data:`REGION_CODES`); pixels of region ``outside`` are left out.
    """
    import pandas as pd

    valid = np.asarray(egt2g_valid, dtype=bool) & np.isfinite(egt2g)
    yy, xx = np.nonzero(maps.region != REGION_CODES["outside"])
    names = np.array([REGION_NAMES[c] for c in range(_N_REGIONS)], dtype=object)
    ratio = np.where(valid, egt2g, np.nan)
    sigma = np.where(valid, egt2g_sigma, np.nan)
    return pd.DataFrame({
        "x": xx.astype(np.int64),
        "y": yy.astype(np.int64),
        "particle_id": maps.particle_id[yy, xx].astype(np.int64),
        "region": names[maps.region[yy, xx]],
        "egt2g": ratio[yy, xx].astype(float),
        "egt2g_sigma": sigma[yy, xx].astype(float),
    })
