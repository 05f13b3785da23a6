"""Per-particle table: size, position, perimeter contact ratios and e_g/t_2g by region (native STXM pixels).

The first twelve columns are the CONTRACT ``particles.csv`` columns; the rest are extras that the tests and
the report use (per-region sd and counts, bulk mean, perimeter).

Perimeter contact ratios count the pixel faces between a particle and its 4-neighbours on the SEM grid by the
class of the neighbour: electrolyte (classes interphase and electrolyte — the interphase is the contact with
the electrolyte), void, other NMC, outside (class 0 or the image border). The staircase of a digital boundary
lengthens every kind of contact alike, so ratios of face counts are unbiased where lengths are not. Faces
with outside pixels are left out of the denominator (what lies beyond the analysed area is unknown); the
fraction of the perimeter they make is reported as ``perimeter_fraction_outside``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ceimap.segment import Class

PARTICLE_COLUMNS = [
    "particle_id", "area_nm2", "equivalent_diameter_nm", "centroid_x_nm", "centroid_y_nm",
    "egt2g_mean", "egt2g_sd", "egt2g_n", "contact_ratio_electrolyte", "contact_ratio_void",
    "egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean",
]
"""The CONTRACT columns of ``particles.csv``, in order."""

NMC_REGIONS = ("bulk", "surface_electrolyte", "surface_void", "surface_excluded", "nmc_transition")
"""Regions whose pixels make a particle's overall e_g/t_2g: its NMC beyond the probe's reach of any neighbour
(not ``nmc_edge``, whose pixels mix with interphase or electrolyte signal, and not the interphase)."""

_KIND_ELECTROLYTE, _KIND_VOID, _KIND_NMC, _KIND_OUTSIDE = 0, 1, 2, 3
_KIND_OF_CLASS = {Class.OUTSIDE: _KIND_OUTSIDE, Class.NMC: _KIND_NMC, Class.INTERPHASE: _KIND_ELECTROLYTE,
                  Class.ELECTROLYTE: _KIND_ELECTROLYTE, Class.VOID: _KIND_VOID}
"""The kind of neighbour a particle faces, by the neighbour's class (interphase counts as electrolyte)."""


def perimeter_contacts(classes: np.ndarray, particles: np.ndarray) -> pd.DataFrame:
    """Pixel faces between each particle and its neighbours, by the neighbour's kind.

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes.
    particles : ndarray of int, shape (ny, nx)
        Particle ids, 0 = none.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``particle_id``; columns ``faces_electrolyte`` (interphase or electrolyte),
        ``faces_void``, ``faces_nmc`` (another particle or unlabelled NMC), ``faces_outside`` (class 0 or the
        image border).

    Examples
    --------
    >>> import numpy as np
    >>> classes = np.full((4, 6), 3, np.uint8); classes[:, 3:] = 4; classes[1:3, 2:4] = 1
    >>> particles = (classes == 1).astype(int)
    >>> perimeter_contacts(classes, particles).loc[1].tolist()
    [4, 4, 0, 0]
    """
    p = np.pad(np.asarray(particles).astype(np.int64), 1)
    c = np.pad(np.asarray(classes).astype(np.int64), 1)
    kind_of_class = np.array([_KIND_OF_CLASS[c] for c in Class])
    n_max = int(p.max())
    counts = np.zeros((n_max + 1, 4), dtype=np.int64)
    core = (slice(1, -1), slice(1, -1))
    a = p[core]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = (slice(1 + dy, p.shape[0] - 1 + dy), slice(1 + dx, p.shape[1] - 1 + dx))
        b, cb = p[nb], c[nb]
        face = (a > 0) & (b != a)
        kind = np.where(b > 0, _KIND_NMC, kind_of_class[np.clip(cb, 0, int(max(Class)))])
        np.add.at(counts, (a[face], kind[face]), 1)
    ids = np.unique(a[a > 0])
    return pd.DataFrame(counts[ids], index=pd.Index(ids, name="particle_id"),
                        columns=["faces_electrolyte", "faces_void", "faces_nmc", "faces_outside"])


def _region_stats(pixels: pd.DataFrame, regions) -> pd.DataFrame:
    values = pd.to_numeric(pixels["egt2g"], errors="coerce").astype(float)
    ids = pd.to_numeric(pixels["particle_id"], errors="coerce")
    keep = pixels["region"].isin(list(regions)) & np.isfinite(values) & (ids > 0)
    g = values[keep].groupby(ids[keep].astype(np.int64))
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.size()})


def particle_table(classes: np.ndarray, particles: np.ndarray, sem_pixel_nm: float,
                   pixels: pd.DataFrame) -> pd.DataFrame:
    """One row per particle (CONTRACT ``particles.csv`` columns first, then extras).

    Parameters
    ----------
    classes, particles : ndarray, shape (ny_sem, nx_sem)
        Class map and particle labels on the SEM grid (size, centroid and perimeter come from here).
    sem_pixel_nm : float
        SEM pixel size.
    pixels : pandas.DataFrame
        Native STXM pixel table (:func:`ceimap.stats.regions.pixel_table`): ``particle_id, region, egt2g``.

    Returns
    -------
    pandas.DataFrame
        ``particle_id, area_nm2, equivalent_diameter_nm, centroid_x_nm, centroid_y_nm`` (SEM grid);
        ``egt2g_mean, egt2g_sd, egt2g_n`` over the particle's valid native STXM pixels in NMC regions beyond
        the probe's reach of its neighbours (:data:`NMC_REGIONS`; sd with ddof=1, NaN for one pixel); ``contact_ratio_electrolyte,
        contact_ratio_void`` (fractions of the known perimeter); ``egt2g_surface_electrolyte_mean,
        egt2g_surface_void_mean`` (NaN when the particle has no such band pixel); extras
        ``egt2g_bulk_mean/sd/n``, ``egt2g_surface_electrolyte_sd/n``, ``egt2g_surface_void_sd/n``,
        ``egt2g_interphase_mean/n``, ``contact_ratio_nmc``, ``perimeter_fraction_outside``,
        ``perimeter_faces``.
    """
    particles = np.asarray(particles).astype(np.int64)
    ids = np.unique(particles[particles > 0])
    out = pd.DataFrame({"particle_id": ids.astype(np.int64)})
    if ids.size:
        index = ids
        area_px = ndimage.sum_labels(np.ones_like(particles), particles, index)
        cy, cx = np.array(ndimage.center_of_mass(np.ones_like(particles), particles, index)).reshape(-1, 2).T
    else:
        area_px = cy = cx = np.empty(0)
    out["area_nm2"] = area_px * sem_pixel_nm ** 2
    out["equivalent_diameter_nm"] = np.sqrt(4.0 * out["area_nm2"] / np.pi)
    out["centroid_x_nm"] = cx * sem_pixel_nm
    out["centroid_y_nm"] = cy * sem_pixel_nm

    whole = _region_stats(pixels, NMC_REGIONS).reindex(ids)
    out["egt2g_mean"] = whole["mean"].to_numpy()
    out["egt2g_sd"] = whole["sd"].to_numpy()
    out["egt2g_n"] = whole["n"].fillna(0).astype(np.int64).to_numpy()

    faces = perimeter_contacts(classes, particles).reindex(ids).fillna(0)
    known = (faces["faces_electrolyte"] + faces["faces_void"] + faces["faces_nmc"]).to_numpy(float)
    total = known + faces["faces_outside"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["contact_ratio_electrolyte"] = np.where(known > 0, faces["faces_electrolyte"] / known, np.nan)
        out["contact_ratio_void"] = np.where(known > 0, faces["faces_void"] / known, np.nan)
        contact_nmc = np.where(known > 0, faces["faces_nmc"] / known, np.nan)
        outside = np.where(total > 0, faces["faces_outside"] / total, np.nan)

    regional = {name: _region_stats(pixels, [name]).reindex(ids)
                for name in ("surface_electrolyte", "surface_void", "bulk", "interphase")}
    out["egt2g_surface_electrolyte_mean"] = regional["surface_electrolyte"]["mean"].to_numpy()
    out["egt2g_surface_void_mean"] = regional["surface_void"]["mean"].to_numpy()
    for name in ("bulk", "surface_electrolyte", "surface_void"):
        if name == "bulk":
            out["egt2g_bulk_mean"] = regional[name]["mean"].to_numpy()
        out[f"egt2g_{name}_sd"] = regional[name]["sd"].to_numpy()
        out[f"egt2g_{name}_n"] = regional[name]["n"].fillna(0).astype(np.int64).to_numpy()
    out["egt2g_interphase_mean"] = regional["interphase"]["mean"].to_numpy()
    out["egt2g_interphase_n"] = regional["interphase"]["n"].fillna(0).astype(np.int64).to_numpy()
    out["contact_ratio_nmc"] = contact_nmc
    out["perimeter_fraction_outside"] = outside
    out["perimeter_faces"] = total.astype(np.int64)
    return out
