"""Ground truth on the SEM grid: class and particle maps, e_g/t_2g map, per-particle table, thickness points.

Definitions (also in ``datasets/README.md``):

- maps are the fine-grid truth sampled (nearest) at the SEM pixel centres;
- per-particle e_g/t_2g means are taken over the particle's fine pixels inside the SEM field:
  ``egt2g_bulk`` deeper than ``BULK_DEPTH_NM`` below every boundary of the particle;
  ``egt2g_surface_electrolyte`` within ``SURFACE_BAND_NM`` of its NMC–electrolyte/interphase contact and
  farther than that from any void contact; ``egt2g_surface_void`` within ``SURFACE_BAND_NM`` of a void (or
  crack) contact and farther than that from any electrolyte contact (the paper's "surfaces adjacent to
  voids but not in contact with the electrolyte");
- ``thickness.csv``: points every ``THICKNESS_SPACING_NM`` along each particle's outline (the 0.5 level of
  its mask) where the NMC faces electrolyte/interphase, with the *generated* interphase thickness there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import find_contours

from .microstructure import Microstructure
from .sem import fine_to_sem_coords
from .spec import LamellaSpec

BULK_DEPTH_NM = 150.0
SURFACE_BAND_NM = 100.0
THICKNESS_SPACING_NM = 20.0


def sample_to_sem(ms: Microstructure, spec: LamellaSpec, shape_yx, *arrays):
    """Nearest-neighbour samples of fine-grid arrays at the SEM pixel centres."""
    rows, cols = fine_to_sem_coords(spec, ms, shape_yx)
    ri = np.clip(np.round(rows).astype(int), 0, ms.classes.shape[0] - 1)
    ci = np.clip(np.round(cols).astype(int), 0, ms.classes.shape[1] - 1)
    return [a[np.ix_(ri, ci)] for a in arrays]


def field_mask_fine(ms: Microstructure, spec: LamellaSpec, shape_yx) -> np.ndarray:
    """Fine pixels inside the SEM field (the area the SEM pixels cover)."""
    ny, nx = ms.classes.shape
    y_nm = ms.origin_nm + np.arange(ny) * ms.pixel_nm
    x_nm = ms.origin_nm + np.arange(nx) * ms.pixel_nm
    h = spec.sem_pixel_nm
    in_y = (y_nm >= -h / 2) & (y_nm < (shape_yx[0] - 0.5) * h)
    in_x = (x_nm >= -h / 2) & (x_nm < (shape_yx[1] - 0.5) * h)
    return in_y[:, None] & in_x[None, :]


def particle_table(ms: Microstructure, spec: LamellaSpec, ratio: np.ndarray, params: list[dict],
                   particles_sem: np.ndarray, shape_yx) -> pd.DataFrame:
    """One row per particle of the SEM-grid truth (see the module docstring for the definitions)."""
    field = field_mask_fine(ms, spec, shape_yx)
    px = ms.pixel_nm
    rows = []
    counts = np.bincount(particles_sem.ravel().astype(np.int64), minlength=len(ms.records) + 1)
    for rec, par in zip(ms.records, params):
        pid = rec.particle_id
        if pid >= len(counts) or counts[pid] == 0:
            continue
        box = rec.bbox
        own = ms.particles[box] == pid
        contact = ms.contact[box] * own
        d_any = ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1] * px
        d_el, d_void = (ndi.distance_transform_edt(contact != c) * px + 0.5 * px if (contact == c).any()
                        else np.full(own.shape, np.inf) for c in (1, 2))
        inside = own & field[box]
        r = ratio[box]
        bulk = inside & (d_any > BULK_DEPTH_NM + 0.5 * px)
        # exclusive bands: a surface next to electrolyte and away from voids, and vice versa
        s_el = inside & (d_el <= SURFACE_BAND_NM) & (d_void > SURFACE_BAND_NM)
        s_void = inside & (d_void <= SURFACE_BAND_NM) & (d_el > SURFACE_BAND_NM)
        n_boundary = np.count_nonzero(contact)
        area = counts[pid] * spec.sem_pixel_nm ** 2
        ys, xs = np.nonzero(inside)
        mean = lambda m: float(np.mean(r[m])) if m.any() else float("nan")   # noqa: E731
        rows.append({
            "particle_id": pid,
            "egt2g_bulk": mean(bulk),
            "egt2g_surface_electrolyte": mean(s_el),
            "egt2g_surface_void": mean(s_void),
            "area_nm2": float(area),
            "equivalent_diameter_nm": float(2.0 * np.sqrt(area / np.pi)),
            "cracked": bool(rec.cracked),
            "centroid_x_nm": float(ms.origin_nm + (xs.mean() + box[1].start) * px),
            "centroid_y_nm": float(ms.origin_nm + (ys.mean() + box[0].start) * px),
            "contact_ratio_electrolyte": float(np.count_nonzero(contact == 1) / max(n_boundary, 1)),
            "contact_ratio_void": float(np.count_nonzero(contact == 2) / max(n_boundary, 1)),
            "egt2g_bulk_generated": par["bulk"],
            "ratio_group": par["group"],
            "surface_reduction": par["reduction"],
            "surface_reduction_depth_nm": par["reduction_depth_nm"],
            "n_bulk_px_fine": int(bulk.sum()),
        })
    return pd.DataFrame(rows)


def thickness_points(ms: Microstructure, spec: LamellaSpec, shape_yx) -> pd.DataFrame:
    """Points along NMC–interphase boundaries with the generated interphase thickness (nm)."""
    cols = ["particle_id", "x_nm", "y_nm", "thickness_nm"]
    if spec.interphase_mean_nm <= 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c != "particle_id" else int) for c in cols})
    px = ms.pixel_nm
    h = spec.sem_pixel_nm
    x_max, y_max = (shape_yx[1] - 0.5) * h, (shape_yx[0] - 0.5) * h
    out = []
    for rec in ms.records:
        if rec.thickness_fn is None:
            continue
        box = rec.bbox
        own = ms.particles[box] == rec.particle_id
        boundary = (ms.contact[box] > 0) & own
        if not boundary.any():
            continue
        _, (iy, ix) = ndi.distance_transform_edt(~np.pad(boundary, 1), return_indices=True)
        contact = np.pad(ms.contact[box], 1)
        for c in find_contours(np.pad(own, 1).astype(np.float32), 0.5):
            seg = np.hypot(*np.diff(c, axis=0).T)
            s = np.r_[0.0, np.cumsum(seg)] * px
            if s[-1] < THICKNESS_SPACING_NM:
                continue
            si = np.arange(0.0, s[-1], THICKNESS_SPACING_NM)
            pts = np.c_[np.interp(si, s, c[:, 0]), np.interp(si, s, c[:, 1])]
            ri = np.clip(np.round(pts[:, 0]).astype(int), 0, contact.shape[0] - 1)
            ci = np.clip(np.round(pts[:, 1]).astype(int), 0, contact.shape[1] - 1)
            near = contact[iy[ri, ci], ix[ri, ci]]
            fy = pts[:, 0] - 1 + box[0].start
            fx = pts[:, 1] - 1 + box[1].start
            x_nm = ms.origin_nm + fx * px
            y_nm = ms.origin_nm + fy * px
            keep = (near == 1) & (x_nm >= -h / 2) & (x_nm <= x_max) & (y_nm >= -h / 2) & (y_nm <= y_max)
            # the surface must face interphase (true for every electrolyte contact unless clipped)
            theta = np.arctan2(fy - rec.centre_yx[0], fx - rec.centre_yx[1])
            t = rec.thickness_fn(theta)
            for x, y, tt in zip(x_nm[keep], y_nm[keep], t[keep]):
                out.append((rec.particle_id, float(x), float(y), float(tt)))
    return pd.DataFrame(out, columns=cols)


def touching_pairs(particles_sem: np.ndarray) -> list[list[int]]:
    """Pairs of particle ids that share a boundary (4-neighbours) on the SEM grid, sorted."""
    p = particles_sem.astype(np.int64)
    pairs = set()
    for a, b in ((p[:, :-1], p[:, 1:]), (p[:-1, :], p[1:, :])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= {(int(min(i, j)), int(max(i, j))) for i, j in zip(a[m], b[m])}
    return [list(x) for x in sorted(pairs)]


def class_fractions(classes_sem: np.ndarray) -> dict:
    """Fractions of the SEM field per class name (including ``outside``)."""
    n = classes_sem.size
    names = ["outside", "nmc", "interphase", "electrolyte", "void"]
    cnt = np.bincount(classes_sem.ravel(), minlength=5)
    return {k: float(cnt[i] / n) for i, k in enumerate(names)}


def egt2g_sem_map(ms: Microstructure, ratio: np.ndarray, spec: LamellaSpec, shape_yx) -> np.ndarray:
    """Truth e_g/t_2g on the SEM grid (float32, NaN where no Ni: not NMC or interphase)."""
    (r,) = sample_to_sem(ms, spec, shape_yx, ratio)
    return r.astype(np.float32)


