"""One STXM grid for every edge: the reference edge's pixel lattice, extended over the fields of all edges.

Each edge's stack is its own scan over its own field; the chemistry compares the edges pixel by pixel, so every
edge is resampled onto the lattice of one reference edge (Ni-L when present), extended by whole pixels over the
fields of the other edges (:func:`union_grid`: what only the S-L stack covers still has chemistry), through the
registration matrices (``inv(M_edge) @ M_grid`` maps grid pixels to edge pixels; :func:`to_reference_grid`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["union_grid", "to_reference_grid"]


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
