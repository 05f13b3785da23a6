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
size). Material farther than the *contamination distance* ``c = 2.326·σ_eff`` from the pixel centre contributes
less than 1 % of its signal. This matters: next to electrolyte the NMC surface faces an interphase that holds
(reduced) Ni, next to a void it faces nothing, so bands that start at the NMC edge are blurred differently and
a chemically null difference looks real. The bands therefore start at depth ``c``:

===========================  ==================================================================================
region                        rule (pixel ``q`` of particle ``p``)
===========================  ==================================================================================
``surface_electrolyte``       ``surface_offset_nm ≤ depth < surface_offset_nm + surface_band_nm`` (default
                              offset ``c``, width ``max(p, FWHM)``), nearest surface kind electrolyte/
                              interphase, and no void and no unknown pixel within the band's outer depth
``surface_void``              the same depths, nearest surface kind void, no electrolyte/interphase and no
                              unknown pixel within the band's outer depth
``surface_excluded``          in the band depth, but near both kinds (or near unknown pixels, or the nearest
                              surface is another particle): mixed, not used in the comparison
``nmc_edge``                  NMC shallower than ``surface_offset_nm``: the probe sees the neighbours, so
                              these pixels are mixtures and enter no statistic of the particle
``nmc_transition``            NMC deeper than the band but not yet bulk (only with a custom ``bulk_margin_nm``)
``bulk``                      ``depth ≥ bulk_margin_nm`` (default ``surface_offset_nm + surface_band_nm``)
``interphase``                class 2; assigned to the nearest particle
``electrolyte`` / ``void``    classes 3 / 4 (no particle)
``nmc_unassigned``            class 1 outside every labelled particle
``outside``                   class 0, or beyond the SEM image
===========================  ==================================================================================

Both surface bands are therefore the same depth into NMC, measured from the same kind of boundary (the NMC
class edge), beyond the probe's reach of either neighbour, and pixels within the band depth of both kinds are
excluded: their mixing is alike by construction. Set ``surface_offset_nm=0`` to measure at the contact itself
(the paper's "surface in contact with electrolyte"), knowing that the electrolyte-side band then includes
interphase signal. The interphase itself is a separate region (reported as ``interphase``).

On the STXM grid each pixel takes the region and particle of the SEM pixel under its centre (the distances
already account for its footprint); :func:`segment.register.transform_points` maps the centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segment.register import transform_points

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

NMC, INTERPHASE, ELECTROLYTE, VOID = 1, 2, 3, 4


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
        Depth at which the bands start; default the contamination distance.

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
    sigma_eff = float(np.sqrt((psf_fwhm_nm / (2 * np.sqrt(2 * np.log(2)))) ** 2 + stxm_pixel_nm ** 2 / 12.0))
    contamination = 2.326 * sigma_eff
    offset = contamination if surface_offset_nm is None else float(surface_offset_nm)
    band = float(max(stxm_pixel_nm, psf_fwhm_nm)) if surface_band_nm is None else float(surface_band_nm)
    margin = offset + band if bulk_margin_nm is None else float(bulk_margin_nm)
    return {"sigma_eff_nm": sigma_eff, "contamination_nm": contamination, "surface_offset_nm": offset,
            "surface_band_nm": band, "bulk_margin_nm": margin}


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
    free = (np.asarray(particles) == 0) & np.isin(classes, (INTERPHASE, ELECTROLYTE, VOID))
    if not free.any():
        return out
    sigma = max(float(scale_nm) / 2.0 / float(sem_pixel_nm), 0.5)
    side = ndimage.gaussian_filter((free & (classes != VOID)).astype(float), sigma)
    void = ndimage.gaussian_filter((free & (classes == VOID)).astype(float), sigma)
    to_void = free & (classes != VOID) & (void > side)
    to_electrolyte = free & (classes == VOID) & (side > void)
    out[to_void] = VOID
    out[to_electrolyte] = ELECTROLYTE
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
    region[classes == INTERPHASE] = REGION_CODES["interphase"]
    region[classes == ELECTROLYTE] = REGION_CODES["electrolyte"]
    region[classes == VOID] = REGION_CODES["void"]
    region[(classes == NMC) & (particles == 0)] = REGION_CODES["nmc_unassigned"]

    in_particle = particles > 0
    nmc_any = in_particle | (classes == NMC)
    kinds = contact_classes(classes, particles, sem_pixel_nm, dist["contamination_nm"])
    d_electrolyte = _distance_to(np.isin(kinds, (INTERPHASE, ELECTROLYTE)) & ~in_particle, sem_pixel_nm)
    d_void = _distance_to((kinds == VOID) & ~in_particle, sem_pixel_nm)
    d_unknown = _distance_to((classes == 0) & ~in_particle, sem_pixel_nm, edge_counts=True)

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
    inter = (classes == INTERPHASE) & ~in_particle
    if inter.any() and in_particle.any():
        idx = ndimage.distance_transform_edt(~in_particle, return_distances=False, return_indices=True)
        owner[inter] = particles[idx[0][inter], idx[1][inter]]
    return region, owner, params


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
                 bulk_margin_nm: float | None = None) -> RegionMaps:
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
        See :func:`default_distances`.

    Returns
    -------
    RegionMaps

    Examples
    --------
    >>> import numpy as np
    >>> classes = np.full((80, 80), 3, np.uint8); classes[10:70, 10:70] = 1
    >>> particles = (classes == 1).astype(np.uint32)
    >>> maps = stxm_regions(classes, particles, 10.0, np.diag([4.0, 4.0, 1.0]), (20, 20), 40.0)
    >>> int(maps.region[10, 10]) == REGION_CODES["bulk"], int(maps.particle_id[10, 10])
    (True, 1)
    """
    region_sem, particle_sem, params = sem_regions(
        classes, particles, sem_pixel_nm, stxm_pixel_nm, psf_fwhm_nm, surface_band_nm=surface_band_nm,
        surface_offset_nm=surface_offset_nm, bulk_margin_nm=bulk_margin_nm)
    ny, nx = int(stxm_shape[0]), int(stxm_shape[1])
    yy, xx = np.mgrid[0:ny, 0:nx]
    centres = transform_points(np.asarray(matrix, float), np.column_stack([xx.ravel(), yy.ravel()]))
    ix = np.floor(centres[:, 0] + 0.5).astype(np.int64)
    iy = np.floor(centres[:, 1] + 0.5).astype(np.int64)
    inside = (ix >= 0) & (iy >= 0) & (ix < region_sem.shape[1]) & (iy < region_sem.shape[0])
    region = np.zeros(ny * nx, dtype=np.uint8)
    particle_id = np.zeros(ny * nx, dtype=np.int64)
    region[inside] = region_sem[iy[inside], ix[inside]]
    particle_id[inside] = particle_sem[iy[inside], ix[inside]]
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
