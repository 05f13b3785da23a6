"""Slow end-to-end checks of the segmentation on the example lamellae in ``datasets/`` against their truth.

Raw files → drift alignment and OD (segment.align, segment.stack) → STXM→SEM registration
(segment.register) → :func:`ceimap.segment.assign.segment_lamella` → :func:`ceimap.segment.particles.label_particles`,
scored against ``truth/``. Tolerances are what this implementation honestly reaches, with a small margin
(measured on the shipped examples in brackets; project targets after the slash):

- macro F1 over classes 1–4 inside the lamella ≥ 0.95 / 0.94 [4.25 V: 0.956, 4.7 V: 0.949 / target 0.95];
  the interphase at exact SEM-pixel level (F1 0.880, 0.876) is what holds it back: 14 % (4.25 V) and
  8 % (4.7 V) of the true interphase lies outside both the Ni-L and the S-L STXM fields, where no
  chemistry can find it (the chemistry runs on the union of the fields: what only S-L covers, 1 % and
  4 %, is found from S-L alone);
- void F1 ≥ 0.93 [0.963, 0.944];
- interphase F1 with one-STXM-pixel tolerance ≥ 0.93 [0.947, 0.955 / 0.85];
- charged lamella: interphase < 0.2 % of the lamella [0.006 % / 0.5 %];
- particles matched at IoU ≥ 0.8, touching and cracked ones included: ≥ 95 % [4.25 V: 13/13,
  4.7 V: 15/15, charged: 14/14 / 95 %].
"""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ceimap.segment.align import align_frames
from ceimap.segment.assign import segment_lamella
from ceimap.segment.interphase import tolerant_f1
from ceimap.segment.io import read_lamella
from ceimap.segment.particles import label_particles, match_particles
from ceimap.segment.register import contrast_image, register_stxm_to_sem
from ceimap.segment.stack import optical_density
from ceimap.segment.synthetic import load_truth

_CACHE = {}


def _run(datasets_dir, name):
    if name in _CACHE:
        return _CACHE[name]
    folder = datasets_dir / name
    if not (folder / "truth").is_dir():
        pytest.skip(f"example lamella {folder} not found")
    lam = read_lamella(folder / "lamella.toml")
    od_stacks, regs = {}, {}
    for edge, stack in lam.stacks.items():
        aligned, _ = align_frames(stack)
        od, _ = optical_density(aligned)
        od_stacks[edge] = od
        regs[edge] = register_stxm_to_sem(contrast_image(od), od.pixel_size_nm, lam.sem.image,
                                          lam.sem.pixel_size_nm)
    seg = segment_lamella(od_stacks, regs, lam.sem)
    particles = label_particles(seg.classes, lam.sem.image, lam.sem.pixel_size_nm)
    truth = load_truth(folder)
    stxm_in_sem_px = od_stacks["Ni-L"].pixel_size_nm / lam.sem.pixel_size_nm
    _CACHE[name] = (seg, particles, truth, stxm_in_sem_px)
    return _CACHE[name]


def _scores(seg, particles, truth, tol_px):
    t = np.asarray(truth["classes"])
    inside = t > 0
    macro = f1_score(t[inside], seg.classes[inside], labels=[1, 2, 3, 4], average="macro", zero_division=0)
    per_class = f1_score(t[inside], seg.classes[inside], labels=[1, 2, 3, 4], average=None, zero_division=0)
    inter = tolerant_f1(seg.classes == 2, t == 2, tol_px)
    m = match_particles(particles, np.asarray(truth["particles"]), iou_threshold=0.8)
    m = m[m.truth_id > 0]
    return {"macro": macro, "per_class": per_class, "interphase": inter,
            "interphase_fraction": float(np.mean(seg.classes[inside] == 2)),
            "matched": float(m.matched.mean())}


@pytest.mark.slow
@pytest.mark.parametrize("name, min_macro", [("cycled_4p25v", 0.95), ("cycled_4p7v", 0.95)])
def test_cycled_lamellae(datasets_dir, name, min_macro):
    s = _scores(*_run(datasets_dir, name))
    print(name, s)
    assert s["macro"] >= min_macro
    assert s["per_class"][0] >= 0.985         # NMC
    assert s["per_class"][1] >= 0.86          # interphase, exact SEM pixels
    assert s["per_class"][2] >= 0.975         # electrolyte
    assert s["per_class"][3] >= 0.95          # void
    assert s["interphase"]["f1"] >= 0.93
    assert s["matched"] >= 0.95


@pytest.mark.slow
def test_charged_lamella_has_no_interphase(datasets_dir):
    seg, particles, truth, tol = _run(datasets_dir, "charged")
    s = _scores(seg, particles, truth, tol)
    print("charged", s)
    assert s["interphase_fraction"] < 0.002
    t = np.asarray(truth["classes"])
    inside = t > 0
    per_class = f1_score(t[inside], seg.classes[inside], labels=[1, 3, 4], average=None, zero_division=0)
    assert per_class[0] >= 0.985 and per_class[1] >= 0.985 and per_class[2] >= 0.95
    assert s["matched"] >= 0.95
