"""Tests of segment.assign: the unsupervised path end to end, the class map at SEM resolution."""

import numpy as np
from sklearn.metrics import f1_score

from ceimap.segment.assign import Segmentation, segment_lamella
from ceimap.segment.interphase import tolerant_f1
from tests.segment.scenes import make_scene


def test_segment_lamella_sem_resolution():
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=5)
    seg = segment_lamella(stacks, regs, sem, n_trees=20)
    assert isinstance(seg, Segmentation)
    assert seg.classes.dtype == np.uint8 and seg.classes.shape == truth.shape
    assert seg.probabilities.shape == (5,) + truth.shape and seg.probabilities.dtype == np.float32
    np.testing.assert_allclose(seg.probabilities.sum(axis=0), 1.0, atol=1e-4)
    # the probabilities are the soft version of the map: their ½ iso-lines are its boundaries
    assert np.mean(np.argmax(seg.probabilities, axis=0) == seg.classes) > 0.999
    inside = truth > 0
    macro = f1_score(truth[inside], seg.classes[inside], labels=[1, 2, 3, 4], average="macro")
    assert macro > 0.85
    assert f1_score(truth.ravel() == 0, seg.classes.ravel() == 0) > 0.95
    assert tolerant_f1(seg.classes == 2, truth == 2, 4.0)["f1"] > 0.85


def test_segment_lamella_with_ni_l_only():
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=5, with_s=False)
    seg = segment_lamella(stacks, regs, sem, n_trees=20)
    assert seg.details["reference_edge"] == "Ni-L"
    inside = truth > 0
    f1 = f1_score(truth[inside], seg.classes[inside], labels=[1, 3, 4], average=None)
    assert f1[0] > 0.97 and f1[1] > 0.95 and f1[2] > 0.9
    assert tolerant_f1(seg.classes == 2, truth == 2, 4.0)["f1"] > 0.85
