"""Sparse scribble annotations on the SEM grid, as a person draws them to train a pixel classifier.

A few strokes per class, each a smooth random walk that stays inside its class at a safe distance from
the class boundary (steering around the boundary; thin classes such as the interphase are followed
along their middle). 0 = not annotated; 1–4 = class codes. Vacuum (class 0) cannot be annotated.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .. import Class

# class: (number of strokes in a 7 x 7 µm field, scaled with the field's area; safe distance from the class
# boundary in nm; stroke length range in nm)
STROKES = {Class.NMC: (7, 60.0, (500.0, 1500.0)), Class.INTERPHASE: (5, 25.0, (300.0, 900.0)),
           Class.ELECTROLYTE: (7, 60.0, (500.0, 1500.0)), Class.VOID: (3, 40.0, (200.0, 700.0))}


def _walk(allowed: np.ndarray, start, length_px: float, rng: np.random.Generator) -> list:
    y, x = map(float, start)
    heading = rng.uniform(0, 2 * np.pi)
    pts = [(y, x)]
    step = 1.0
    for _ in range(int(length_px / step)):
        heading += rng.normal(0, 0.12)
        moved = False
        for turn in (0, 0.26, -0.26, 0.52, -0.52, 0.79, -0.79, 1.05, -1.05, 1.57, -1.57):
            h = heading + turn
            ny, nx = y + step * np.sin(h), x + step * np.cos(h)
            iy, ix = int(round(ny)), int(round(nx))
            if 0 <= iy < allowed.shape[0] and 0 <= ix < allowed.shape[1] and allowed[iy, ix]:
                y, x, heading, moved = ny, nx, h, True
                break
        if not moved:
            break
        pts.append((y, x))
    return pts


def scribble_annotations(classes: np.ndarray, sem_pixel_nm: float, rng: np.random.Generator) -> np.ndarray:
    """Sparse strokes per class on the SEM grid.

    Parameters
    ----------
    classes : uint8 (ny, nx)
        Truth class map on the SEM grid.
    sem_pixel_nm : float
    rng : numpy.random.Generator

    Returns
    -------
    uint8 (ny, nx)
        0 where not annotated, else the class code of the stroke.
    """
    out = np.zeros(classes.shape, np.uint8)
    field_um2 = classes.size * (sem_pixel_nm / 1000.0) ** 2
    for code, (n_per_field, margin_nm, (lmin, lmax)) in STROKES.items():
        n_strokes = max(2, int(round(n_per_field * field_um2 / 49.0)))
        region = classes == code
        if not region.any():
            continue
        dist = ndi.distance_transform_edt(region) * sem_pixel_nm
        allowed = dist >= margin_nm
        if code == Class.INTERPHASE:   # follow the middle of the band: allow its inner part only
            allowed = dist >= min(margin_nm, 0.6 * dist[region].max())
        ys, xs = np.nonzero(allowed)
        if ys.size == 0:
            continue
        drawn = np.zeros(classes.shape, bool)
        for _ in range(n_strokes):
            i = int(rng.integers(ys.size))
            pts = _walk(allowed, (ys[i], xs[i]), rng.uniform(lmin, lmax) / sem_pixel_nm, rng)
            if len(pts) < 5:
                continue
            p = np.round(np.array(pts)).astype(int)
            drawn[p[:, 0], p[:, 1]] = True
        # pen width ~3 px, never past the allowed region
        out[ndi.binary_dilation(drawn) & (dist >= 0.5 * margin_nm) & region] = code
    return out
