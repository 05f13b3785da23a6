"""Interphase thickness: width of the interphase band normal to the NMC surface, sampled along the boundary.

Geometry
--------
The width is measured where the CONTRACT defines it: from a point of the NMC boundary, along the outward
normal of the NMC surface, to the outer boundary of the band (electrolyte, void, or the band of a facing
particle). ceimap takes one boundary point per band pixel that touches the NMC of its particle (the point of
the NMC boundary nearest to that pixel) and records the sample there.

Band pixels are assigned to the nearest particle first, so where two particles face each other across a gap
filled by interphase the bands meet at the mid-line and each particle's band ends there (measuring on the raw
class map would read the whole gap).

Methods (``method=``)
----------------------
==============  ==================================================================================================
``"normal"``     (default) boundaries are sub-pixel ½ iso-lines of the NMC and particle-territory (NMC + its
                 band) indicators, lightly smoothed (Gaussian, ``smooth_px``) to remove the staircase of a
                 hard mask; from each boundary point a ray along the normal (gradient of the smoothed NMC
                 indicator) is marched in 0.05-pixel steps to the ½ crossing of the territory indicator.
``"distance"``   ``d(q, B_N) + d(q, B_O)`` at the band pixel ``q`` next to the NMC, with distances to densely
                 resampled sub-pixel contours: exact for parallel boundaries and concentric circles, but it
                 reads short where a band ends laterally (the nearest outer point is then to the side).
``"edt"``        as ``"distance"`` with distances from pixel centres to the nearest pixel centre across each
                 boundary minus ½ pixel (Euclidean distance transform); quantised, kept as a cross-check.
==============  ==================================================================================================

With class probabilities from the segmentation (``probabilities=``) the boundaries are the ½ iso-lines of the
soft indicators instead of the smoothed hard masks: on rings whose probabilities are pixel area fractions the
width is then exact to a few hundredths of a pixel, against a few tenths from a hard mask.

Unlike PoreSpy's default local thickness (largest inscribed sphere with whole-number radii), no method
quantises the width to whole pixels. :func:`thickness_area_check` gives an independent per-particle figure:
band area divided by the mean of the two boundary lengths.

The STXM resolution bounds what a thickness means: :func:`summarise_thickness` flags a band as not
``resolvable`` when its median width is below the resolution or when there are too few samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import find_contours

from ceimap.segment import Class

from .summary import Thickness

THICKNESS_COLUMNS = ["particle_id", "x_nm", "y_nm", "thickness_nm"]
OUTER_KINDS = {Class.OUTSIDE: "outside", Class.NMC: "particle", Class.INTERPHASE: "particle",
               Class.ELECTROLYTE: "electrolyte", Class.VOID: "void"}
"""What bounds a thickness sample on its outer side, by the class found there."""

_CROSS = ndimage.generate_binary_structure(2, 1)


def assign_band_to_particles(classes: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """Particle id of every interphase pixel: the nearest particle (0 elsewhere, or when there are none).

    Parameters
    ----------
    classes : ndarray of uint8
        Class map (2 = interphase).
    particles : ndarray of int
        Particle labels, 0 = none.

    Returns
    -------
    ndarray of int64
        Owner of each interphase pixel, 0 elsewhere.
    """
    particles = np.asarray(particles).astype(np.int64)
    band = (np.asarray(classes) == Class.INTERPHASE) & (particles == 0)
    owner = np.zeros(particles.shape, dtype=np.int64)
    if band.any() and (particles > 0).any():
        idx = ndimage.distance_transform_edt(particles == 0, return_distances=False, return_indices=True)
        owner[band] = particles[idx[0][band], idx[1][band]]
    return owner


def _particle_windows(particles: np.ndarray, owner: np.ndarray, pad_px: int):
    """Per particle with an interphase band: ``(particle_id, window, nmc, band)`` over the bounding box of
    the particle and its band, padded by ``pad_px``; ``nmc`` and ``band`` are boolean masks in the window."""
    ny, nx = particles.shape
    territory_all = np.where(owner > 0, owner, particles)
    for k, obj in enumerate(ndimage.find_objects(territory_all)):
        if obj is None:
            continue
        pid = k + 1
        ys, xs = obj
        window = (slice(max(ys.start - pad_px, 0), min(ys.stop + pad_px, ny)),
                  slice(max(xs.start - pad_px, 0), min(xs.stop + pad_px, nx)))
        nmc = particles[window] == pid
        band = owner[window] == pid
        if band.any() and nmc.any():
            yield pid, window, nmc, band


def _contour_points(indicator: np.ndarray, smooth_px: float, step_px: float = 0.05) -> np.ndarray:
    """Points (row, col) densely resampled along the ½ iso-contours of a (smoothed) indicator."""
    f = np.pad(indicator.astype(float), 2, constant_values=0.0)
    if smooth_px > 0:
        f = ndimage.gaussian_filter(f, smooth_px, mode="nearest")
    pts = []
    for c in find_contours(f, 0.5):
        if len(c) < 2:
            pts.append(c)
            continue
        seg = np.diff(c, axis=0)
        length = np.hypot(seg[:, 0], seg[:, 1])
        n = np.maximum(np.ceil(length / step_px).astype(int), 1)
        t = np.concatenate([np.arange(k) / k for k in n])
        i = np.repeat(np.arange(len(seg)), n)
        pts.append(c[i] + seg[i] * t[:, None])
        pts.append(c[-1:])
    if not pts:
        return np.empty((0, 2))
    return np.concatenate(pts) - 2.0


def _normal_ray_widths(nmc: np.ndarray, territory: np.ndarray, points: np.ndarray, smooth_px: float,
                       max_len_px: float, step_px: float = 0.05) -> np.ndarray:
    """Distance along the outward NMC normal from each boundary point to the ½ crossing of the territory.

    NaN when the ray does not leave the territory within ``max_len_px`` or the normal is undefined.
    """
    pad = 4
    f_n = ndimage.gaussian_filter(np.pad(nmc.astype(float), pad), smooth_px, mode="nearest")
    f_t = ndimage.gaussian_filter(np.pad(territory.astype(float), pad), smooth_px, mode="nearest")
    gy, gx = np.gradient(f_n)
    p = points + pad
    ny_ = -ndimage.map_coordinates(gy, p.T, order=1)
    nx_ = -ndimage.map_coordinates(gx, p.T, order=1)
    norm = np.hypot(ny_, nx_)
    ok = norm > 1e-6
    ny_ = np.where(ok, ny_ / np.where(ok, norm, 1), 0.0)
    nx_ = np.where(ok, nx_ / np.where(ok, norm, 1), 0.0)
    steps = np.arange(0.0, max_len_px + step_px, step_px)
    out = np.full(len(p), np.nan)
    chunk = max(1, 200000 // len(steps))
    for a in range(0, len(p), chunk):
        b = min(a + chunk, len(p))
        ry = p[a:b, 0, None] + ny_[a:b, None] * steps[None, :]
        rx = p[a:b, 1, None] + nx_[a:b, None] * steps[None, :]
        v = ndimage.map_coordinates(f_t, [ry.ravel(), rx.ravel()], order=1, cval=0.0).reshape(ry.shape)
        below = v < 0.5
        below[:, 0] = False
        first = np.argmax(below, axis=1)
        found = below[np.arange(b - a), first] & ok[a:b]
        k = np.maximum(first, 1)
        v0 = v[np.arange(b - a), k - 1]
        v1 = v[np.arange(b - a), k]
        frac = np.where(v0 != v1, (v0 - 0.5) / np.where(v0 != v1, v0 - v1, 1.0), 0.0)
        out[a:b] = np.where(found, steps[k - 1] + frac * step_px, np.nan)
    return out


def interphase_thickness(classes: np.ndarray, particles: np.ndarray, pixel_size_nm: float, *,
                         method: str = "normal", smooth_px: float = 1.0, probabilities: np.ndarray | None = None,
                         include_outside: bool = False, details: bool = False) -> pd.DataFrame:
    """Width of the interphase band, normal to the NMC surface, at every NMC–interphase boundary pixel.

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class map (1 NMC, 2 interphase, 3 electrolyte, 4 void, 0 outside).
    particles : ndarray of int, shape (ny, nx)
        NMC particle ids, 0 = none.
    pixel_size_nm : float
        Pixel size of the maps.
    method : {"normal", "distance", "edt"}
        How the width is measured (see the module docstring).
    smooth_px : float
        Gaussian sigma (pixels) applied to each indicator before locating boundaries (``"normal"`` and
        ``"distance"``); 0 uses the marching-squares contour of the hard mask (``"distance"`` only).
    probabilities : ndarray, shape (5, ny, nx), optional
        Class probabilities (index = class code) from the segmentation. When given, the boundaries are the
        ½ iso-lines of the soft indicators ``P(NMC)`` and ``P(NMC) + P(interphase)`` within each particle's
        Voronoi cell (``"normal"`` and ``"distance"``), which places them between pixels where the hard map
        cannot; sample points and band ownership still come from the hard maps.
    include_outside : bool
        Keep samples whose band ends at the analysed area's edge (class 0 or the image border), where the
        true width is unknown. Default: drop them.
    details : bool
        Add columns ``d_nmc_nm``, ``d_outer_nm`` and ``outer`` (what bounds the band: ``electrolyte``,
        ``void``, ``particle`` for a facing particle's band, ``outside``).

    Returns
    -------
    pandas.DataFrame
        ``particle_id, x_nm, y_nm, thickness_nm`` (CONTRACT ``thickness.csv``), one row per sample; ``x_nm``,
        ``y_nm`` the sample's point on the NMC boundary (``x_nm = column · pixel_size_nm``).

    Examples
    --------
    >>> import numpy as np
    >>> classes = np.full((40, 40), 3, np.uint8); classes[:, :20] = 1; classes[:, 20:25] = 2
    >>> particles = (classes == 1).astype(np.uint32)
    >>> df = interphase_thickness(classes, particles, 10.0)
    >>> round(float(df.thickness_nm.median()), 1)
    50.0
    """
    if method not in ("normal", "distance", "edt"):
        raise ValueError(f"unknown thickness method {method!r}; use 'normal', 'distance' or 'edt'")
    if method == "normal" and smooth_px <= 0:
        raise ValueError("method 'normal' needs smooth_px > 0 (the normal comes from the smoothed indicator)")
    classes = np.asarray(classes)
    particles = np.asarray(particles).astype(np.int64)
    owner = assign_band_to_particles(classes, particles)
    columns = THICKNESS_COLUMNS + (["d_nmc_nm", "d_outer_nm", "outer"] if details else [])
    ny, nx = classes.shape
    soft = None
    if probabilities is not None and method != "edt" and (particles > 0).any():
        prob = np.asarray(probabilities, dtype=float)
        idx = ndimage.distance_transform_edt(particles == 0, return_distances=False, return_indices=True)
        cell_all = particles[idx[0], idx[1]]           # Voronoi cell of every pixel: its nearest particle
        soft = (prob[Class.NMC], prob[Class.NMC] + prob[Class.INTERPHASE], cell_all)
    rows = []
    for pid, sl, nmc, band in _particle_windows(particles, owner, pad_px=3):
        territory = nmc | band
        samples = band & ndimage.binary_dilation(nmc, _CROSS)
        if not samples.any():
            continue
        qy, qx = np.nonzero(samples)
        q = np.column_stack([qy, qx]).astype(float)
        # what bounds the band beyond each sample: class of the nearest pixel outside the territory
        padded = np.pad(territory, 1, constant_values=False)
        d_t, idx_t = ndimage.distance_transform_edt(padded, return_indices=True)
        iy, ix = idx_t[0][qy + 1, qx + 1] - 1, idx_t[1][qy + 1, qx + 1] - 1
        at_border = (iy < 0) | (ix < 0) | (iy >= territory.shape[0]) | (ix >= territory.shape[1])
        cls_sub = classes[sl]
        outer_cls = np.where(at_border, 0, cls_sub[np.clip(iy, 0, cls_sub.shape[0] - 1),
                                                  np.clip(ix, 0, cls_sub.shape[1] - 1)])
        gy, gx = iy + sl[0].start, ix + sl[1].start
        on_image = (gy >= 0) & (gx >= 0) & (gy < ny) & (gx < nx)
        outer_cls = np.where(on_image, outer_cls, 0)
        outer = np.array([OUTER_KINDS.get(int(c), "outside") for c in outer_cls], dtype=object)
        if method == "edt":
            d_n_map, idx_n = ndimage.distance_transform_edt(~nmc, return_indices=True)
            d_n = d_n_map[qy, qx] - 0.5
            d_o = d_t[qy + 1, qx + 1] - 0.5
            ny_, nx_ = idx_n[0][qy, qx], idx_n[1][qy, qx]
            v = q - np.column_stack([ny_, nx_])
            norm = np.hypot(v[:, 0], v[:, 1])[:, None]
            point = np.column_stack([ny_, nx_]) + 0.5 * v / np.where(norm > 0, norm, 1.0)
        else:
            if soft is not None:
                in_cell = soft[2][sl] == pid
                f_nmc, f_territory = soft[0][sl] * in_cell, soft[1][sl] * in_cell
            else:
                f_nmc, f_territory = nmc, territory
            c_n = _contour_points(f_nmc, smooth_px)
            if len(c_n) == 0:
                continue
            d_n, i_n = cKDTree(c_n).query(q)
            point = c_n[i_n]
            if method == "distance":
                c_t = _contour_points(f_territory, smooth_px)
                if len(c_t) == 0:
                    continue
                d_o, _ = cKDTree(c_t).query(q)
            else:
                max_len = 2.0 * float(d_t.max()) + 4.0
                ray = _normal_ray_widths(f_nmc, f_territory, point, smooth_px, max_len)
                d_o = ray - d_n   # so that d_n + d_o is the ray width
        width = (d_n + d_o) * pixel_size_nm
        y0, x0 = sl[0].start, sl[1].start
        for j in range(len(q)):
            row = [pid, (point[j, 1] + x0) * pixel_size_nm, (point[j, 0] + y0) * pixel_size_nm, width[j]]
            if details:
                row += [d_n[j] * pixel_size_nm, d_o[j] * pixel_size_nm, outer[j]]
            if np.isfinite(width[j]) and (include_outside or outer[j] != "outside"):
                rows.append(row)
    df = pd.DataFrame(rows, columns=columns)
    df["particle_id"] = df["particle_id"].astype(np.int64)
    for c in ("x_nm", "y_nm", "thickness_nm"):
        df[c] = df[c].astype(float)
    return df


def thickness_area_check(classes: np.ndarray, particles: np.ndarray, pixel_size_nm: float, *,
                         smooth_px: float = 1.0) -> pd.DataFrame:
    """Per-particle band width from area: band area / mean of the inner and outer boundary lengths.

    Boundary lengths are measured on the ½ iso-contours of the lightly smoothed NMC and territory (NMC +
    assigned band) indicators: a contour segment counts when its marching-squares cell contains band pixels
    of the particle (so NMC boundary that touches electrolyte directly is not counted). For a ring of radii
    ``R1 < R2`` this gives ``R2 − R1``.

    Parameters
    ----------
    classes, particles : ndarray, shape (ny, nx)
        Class map and particle labels.
    pixel_size_nm : float
        Pixel size.
    smooth_px : float
        Gaussian sigma (pixels) of the indicators before contouring.

    Returns
    -------
    pandas.DataFrame
        ``particle_id, band_area_nm2, inner_length_nm, outer_length_nm, area_thickness_nm``.
    """
    particles = np.asarray(particles).astype(np.int64)
    owner = assign_band_to_particles(classes, particles)
    rows = []
    for pid, _, nmc, band in _particle_windows(particles, owner, pad_px=2):
        territory = nmc | band
        inner = _contour_length_next_to(nmc, band, smooth_px)
        outer = _contour_length_next_to(territory, band, smooth_px)
        area = float(band.sum()) * pixel_size_nm ** 2
        mean_len = 0.5 * (inner + outer) * pixel_size_nm
        rows.append([pid, area, inner * pixel_size_nm, outer * pixel_size_nm,
                     area / mean_len if mean_len > 0 else np.nan])
    return pd.DataFrame(rows, columns=["particle_id", "band_area_nm2", "inner_length_nm", "outer_length_nm",
                                       "area_thickness_nm"])


def _contour_length_next_to(mask: np.ndarray, band: np.ndarray, smooth_px: float = 1.0) -> float:
    """Length (pixels) of the ½-contour of ``mask`` (smoothed) over cells that contain ``band`` pixels.

    Cells are the 2×2 pixel squares of marching squares; the Gaussian smoothing (``smooth_px``) removes the
    staircase, which would otherwise lengthen an oblique or curved boundary by several per cent.
    """
    f = np.pad(mask.astype(float), 2)
    if smooth_px > 0:
        f = ndimage.gaussian_filter(f, smooth_px, mode="nearest")
    b = np.pad(band, 2)
    total = 0.0
    for c in find_contours(f, 0.5):
        seg = np.diff(c, axis=0)
        mid = 0.5 * (c[1:] + c[:-1])
        r0 = np.floor(mid[:, 0]).astype(int)
        c0 = np.floor(mid[:, 1]).astype(int)
        has_band = np.zeros(len(mid), dtype=bool)
        for dy in (0, 1):
            for dx in (0, 1):
                rr = np.clip(r0 + dy, 0, f.shape[0] - 1)
                cc = np.clip(c0 + dx, 0, f.shape[1] - 1)
                has_band |= b[rr, cc]
        total += float(np.hypot(seg[has_band, 0], seg[has_band, 1]).sum())
    return total


def summarise_thickness(df: pd.DataFrame, resolution_nm: float, *, min_samples: int = 20) -> dict:
    """Summary of thickness samples, with a resolvability flag.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`interphase_thickness` (or a truth table with ``particle_id`` and ``thickness_nm``).
    resolution_nm : float
        Spatial resolution of the measurement (STXM: the larger of probe FWHM and pixel size).
    min_samples : int
        Fewer samples than this make the band not resolvable.

    Returns
    -------
    dict
        ``mean, sd, median, n`` over samples (sd with ddof=1), ``resolvable`` (``n ≥ min_samples`` and
        ``mean ≥ resolution_nm``: the band the summary reports by its mean is at least one resolution
        element wide; the median of a strongly varying band — e.g. 89 ± 66 nm — can fall below the
        resolution while the band is plainly resolved over much of the perimeter), ``n_particles``, ``particle_mean_sd`` (sd of per-particle means),
        ``resolution_nm``, ``reason`` (why not resolvable, or ``None``). NaN statistics are ``None``.
    """
    t = df["thickness_nm"].to_numpy(dtype=float) if len(df) else np.empty(0)
    t = t[np.isfinite(t)]
    n = int(t.size)
    mean = float(np.mean(t)) if n else None
    sd = float(np.std(t, ddof=1)) if n > 1 else None
    median = float(np.median(t)) if n else None
    if n:
        per = df.loc[np.isfinite(df["thickness_nm"])].groupby("particle_id")["thickness_nm"].mean()
        n_particles = int(per.size)
        particle_sd = float(per.std(ddof=1)) if per.size > 1 else None
    else:
        n_particles, particle_sd = 0, None
    if n < min_samples:
        reason = f"only {n} boundary samples (< {min_samples})"
    elif mean < resolution_nm:
        reason = f"mean width {mean:.1f} nm is below the resolution {resolution_nm:.1f} nm"
    else:
        reason = None
    return {Thickness.MEAN: mean, Thickness.SD: sd, Thickness.MEDIAN: median, Thickness.N: n,
            Thickness.RESOLVABLE: reason is None, Thickness.N_PARTICLES: n_particles,
            Thickness.PARTICLE_MEAN_SD: particle_sd, Thickness.RESOLUTION_NM: float(resolution_nm),
            Thickness.REASON: reason}
