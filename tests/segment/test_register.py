"""Tests of segment.register: matrices, resampling between grids, automatic registration."""

import numpy as np
import pytest

from segment.register import (
    Registration,
    label_fractions_on_stxm,
    labels_to_stxm,
    matrix_from_landmarks,
    similarity_matrix,
    transform_points,
    warp_to_sem,
)

# STXM pixel (x, y) covers SEM pixels 4x .. 4x+3: centre (x, y) -> (4x + 1.5, 4y + 1.5)
M4 = np.array([[4.0, 0.0, 1.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]])


def test_registration_is_frozen():
    r = Registration(np.eye(3), 0.9, "identity", {"a": 1})
    with pytest.raises(Exception):
        r.quality = 0.1  # type: ignore[misc]


def test_similarity_matrix_and_transform_points():
    m = similarity_matrix(2.0, 90.0, (10.0, 5.0))
    np.testing.assert_allclose(transform_points(m, [[1.0, 0.0], [0.0, 1.0]]), [[10.0, 7.0], [8.0, 5.0]],
                               atol=1e-12)
    np.testing.assert_allclose(transform_points(m, [1.0, 0.0]), [10.0, 7.0], atol=1e-12)


@pytest.mark.parametrize("kind", ["similarity", "affine"])
def test_matrix_from_landmarks_exact(kind):
    m_true = similarity_matrix(3.7, -4.0, (120.5, -33.0))
    if kind == "affine":
        m_true[0, 1] += 0.3  # shear: not a similarity
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (6, 2))
    dst = transform_points(m_true, src)
    np.testing.assert_allclose(matrix_from_landmarks(src, dst, kind), m_true, atol=1e-9)


def test_matrix_from_landmarks_similarity_least_squares_and_errors():
    m_true = similarity_matrix(2.0, 10.0, (5.0, 6.0))
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    dst = transform_points(m_true, src)
    noisy = dst + np.array([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])  # zero-mean, symmetric
    m = matrix_from_landmarks(src, noisy)
    np.testing.assert_allclose(transform_points(m, src), dst, atol=0.15)
    with pytest.raises(ValueError):
        matrix_from_landmarks(src[:1], dst[:1])
    with pytest.raises(ValueError):
        matrix_from_landmarks(src[:2], dst[:2], "affine")
    with pytest.raises(ValueError):
        matrix_from_landmarks(src, dst, "projective")


def test_warp_to_sem_nearest_is_block_replication():
    img = np.arange(12, dtype=float).reshape(3, 4)
    out = warp_to_sem(img, M4, (12, 16), order=0)
    np.testing.assert_array_equal(out, np.kron(img, np.ones((4, 4))))


def test_warp_to_sem_linear_is_exact_on_a_ramp_and_marks_outside():
    yy, xx = np.mgrid[0:5, 0:6].astype(float)
    img = 2.0 * xx - 3.0 * yy + 1.0
    out = warp_to_sem(img, M4, (24, 30), order=1)
    sy, sx = np.mgrid[0:24, 0:30].astype(float)
    stx, sty = (sx - 1.5) / 4.0, (sy - 1.5) / 4.0
    expected = 2.0 * np.clip(stx, 0, 5) - 3.0 * np.clip(sty, 0, 4) + 1.0  # constant beyond centres
    expected[(stx > 5.5) | (sty > 4.5)] = np.nan  # SEM pixels beyond the STXM field
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert np.isnan(out[:, 24:]).all() and np.isnan(out[20:]).all() and np.isfinite(out[:20, :24]).all()
    # cubic reproduces a ramp away from the boundary (spline boundary effects decay as 0.27^distance)
    yy, xx = np.mgrid[0:30, 0:30].astype(float)
    out3 = warp_to_sem(2.0 * xx - 3.0 * yy + 1.0, M4, (120, 120), order=3)
    sy, sx = np.mgrid[40:80, 40:80].astype(float)
    np.testing.assert_allclose(out3[40:80, 40:80], 2.0 * (sx - 1.5) / 4 - 3.0 * (sy - 1.5) / 4 + 1.0,
                               atol=1e-4)


def test_warp_to_sem_nan_stays_local_and_stacks_warp_per_frame():
    img = np.ones((4, 4))
    img[1, 2] = np.nan
    out = warp_to_sem(img, M4, (16, 16), order=3)
    expected_nan = np.zeros((16, 16), bool)
    expected_nan[4:8, 8:12] = True
    np.testing.assert_array_equal(np.isnan(out), expected_nan)
    np.testing.assert_allclose(out[~expected_nan], 1.0)
    stack = np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0)])
    out2 = warp_to_sem(stack, M4, (16, 16))
    assert out2.shape == (2, 16, 16)
    np.testing.assert_allclose(out2[1], 2.0)


def test_warp_to_sem_rotation_and_translation():
    # a bright pixel lands where the matrix says
    m = similarity_matrix(5.0, 30.0, (40.0, 10.0))
    img = np.zeros((9, 9))
    img[4, 6] = 1.0
    out = warp_to_sem(img, m, (80, 80), order=0, cval=0.0)
    cy, cx = np.argwhere(out == 1.0).mean(0)
    np.testing.assert_allclose([cx, cy], transform_points(m, [6.0, 4.0]), atol=0.6)


def test_labels_to_stxm_inverts_block_replication():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 300, (5, 7)).astype(np.uint32)
    sem = np.kron(lab, np.ones((4, 4), dtype=np.uint32))
    back = labels_to_stxm(sem, M4, (5, 7))
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, lab)
    frac = label_fractions_on_stxm(sem % 5, M4, (5, 7), 5)
    np.testing.assert_array_equal(frac.argmax(0), lab % 5)
    np.testing.assert_array_equal(frac.max(0), 1.0)


def test_label_fractions_partial_footprints_and_majority():
    sem = np.zeros((8, 8), dtype=np.uint8)
    sem[:, 2:] = 1       # STXM pixel x=0 (SEM cols 0-3): half 0, half 1
    sem[:, 7] = 2        # STXM pixel x=1 (SEM cols 4-7): 3/4 label 1, 1/4 label 2
    frac = label_fractions_on_stxm(sem, M4, (2, 2), 3, supersample=4)
    np.testing.assert_allclose(frac[:, 0, 0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(frac[:, 1, 1], [0.0, 0.75, 0.25])
    np.testing.assert_allclose(frac.sum(0), 1.0)
    maj = labels_to_stxm(sem, M4, (2, 2), supersample=4)
    np.testing.assert_array_equal(maj, [[0, 1], [0, 1]])  # tie at x=0 goes to the smaller label
    # footprints beyond the SEM image count as 0
    frac_out = label_fractions_on_stxm(np.ones((4, 4), np.uint8), M4, (1, 2), 2, supersample=4)
    np.testing.assert_allclose(frac_out[:, 0, 1], [1.0, 0.0])
    with pytest.raises(ValueError):
        label_fractions_on_stxm(sem, M4, (2, 2), 2)


def test_label_fractions_under_rotation_preserve_area():
    # a big disc on the SEM grid: total label-1 area seen from STXM equals its SEM area / scale^2
    m = similarity_matrix(6.0, 17.0, (60.0, 20.0))
    yy, xx = np.mgrid[0:200, 0:200]
    disc = ((xx - 100) ** 2 + (yy - 100) ** 2 < 60 ** 2).astype(np.uint8)
    frac = label_fractions_on_stxm(disc, m, (40, 40), 2, supersample=12)
    assert abs(frac[1].sum() * 36.0 - disc.sum()) / disc.sum() < 0.01
