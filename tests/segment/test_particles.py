"""Tests of segment.particles: instance labelling of NMC particles and IoU matching."""

import numpy as np
import pytest

from ceimap.segment.particles import label_particles, match_particles, relabel_raster_order


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _classes(mask, background=3):
    out = np.full(mask.shape, background, np.uint8)
    out[mask] = 1
    return out


def test_two_touching_discs_are_split():
    # 10 nm pixels, two 1 µm particles whose rims overlap by 40 nm (a narrow neck)
    shape = (160, 260)
    a, b = _disc(shape, 80, 75, 50), _disc(shape, 80, 171, 50)
    assert (a & b).any()
    labels = label_particles(_classes(a | b), None, 10.0)
    assert labels.dtype == np.uint32
    assert labels.max() == 2
    truth = np.zeros(shape, int)
    truth[a] = 1
    truth[b & ~a] = 2
    m = match_particles(labels, truth)
    assert m["matched"].sum() == 2
    assert m.loc[m.truth_id > 0, "iou"].min() > 0.95


def test_cracked_disc_stays_one_particle():
    # a 1.6 µm particle crossed by a 40 nm void crack (4 px at 10 nm)
    shape = (200, 200)
    d = _disc(shape, 100, 100, 80)
    classes = _classes(d)
    crack = (np.abs((np.mgrid[:200, :200][1] - 100) + 0.3 * (np.mgrid[:200, :200][0] - 100)) < 2) & d
    classes[crack] = 4
    labels = label_particles(classes, None, 10.0)
    assert labels.max() == 1
    assert (labels[crack] == 0).all()                  # crack pixels are not NMC
    assert (labels[classes == 1] == 1).all()


def test_electrolyte_gap_is_not_bridged():
    # the same cut filled with electrolyte separates two particles (it is not a crack)
    shape = (200, 200)
    d = _disc(shape, 100, 100, 80)
    classes = _classes(d)
    gap = (np.abs(np.mgrid[:200, :200][1] - 100) < 3) & d
    classes[gap] = 3
    assert label_particles(classes, None, 10.0).max() == 2


def test_convex_particles_touching_along_a_wide_contact_are_split():
    # two square particles (1 µm) sharing 50 % of a side: a wide contact (no narrow neck), but the
    # union has a concave notch while each particle is convex
    shape = (200, 260)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[30:130, 20:120] = True
    b[80:180, 120:220] = True
    labels = label_particles(_classes(a | b), None, 10.0)
    truth = a.astype(int) + 2 * b
    m = match_particles(labels, truth, iou_threshold=0.9)
    assert labels.max() == 2 and m["matched"].sum() == 2


def test_elongated_particle_is_not_oversplit():
    yy, xx = np.mgrid[:160, :360]
    ellipse = ((yy - 80) / 45.0) ** 2 + ((xx - 180) / 160.0) ** 2 <= 1
    assert label_particles(_classes(ellipse), None, 10.0).max() == 1


def test_small_fragments_dropped_or_merged():
    shape = (200, 300)
    big = _disc(shape, 100, 100, 60)
    speck = _disc(shape, 100, 250, 4)                  # 90 nm across at 10 nm: below 150 nm
    bump = _disc(shape, 100, 164, 6) & ~big           # small piece touching the big particle
    labels = label_particles(_classes(big | speck | bump), None, 10.0)
    assert labels.max() == 1
    assert (labels[speck] == 0).all()
    assert (labels[bump] == 1).all()


def test_ids_follow_centroid_raster_order_and_pixel_size_matters():
    shape = (300, 300)
    masks = [_disc(shape, 230, 60, 40), _disc(shape, 60, 220, 40), _disc(shape, 60, 60, 40)]
    labels = label_particles(_classes(np.logical_or.reduce(masks)), None, 10.0)
    assert labels[60, 60] == 1 and labels[60, 220] == 2 and labels[230, 60] == 3
    # the same 800 nm discs are dropped when the smallest particle kept is 900 nm across
    assert label_particles(_classes(np.logical_or.reduce(masks)), None, 10.0, min_diameter_nm=900.0).max() == 0


def test_relabel_raster_order_exact():
    lab = np.array([[0, 7, 7, 0], [3, 0, 0, 0], [3, 0, 9, 9]])
    np.testing.assert_array_equal(relabel_raster_order(lab),
                                  np.array([[0, 1, 1, 0], [2, 0, 0, 0], [2, 0, 3, 3]], np.uint32))


def test_match_particles_exact():
    truth = np.array([[1, 1, 1, 0, 2, 2],
                      [1, 1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 0, 0, 6, 6],
                     [5, 5, 0, 7, 6, 6]])
    m = match_particles(pred, truth, iou_threshold=0.8)
    t1 = m[m.truth_id == 1].iloc[0]
    assert (t1.pred_id, t1.intersection_px, t1.truth_area_px, t1.pred_area_px) == (5, 4, 6, 4)
    assert t1.iou == pytest.approx(4 / 6) and not t1.matched
    t2 = m[m.truth_id == 2].iloc[0]
    assert t2.pred_id == 6 and t2.iou == 1.0 and t2.matched
    extra = m[m.truth_id == 0]
    assert extra.pred_id.tolist() == [7]
