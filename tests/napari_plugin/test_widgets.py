"""The docked widgets in a real (headless) napari viewer: each runs its action in a worker and adds its layers.

Runs under pytest-xvfb (see ../shared/NAPARI_CI.md); skipped without Qt or a display. The end-to-end run on an
example lamella (open → preprocess → segment → measure → export) is slow-marked.
"""

import os

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from tests.napari_plugin.test_actions import SEM_PX, STXM_PX, od_scene  # noqa: E402

pytestmark = pytest.mark.viewer


@pytest.fixture
def viewer(request):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no display (run under pytest-xvfb or xvfb-run)")
    return request.getfixturevalue("make_napari_viewer")()


def run_widget(qtbot, widget, timeout_s=120):
    worker = widget.start()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=int(timeout_s * 1000))
    assert widget.status.value == "done", widget.status.value


def add_scene(viewer, counts=True):
    from ceimap.napari_plugin._layers import sem_layer, stack_layer
    from ceimap.napari_plugin._widgets import add_layers
    from ceimap.segment.lamella import SemImage
    from ceimap.segment.register import similarity_matrix

    stack, _ = od_scene(counts=counts)
    sem = SemImage(np.random.default_rng(0).normal(100, 5, (170, 170)).astype(np.float32), SEM_PX, "user", "")
    matrix = similarity_matrix(STXM_PX / SEM_PX, 0.0, (2.0, 3.0))
    return add_layers(viewer, [sem_layer(sem), stack_layer(stack, matrix=matrix, sem_pixel_nm=SEM_PX)])


def test_preprocess_and_decompose_widgets_add_their_layers(viewer, qtbot):
    from ceimap.napari_plugin._widgets import DecomposeWidget, PreprocessWidget

    sem, stack = add_scene(viewer)
    pre = PreprocessWidget(viewer)
    viewer.window.add_dock_widget(pre)
    pre.stack.value = stack
    run_widget(qtbot, pre)
    od = viewer.layers["Ni-L OD aligned"]
    assert od.metadata["kind"] == "od" and od.data.shape == stack.data.shape
    assert np.allclose(od.affine.affine_matrix, stack.affine.affine_matrix)  # stays where it was placed
    dec = DecomposeWidget(viewer)
    dec.stack.value = od
    dec.method.value = "kmeans"
    dec.n_components.value = 3
    run_widget(qtbot, dec)
    assert "Ni-L kmeans maps" in viewer.layers and "Ni-L clusters" in viewer.layers
    assert len(np.unique(viewer.layers["Ni-L clusters"].data)) == 3


def test_register_widget_landmark_mode_updates_the_layer_in_place(viewer, qtbot):
    from ceimap.napari_plugin._widgets import RegisterWidget
    from ceimap.segment.register import similarity_matrix, transform_points

    sem, stack = add_scene(viewer, counts=False)
    truth = similarity_matrix(STXM_PX / SEM_PX, 4.0, (20.0, 11.0))
    pix_xy = np.array([[5.0, 5.0], [35.0, 5.0], [20.0, 33.0]])
    current = np.asarray(stack.metadata["matrix_stxm_to_sem"])
    stxm_pts = viewer.add_points(transform_points(current, pix_xy)[:, ::-1] * SEM_PX, name="on stack")
    sem_pts = viewer.add_points(transform_points(truth, pix_xy)[:, ::-1] * SEM_PX, name="on SEM")
    reg = RegisterWidget(viewer)
    reg.stack.value, reg.sem.value, reg.mode.value = stack, sem, "landmarks"
    reg.stxm_points.value, reg.sem_points.value = stxm_pts, sem_pts
    n_layers = len(viewer.layers)
    run_widget(qtbot, reg)
    assert len(viewer.layers) == n_layers  # updated, not added
    assert np.allclose(stack.metadata["matrix_stxm_to_sem"], truth, atol=1e-6)
    # the layer is drawn through the new matrix: STXM pixel (y=5, x=35) lands on the SEM landmark
    world = stack.data_to_world([0, 5, 35])
    assert np.allclose(world[-2:], transform_points(truth, [[35.0, 5.0]])[0, ::-1] * SEM_PX, atol=1e-6)


def test_classify_widget_trains_predicts_relearns_live_and_saves(viewer, qtbot, tmp_path):
    from ceimap.napari_plugin._widgets import ClassifyWidget, add_layers
    from tests.napari_plugin.test_actions import classify_scene

    sem_ns, od_ns, strokes, truth = classify_scene()
    sem, od = add_layers(viewer, [(sem_ns.data, {"name": sem_ns.name, "metadata": sem_ns.metadata,
                                                 "scale": (SEM_PX, SEM_PX)}, "image"),
                                  (od_ns.data, {"name": od_ns.name, "metadata": od_ns.metadata}, "image")])
    w = ClassifyWidget(viewer)
    w.sem.value = sem
    ann = w.add_annotation_layer()
    assert ann.name == "annotations" and ann.data.shape == truth.shape
    ann.data = strokes
    run_widget(qtbot, w)
    pred = viewer.layers["prediction"].data
    inner = (truth == 1) & (np.abs(np.indices(truth.shape) - np.array([80, 72])[:, None, None]).max(0) < 20)
    assert np.mean(pred[inner] == 1) > 0.95
    assert "uncertainty" in viewer.layers
    # live: an edit re-trains and re-predicts after the debounce
    w.debounce_ms = 50
    w.live.value = True
    before = w.classifier
    edited = strokes.copy()
    edited[100:104, 100:140] = 3
    ann.data = edited
    qtbot.waitUntil(lambda: w.classifier is not before and w.worker is None, timeout=120_000)
    # model files: save, load (refitted from its data), same predictions
    w.model_path.value = tmp_path / "model.npz"
    assert w.save_model() == tmp_path / "model.npz"
    trained = w.classifier
    loaded = w.load_model()
    x = np.random.default_rng(0).normal(size=(50, trained.features.shape[1])).astype(np.float32)
    assert np.array_equal(loaded.predict_proba_features(x), trained.predict_proba_features(x))


def test_a_bad_choice_is_reported_not_raised(viewer, qtbot):
    from ceimap.napari_plugin._widgets import SegmentWidget

    seg = SegmentWidget(viewer)
    assert seg.start() is None
    assert seg.status.value.startswith("failed:")


@pytest.mark.slow
def test_whole_workflow_on_the_4p25v_example(viewer, qtbot, tmp_path, datasets_dir):
    from sklearn.metrics import f1_score

    from ceimap.napari_plugin._widgets import MeasureWidget, PreprocessWidget, SegmentWidget
    from ceimap.segment.synthetic import load_truth

    if not (datasets_dir / "cycled_4p25v" / "truth").is_dir():
        pytest.skip("example lamella not found")
    viewer.open_sample("ceimap", "cycled_4p25v")
    pre = PreprocessWidget(viewer)
    for edge in ("Ni-L", "S-L"):
        layer = next(la for la in viewer.layers if la.metadata.get("edge") == edge and "OD" in la.name)
        pre.stack.value = layer
        run_widget(qtbot, pre, timeout_s=600)
    seg = SegmentWidget(viewer)
    run_widget(qtbot, seg, timeout_s=600)
    classes = viewer.layers["classes"].data
    truth = load_truth(datasets_dir / "cycled_4p25v")
    inside = truth["classes"] > 0
    f1 = f1_score(truth["classes"][inside], classes[inside], labels=[1, 2, 3, 4], average="macro")
    assert f1 >= 0.90  # the unsupervised path's figure on this example (tests/segment/test_assign_datasets.py)
    meas = MeasureWidget(viewer)
    meas.classes.value = viewer.layers["classes"]
    run_widget(qtbot, meas, timeout_s=600)
    quantities = meas.table.value["data"] if isinstance(meas.table.value, dict) else None
    assert quantities
    meas.out_dir.value = tmp_path / "run"
    worker = meas.export()
    qtbot.waitUntil(lambda: (tmp_path / "run" / "report.html").is_file(), timeout=600_000)
    assert worker is not None and (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_classify_widget_on_the_4p25v_example_is_the_librarys_classifier(viewer, qtbot, datasets_dir):
    """Train → predict in the viewer on the example's strokes: the Labels layer shown is exactly the library's
    prediction (the plugin adds no science), so it reaches the classifier's F1 against the truth."""
    from ceimap.napari_plugin import _actions as act
    from ceimap.napari_plugin._widgets import ClassifyWidget, chosen_stacks
    from ceimap.segment.classifier import PixelClassifier, default_spec, lamella_samples, macro_f1
    from ceimap.segment.synthetic import load_truth

    if not (datasets_dir / "cycled_4p25v" / "truth").is_dir():
        pytest.skip("example lamella not found")
    viewer.open_sample("ceimap", "cycled_4p25v")
    w = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.sem.value = sem = next(la for la in viewer.layers if act.is_sem_layer(la))
    w.annotations.value = ann = next(la for la in viewer.layers if la.name.endswith("annotations"))
    shown = []
    viewer.layers.events.inserted.connect(lambda e: shown.append(e.value.name))
    run_widget(qtbot, w, timeout_s=900)
    pred = np.asarray(viewer.layers["prediction"].data)
    assert shown.count("prediction") == 1  # added once (the preview), then replaced stage by stage

    maps = act.lamella_maps(sem, chosen_stacks(viewer))
    spec = default_spec(maps["od_stacks"])
    extra = {"egt2g": maps["egt2g"], "s_edge": maps["s_edge"]}
    samples = lamella_samples("cycled_4p25v", maps["sem"], maps["od_stacks"], maps["registrations"],
                              np.asarray(ann.data), spec, **extra)
    library = PixelClassifier(spec, [samples]).predict(maps["sem"], maps["od_stacks"], maps["registrations"],
                                                       **extra)[0]
    assert np.array_equal(pred, library)
    truth = load_truth(datasets_dir / "cycled_4p25v")["classes"]
    f1, _ = macro_f1(pred, truth)
    # a working classifier: the library's figure on its own strokes is 0.92 on ceimap-aligned stacks (segment/
    # classifier.py, tested there); on these stacks as measured (drift not corrected) it was 0.88 when written
    assert f1 >= 0.85, f1
