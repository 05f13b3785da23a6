"""Pixel classifier: training, prediction, safe model files, compatibility checks."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from ceimap.segment.classifier import (MODEL_FORMAT_VERSION, PixelClassifier, _content_hash, entropy_map,
                                lamella_samples, leave_one_lamella_out, macro_f1, read_model_file)
from ceimap.segment.errors import CeimapInputError
from ceimap.segment.features import FeatureSpec
from ceimap.segment.lamella import SemImage
from ceimap.segment.register import Registration
from ceimap.segment.stack import Stack

NI_E = np.linspace(844.0, 858.0, 29)
S_E = np.linspace(156.0, 170.0, 29)
SPEC = FeatureSpec(sem_scales_nm=(10.0, 30.0, 90.0))
FAST = {"n_estimators": 30}
REPO = Path(__file__).resolve().parents[2]


def _peak(e, c, w):
    return np.exp(-0.5 * ((e - c) / w) ** 2)


def make_lamella(seed, *, n=120, interphase=True):
    """A small lamella: NMC disks with an interphase ring (S edge shifted), porous electrolyte, a void.

    Returns (sem, od_stacks, registrations, egt2g, s_edge, truth, annotations).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    centres = [(35 + rng.integers(-5, 5), 40 + rng.integers(-5, 5)), (80, 85)]
    dist = np.min([np.hypot(yy - cy, xx - cx) for cy, cx in centres], axis=0)
    nmc = dist < 17
    ring = (dist >= 17) & (dist < 23) if interphase else np.zeros_like(nmc)
    void = np.hypot(yy - 100, xx - 20) < 9
    truth = np.full((n, n), 3, np.uint8)
    truth[ring], truth[nmc], truth[void] = 2, 1, 4
    pores = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.0) > 0.35
    sem = np.select([nmc, void], [190.0, 25.0], 120.0) - 60 * (pores & (truth >= 2) & (truth <= 3))
    sem = (1.0 + 0.2 * seed) * (sem + rng.normal(0, 6, (n, n))) + 30 * seed   # other brightness / contrast
    # STXM: 3× coarser grid, blurred by the beam
    m = n // 3
    def coarse(mask):
        return ndimage.gaussian_filter(mask.astype(float), 1.0)[1::3, 1::3][:m, :m]
    ni_amt, ring_amt, ely_amt = coarse(nmc), coarse(ring), coarse(truth >= 2)
    ni = (ni_amt + 0.3 * ring_amt)[None] * (_peak(NI_E, 853, 0.8) + 0.3 * (NI_E > 853))[:, None, None]
    s = ely_amt[None] * (_peak(S_E, 163.9, 0.5) + 0.3 * (S_E > 164))[:, None, None]
    thick = 1.0 + 0.3 * seed                                                     # another lamella thickness
    ods = {"Ni-L": Stack(thick * ni + rng.normal(0, 0.005, ni.shape), NI_E, 30.0, kind="od", edge="Ni-L"),
           "S-L": Stack(thick * s + rng.normal(0, 0.005, s.shape), S_E, 30.0, kind="od", edge="S-L")}
    matrix = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]])
    regs = {e: Registration(matrix) for e in ods}
    s_ok = ely_amt > 0.3
    frac = np.where(s_ok, ring_amt / np.maximum(ely_amt, 1e-9), 0.0)
    pos = 163.9 + 0.05 * seed + 0.2 * frac + rng.normal(0, 0.01, (m, m))       # calibration offset per lamella
    eg = SimpleNamespace(ratio=np.where(ni_amt > 0.3, 1.6, np.nan), valid=ni_amt > 0.3)
    se = SimpleNamespace(position_ev=np.where(s_ok, pos, np.nan), valid=s_ok)
    annotations = np.zeros((n, n), np.uint8)
    for code in (1, 2, 3, 4):
        idx = np.flatnonzero(ndimage.binary_erosion(truth == code, iterations=1 if code == 2 else 3))
        pick = rng.choice(idx, min(idx.size, 150), replace=False)
        annotations.flat[pick] = code
    return SemImage(sem.astype(np.float32), 10.0), ods, regs, eg, se, truth, annotations


@pytest.fixture(scope="module")
def trained():
    sem, ods, regs, eg, se, truth, ann = make_lamella(0)
    samples = lamella_samples("a", sem, ods, regs, ann, SPEC, egt2g=eg, s_edge=se)
    return PixelClassifier(SPEC, [samples], seed=3, params=FAST), samples


def test_learns_the_scene_and_transfers(trained):
    clf, _ = trained
    for seed, target in ((0, 0.9), (1, 0.85)):   # the training lamella, and another one
        sem, ods, regs, eg, se, truth, _ = make_lamella(seed)
        classes, probs, entropy = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=50)
        assert classes.dtype == np.uint8 and probs.shape == (5,) + truth.shape
        np.testing.assert_allclose(probs[1:].sum(axis=0), 1.0, atol=1e-5)
        macro, per = macro_f1(classes, truth)
        assert macro >= target, per
        assert entropy.min() >= 0 and entropy.max() <= 1
        # uncertainty is where classes meet, not in the bulk of a phase
        inner = ndimage.binary_erosion(truth == 3, iterations=6)
        assert entropy[inner].mean() < entropy[~inner].mean()


def test_no_interphase_painted_on_an_uncycled_lamella(trained):
    """Boundary pixels hold Ni and S and sit next to NMC, like interphase; the S shift is absent."""
    clf, _ = trained
    sem, ods, regs, eg, se, truth, _ = make_lamella(1, interphase=False)
    classes, _, _ = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se)
    assert np.mean(classes == 2) < 0.01


def test_tiling_does_not_change_predictions(trained):
    clf, _ = trained
    sem, ods, regs, eg, se, _, _ = make_lamella(2)
    a = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=4096, lattice_px=1)
    b = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=33, lattice_px=1)
    assert np.mean(a[0] != b[0]) < 1e-3
    np.testing.assert_allclose(a[1], b[1], atol=0.02)
    # the coarse lattice is the image's, not the tile's: tiling changes little with it too
    c = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=4096)
    d = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=34)
    assert np.mean(c[0] != d[0]) < 2e-3


def test_coarse_lattice_gives_the_pixelwise_map(trained):
    """Forest on every 2nd/3rd pixel + exact refinement near class changes ≈ every pixel classified."""
    clf, _ = trained
    sem, ods, regs, eg, se, truth, _ = make_lamella(1)
    exact = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, lattice_px=1)
    for k in (2, 3):
        fast = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, lattice_px=k)
        assert np.mean(fast[0] != exact[0]) < 0.005, k
        np.testing.assert_allclose(fast[1][1:].sum(axis=0), 1.0, atol=1e-5)
        # interpolated probabilities stay close to the exact ones (the forest's steps are what differs)
        assert np.mean(np.abs(fast[1] - exact[1])) < 0.02
        assert abs(macro_f1(fast[0], truth)[0] - macro_f1(exact[0], truth)[0]) < 0.005


def test_predict_proba_tile_lattice_matches_rows(trained):
    clf, samples = trained
    rng = np.random.default_rng(0)
    tile = samples.features[rng.integers(0, len(samples.features), 7 * 9)].reshape(7, 9, -1)
    # a tile of unrelated rows: the lattice's corners disagree everywhere, so every pixel is exact
    np.testing.assert_allclose(clf.predict_proba_tile(tile, lattice_px=2),
                               clf.predict_proba_features(tile.reshape(63, -1)).reshape(7, 9, 4), atol=1e-6)


def test_forest_blocks_equal_scikit_learn(trained):
    """The block-wise forest evaluation gives scikit-learn's predict_proba, bit for bit."""
    from ceimap.segment.classifier import _FOREST_CHUNK, _predict_proba

    clf, samples = trained
    rng = np.random.default_rng(0)
    x = samples.features[rng.integers(0, len(samples.features), 2 * _FOREST_CHUNK + 17)]
    x = x + rng.normal(0, 0.05, x.shape).astype(np.float32)
    np.testing.assert_array_equal(_predict_proba(clf.texture_model, clf._texture_tables, x),
                                  clf.texture_model.predict_proba(x))
    cols = clf.interphase_columns
    np.testing.assert_array_equal(_predict_proba(clf.interphase_model, clf._interphase_tables, x[:, cols]),
                                  clf.interphase_model.predict_proba(x[:, cols]))


def test_predict_equals_the_cached_feature_tiles_path(trained):
    """``predict`` computes features only where the forest needs them (and only the columns its trees split
    on); the napari widget classifies whole cached feature tiles: the same probabilities, exactly."""
    from ceimap.segment.features import feature_tile, normalise_sem, spectral_maps, tile_slices

    clf, _ = trained
    assert 0 < len(clf.used_columns) <= len(SPEC.names)
    sem, ods, regs, eg, se, _, _ = make_lamella(1)
    _, probs, _ = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=64)
    maps = spectral_maps(ods, SPEC, egt2g=eg, s_edge=se)
    mats = {e: regs[e].matrix for e in SPEC.edges}
    norm = normalise_sem(sem.image)[0]
    for ys, xs in tile_slices(sem.image.shape, 64):
        tile = feature_tile(norm, (ys, xs), sem.pixel_size_nm, SPEC, maps, mats)
        np.testing.assert_array_equal(np.moveaxis(clf.predict_proba_tile(tile, origin=(ys.start, xs.start)), -1, 0),
                                      probs[1:, ys, xs])


def test_boundary_refinement_moves_misplaced_boundaries_back():
    """A map whose NMC grew and whose void shrank by two pixels (where a forest on smoothed features puts its
    boundaries) is brought back to the SEM's edges; interphase stays where the map had it."""
    from ceimap.segment.classifier import refine_boundaries

    sem, _, _, _, _, truth, _ = make_lamella(0)
    nmc, void = truth == 1, truth == 4
    shifted = np.where(truth == 2, 3, truth).astype(np.uint8)
    shifted[ndimage.binary_dilation(nmc, iterations=2) & (truth != 4)] = 1
    shifted[void & ~ndimage.binary_erosion(void, iterations=2)] = 3
    ring = (truth == 2) & (shifted == 3)
    shifted[ring] = 2
    refined = refine_boundaries(shifted, sem.image, sem.pixel_size_nm, stxm_pixel_nm=30.0)
    before, after = macro_f1(shifted, truth)[0], macro_f1(refined, truth)[0]
    assert after > before + 0.03, (before, after)
    assert np.mean(refined[truth == 1] == 1) > 0.98 and np.mean(refined[truth == 4] == 4) > 0.9
    assert np.all(refined[refined == 2] == shifted[refined == 2])     # interphase only where it was
    tiled = refine_boundaries(shifted, sem.image, sem.pixel_size_nm, stxm_pixel_nm=30.0, tile_px=80)
    assert np.mean(tiled != refined) < 0.005


def test_run_with_model_refines_and_keeps_probabilities_consistent(trained):
    """``classify_with_model`` (``ceimap run --model``) refines boundaries, records it, and its probabilities
    still name the map's class as the most probable (refined pixels swap the two classes' probabilities)."""
    from ceimap.segment.pipeline import classify_with_model

    clf, _ = trained
    sem, ods, regs, eg, se, truth, _ = make_lamella(1)
    seg = classify_with_model(clf, ods, regs, sem, egt2g=eg, s_edge=se)
    raw = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se)[0]
    info = seg.details["boundary_refinement"]
    assert info["stxm_pixel_nm"] == 30.0 and 0 < info["changed_fraction"] < 0.05
    assert seg.details["interphase_placement"]["placed_by"] == "classifier"   # the toy's OD holds no S shift
    assert macro_f1(seg.classes, truth)[0] >= macro_f1(raw, truth)[0] - 0.005
    assert np.mean(np.argmax(seg.probabilities, axis=0) == seg.classes) > 0.999
    np.testing.assert_allclose(seg.probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_place_interphase_keeps_the_classifier_when_the_chemistry_measures_none(trained):
    """The toy scene's S-edge shift lives in its S-edge map only, not in the OD spectra: the chemistry measures
    no interphase, so the classifier's interphase stays; a map without interphase is returned as it is."""
    from ceimap.segment.classifier import place_interphase

    clf, _ = trained
    sem, ods, regs, eg, se, truth, _ = make_lamella(0)
    classes = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se)[0]
    assert np.any(classes == 2)
    out, info = place_interphase(classes, ods, regs, sem.pixel_size_nm)
    assert info["placed_by"] == "classifier" and "no interphase" in info["reason"]
    np.testing.assert_array_equal(out, classes)
    bare = np.where(classes == 2, 3, classes).astype(np.uint8)
    out, info = place_interphase(bare, ods, regs, sem.pixel_size_nm)
    assert info == {"placed_by": "classifier", "reason": "the classifier found no interphase"}
    np.testing.assert_array_equal(out, bare)


def test_save_load_round_trip_identical(trained, tmp_path):
    clf, _ = trained
    path = tmp_path / "model.npz"
    digest = clf.save(path)
    loaded = PixelClassifier.load(path)
    assert loaded.sha256 == digest and loaded.spec == clf.spec and loaded.seed == 3
    sem, ods, regs, eg, se, _, _ = make_lamella(1)
    a = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se)
    b = loaded.predict(sem, ods, regs, egt2g=eg, s_edge=se)
    np.testing.assert_array_equal(a[1], b[1])
    record = loaded.describe()
    assert record["file"] == "model.npz" and record["sha256"] == digest
    assert record["feature_spec"]["names"] == SPEC.names


def _rewrite(src, dst, *, header_changes=None, arrays_changes=None, rehash=True, extra=None):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("header").tobytes())
    header.update(header_changes or {})
    arrays.update(arrays_changes or {})
    if rehash:
        header["sha256"] = _content_hash(header, arrays)
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, header=blob, **arrays, **(extra or {}))


def test_tampered_model_refused(trained, tmp_path):
    clf, _ = trained
    good = tmp_path / "good.npz"
    clf.save(good)
    feats = clf.features.copy()
    feats[0, 0] += 1.0
    bad = tmp_path / "tampered.npz"
    _rewrite(good, bad, arrays_changes={"features": feats}, rehash=False)
    with pytest.raises(CeimapInputError, match=r"tampered\.npz.*SHA-256 does not match"):
        PixelClassifier.load(bad)
    labels = clf.labels.copy()
    labels[:10] = 4
    _rewrite(good, bad, arrays_changes={"labels": labels}, rehash=False)
    with pytest.raises(CeimapInputError, match="SHA-256"):
        PixelClassifier.load(bad)


@pytest.mark.parametrize("changes, message", [
    ({"format_version": MODEL_FORMAT_VERSION + 1}, "model format version"),
    ({"format": "something-else"}, "does not say format"),
    ({"estimator": "os.system"}, "unknown estimator"),
    ({"params": {"n_estimators": 10, "__class__": 1}}, "hyper-parameters"),
    ({"seed": "0"}, "seed"),
])
def test_wrong_header_refused(trained, tmp_path, changes, message):
    clf, _ = trained
    good = tmp_path / "good.npz"
    clf.save(good)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, header_changes=changes)
    with pytest.raises(CeimapInputError, match=message):
        PixelClassifier.load(bad)


def test_wrong_feature_spec_version_refused(trained, tmp_path):
    clf, _ = trained
    good = tmp_path / "good.npz"
    clf.save(good)
    spec = {**clf.spec.to_dict(), "version": 0}
    bad = tmp_path / "old.npz"
    _rewrite(good, bad, header_changes={"feature_spec": spec})
    with pytest.raises(CeimapInputError, match=r"old\.npz.*feature spec version 0.*retrain"):
        PixelClassifier.load(bad)


class _Trap:
    """Unpickling this would create a file: proves nothing is unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickle_bearing_file_refused_and_not_executed(trained, tmp_path):
    clf, _ = trained
    good = tmp_path / "good.npz"
    clf.save(good)
    marker = tmp_path / "executed"
    bad = tmp_path / "pickled.npz"
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(marker)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = trap
    np.savez(bad, **arrays)
    with pytest.raises(CeimapInputError, match=r"pickled\.npz.*plain numeric arrays"):
        PixelClassifier.load(bad)
    assert not marker.exists()
    _rewrite(good, bad, extra={"payload": trap})
    with pytest.raises(CeimapInputError, match="expected the entries"):
        PixelClassifier.load(bad)
    assert not marker.exists()


def test_not_a_model_refused(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CeimapInputError, match=r"notes\.npz.*not a NumPy \.npz"):
        read_model_file(text)
    with pytest.raises(CeimapInputError, match="not found"):
        read_model_file(tmp_path / "missing.npz")


def test_lamella_mismatch_refused(trained):
    clf, _ = trained
    sem, ods, regs, eg, se, _, _ = make_lamella(1)
    clf.check_lamella(sem, ods, path="m.npz")                   # compatible: no error
    with pytest.raises(CeimapInputError, match=r"m\.npz.*lacks S-L"):
        clf.check_lamella(sem, {"Ni-L": ods["Ni-L"]}, path="m.npz")
    with pytest.raises(CeimapInputError, match="SEM pixels"):
        clf.check_lamella(SemImage(sem.image, 35.0), ods, path="m.npz")
    with pytest.raises(CeimapInputError, match="STXM pixels"):
        clf.check_lamella(sem, {**ods, "S-L": ods["S-L"].with_data(ods["S-L"].data, pixel_size_nm=200.0)},
                          path="m.npz")
    shifted = ods["Ni-L"].with_data(ods["Ni-L"].data, energies_ev=NI_E + 20.0)
    with pytest.raises(CeimapInputError, match="Ni-L.*energies"):
        clf.check_lamella(sem, {**ods, "Ni-L": shifted}, path="m.npz")


def test_deterministic_fit(trained):
    clf, samples = trained
    again = PixelClassifier(SPEC, [samples], seed=3, params=FAST)
    x = samples.features[:200]
    np.testing.assert_array_equal(clf.predict_proba_features(x), again.predict_proba_features(x))


def test_leave_one_lamella_out():
    samples = []
    for seed in (0, 1):
        sem, ods, regs, eg, se, _, ann = make_lamella(seed)
        samples.append(lamella_samples(f"l{seed}", sem, ods, regs, ann, SPEC, egt2g=eg, s_edge=se))
    out = leave_one_lamella_out(samples, SPEC, params=FAST)
    assert set(out) == {"l0", "l1"}
    for v in out.values():
        assert 0.8 <= v["macro_f1"] <= 1.0 and v["n"] > 0
    assert leave_one_lamella_out(samples[:1], SPEC) == {}


def test_entropy_and_f1():
    assert entropy_map(np.full((4, 2, 2), 0.25)) == pytest.approx(1.0)
    assert entropy_map(np.eye(4)[:, :, None]).max() < 1e-6
    macro, per = macro_f1(np.array([1, 1, 3, 3]), np.array([1, 3, 3, 0]))
    assert per == {1: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)} and macro == pytest.approx(2 / 3)


def test_no_pickle_loading_anywhere():
    """No code path of the project unpickles: no pickle/joblib/skops loads, no allow_pickle=True."""
    forbidden = re.compile("|".join([
        r"\bimport\s+pickle\b", r"\bfrom\s+pickle\b", r"pickle\.loads?\(", r"\bjoblib\.load\(",
        r"from\s+joblib\s+import\s+load", r"allow_pickle\s*=\s*True", r"\bskops\.io\.load\(",
        r"\bdill\b", r"\bcloudpickle\b", r"torch\.load\(",
    ]))
    offenders = []
    for folder in ("ceimap", "segment", "stats", "napari_plugin", "benchmarks", "tools"):
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if forbidden.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.fixture(scope="module")
def example_figures(datasets_dir, tmp_path_factory):
    """Trained on the 4.25 V annotation strokes (saved, reloaded); applied to itself, 4.7 V and charged.

    Returns {name: (macro F1, per-class F1, fraction of the lamella called interphase)}.
    """
    from ceimap.segment.io import read_annotations, read_lamella
    from ceimap.segment.pipeline import classify_with_model, preprocess_lamella, train_classifier
    from ceimap.segment.synthetic import load_truth

    lamellae = {name: read_lamella(datasets_dir / name / "lamella.toml")
                for name in ("cycled_4p25v", "cycled_4p7v", "charged")}
    train = lamellae["cycled_4p25v"]
    labels = read_annotations(train.annotations_path, train.sem.image.shape)
    model = train_classifier([(train, labels)], seed=0)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    model = PixelClassifier.load(path)
    figures = {}
    for name, lamella in lamellae.items():
        model.check_lamella(lamella.sem, lamella.stacks)
        od, _, _, regs, egt2g, s_edge = preprocess_lamella(lamella)
        seg = classify_with_model(model, od, regs, lamella.sem, egt2g=egt2g, s_edge=s_edge)
        truth = load_truth(datasets_dir / name)["classes"]
        macro, per = macro_f1(seg.classes, truth)
        figures[name] = (macro, per, float(np.mean(seg.classes[truth > 0] == 2)))
    return figures


@pytest.mark.slow
def test_accuracy_on_the_example_lamellae(example_figures):
    """What is reached (feature spec 2, 12 trees, lattice 2, seed 0; ``classify_with_model``, i.e. with the SEM
    boundary refinement and the interphase re-drawn from the chemistry): macro F1 0.973 within the 4.25 V
    lamella, 0.962 at 4.7 V, 0.990 charged with 0.00 % interphase (interphase F1 0.93 / 0.91; after the
    refinement alone 0.947 / 0.939 / 0.990, interphase F1 0.84 / 0.83; the classifier's map alone 0.917 / 0.888 /
    0.96). The floors are these figures minus 0.005 (0.01 for the interphase F1): seed 0 is fixed, so the margin
    covers numerical drift of the stages, not seeds (other seeds move the classifier's map by up to ±0.02).
    scikit-image's recipe (multiscale_basic_features + RF, SEM only) reaches 0.84 / 0.81 / 0.93 and paints 15 %
    of the charged lamella as interphase."""
    figures = example_figures
    assert figures["cycled_4p25v"][0] >= 0.968, figures
    assert figures["cycled_4p7v"][0] >= 0.957, figures
    assert figures["charged"][0] >= 0.985, figures
    assert figures["charged"][2] < 0.01, figures          # issue target: no interphase on a charged lamella
    assert figures["cycled_4p25v"][1][2] >= 0.92, figures  # interphase is found where it exists, and placed
    assert figures["cycled_4p7v"][1][2] >= 0.90, figures


@pytest.mark.slow
def test_accuracy_reaches_the_issue_targets(example_figures):
    """Issue 6: ≥ 0.97 trained and applied within one lamella; ≥ 0.95 on the others, < 1 % of the charged
    lamella called interphase (measured 0.973 / 0.962 / 0.990, 0.00 %)."""
    figures = example_figures
    assert figures["cycled_4p25v"][0] >= 0.97, figures
    assert figures["cycled_4p7v"][0] >= 0.95 and figures["charged"][0] >= 0.95, figures
    assert figures["charged"][2] < 0.01, figures
