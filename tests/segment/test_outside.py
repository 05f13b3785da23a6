"""Tests of segment.outside: empty pixels split into the lamella's outside and its voids."""

import numpy as np
from scipy import ndimage

from ceimap.segment.outside import _open_disk, split_empty


def test_split_empty_lamella_edge_versus_pore():
    empty = np.zeros((100, 100), bool)
    empty[:, :10] = True                 # vacuum strip along the left border: 100 px of contact
    empty[0:8, 50:58] = True             # a pore touching the top border over 8 px
    empty[40:50, 40:50] = True           # an interior pore
    out = split_empty(empty, 10.0, lamella_edge_nm=500.0)
    assert out[:, :10].all() and not out[0:8, 50:58].any() and not out[40:50, 40:50].any()
    # a vacuum hint found elsewhere (e.g. on the STXM grid) makes a region outside
    hint = np.zeros_like(empty)
    hint[1:8, 50:58] = True
    assert split_empty(empty, 10.0, lamella_edge_nm=500.0, vacuum=hint)[0:8, 50:58].all()


def test_split_empty_void_joined_to_outside_through_a_neck():
    empty = np.zeros((120, 120), bool)
    empty[100:, :] = True                                    # lamella edge along the bottom border
    yy, xx = np.mgrid[:120, :120]
    empty |= (yy - 50) ** 2 + (xx - 60) ** 2 <= 20 ** 2      # a void 400 nm across
    empty[70:100, 57:63] = True                              # joined by a 60 nm wide dark stripe
    out = split_empty(empty, 10.0, lamella_edge_nm=500.0, neck_nm=150.0)
    assert out[110, 5] and out[105, 60]
    assert not out[50, 60] and not out[72, 60]


def test_open_disk_equals_binary_opening_with_a_disk():
    from skimage.morphology import disk


    rng = np.random.default_rng(3)
    for trial in range(60):
        ny, nx = rng.integers(4, 70, 2)
        r = int(rng.integers(1, 12))
        mask = ndimage.gaussian_filter(rng.random((ny, nx)), rng.uniform(0.5, 4.0)) > rng.uniform(0.4, 0.6)
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0          # all set / all clear
        assert np.array_equal(_open_disk(mask, r), ndimage.binary_opening(mask, structure=disk(r))), (trial, r)
