"""Empty pixels split into the outside of the lamella and its voids (:func:`split_empty`).

Empty regions along the field border are outside the lamella (its edge crosses the field); voids joined to them
through a narrow neck stay voids.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["split_empty"]


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
