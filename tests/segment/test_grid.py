"""Tests of segment.grid: every edge resampled onto one STXM grid."""

import numpy as np

from ceimap.segment.grid import to_reference_grid, union_grid
from ceimap.segment.register import Registration
from ceimap.segment.stack import Stack


def test_to_reference_grid_resamples_through_matrices():
    ny, nx = 20, 30
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    ramp = (2.0 * xx + 3.0 * yy)[None]             # linear: bilinear resampling is exact
    m_ref = np.array([[2.0, 0, 5.0], [0, 2.0, 7.0], [0, 0, 1]])
    m_s = np.array([[2.0, 0, 9.0], [0, 2.0, 3.0], [0, 0, 1]])   # S grid shifted by (+2, -2) reference px
    # S pixel (xs, ys) sits at reference pixel (xs + 2, ys - 2): value there is the ramp of that position
    s_data = 2.0 * (xx + 2) + 3.0 * (yy - 2)
    stacks = {"Ni-L": Stack(ramp, np.array([850.0]), 40.0, kind="od", edge="Ni-L"),
              "S-L": Stack(s_data[None], np.array([165.0]), 40.0, kind="od", edge="S-L")}
    regs = {"Ni-L": Registration(m_ref), "S-L": Registration(m_s)}
    ref, cubes = to_reference_grid(stacks, regs)
    assert ref == "Ni-L"
    inside = np.isfinite(cubes["S-L"][0])
    assert inside.sum() > 0.8 * ny * nx and np.isnan(cubes["S-L"][0, :, :1]).all()
    np.testing.assert_allclose(cubes["S-L"][0][inside], ramp[0][inside], atol=1e-9)


def test_union_grid_extends_the_reference_lattice_over_every_field():
    ny, nx = 20, 30
    data = np.arange(ny * nx, dtype=float).reshape(1, ny, nx)
    m_ref = np.array([[2.0, 0, 5.0], [0, 2.0, 7.0], [0, 0, 1]])
    m_s = np.array([[2.0, 0, -15.0], [0, 2.0, 3.0], [0, 0, 1]])   # S field starts 10 reference px left, 2 up
    stacks = {"Ni-L": Stack(data, np.array([850.0]), 40.0, kind="od", edge="Ni-L"),
              "S-L": Stack(np.ones((1, ny, nx)), np.array([165.0]), 40.0, kind="od", edge="S-L")}
    regs = {"Ni-L": Registration(m_ref), "S-L": Registration(m_s)}
    shape, m = union_grid(stacks, regs, "Ni-L")
    assert shape == (ny + 2, nx + 10)
    # same lattice, shifted by whole pixels: the reference data land on it unchanged
    np.testing.assert_allclose(m, m_ref @ np.array([[1, 0, -10], [0, 1, -2], [0, 0, 1.0]]))
    _, cubes = to_reference_grid(stacks, regs, "Ni-L", grid=(shape, m))
    np.testing.assert_allclose(cubes["Ni-L"][0, 2:, 10:], data[0], atol=1e-9)
    assert np.isnan(cubes["Ni-L"][0, :2]).all() and np.isnan(cubes["Ni-L"][0, :, :10]).all()
    assert np.isfinite(cubes["S-L"][0, :ny, :nx]).all() and np.isnan(cubes["S-L"][0, ny:, :]).all()
    # bounded by the SEM image when its shape is given: SEM x >= -0.5 is reference x >= -2.75
    shape_sem, _ = union_grid(stacks, regs, "Ni-L", sem_shape=(100, 100))
    assert shape_sem == (ny + 2, nx + 2)
