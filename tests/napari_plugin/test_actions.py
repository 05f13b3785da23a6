"""The widgets' actions without Qt: layers in, library calls, layer data out (napari_plugin._actions)."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from ceimap.napari_plugin import _actions as act
from ceimap.napari_plugin._layers import sem_layer, stack_layer
from ceimap.segment.lamella import SemImage
from ceimap.segment.register import similarity_matrix, transform_points
from ceimap.segment.stack import Stack

SEM_PX, STXM_PX = 10.0, 40.0


def as_layer(layer_tuple):
    data, kwargs, _ = layer_tuple
    return SimpleNamespace(data=data, metadata=kwargs.get("metadata", {}), name=kwargs.get("name"))


def disk(shape, centre, radius):
    yy, xx = np.indices(shape)
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(float)


def od_scene(n_energy=12, shifts=None, counts=False, seed=0):
    """A 40×40 stack of two phases (a disk and a ring-shaped second phase) with distinct spectra."""
    rng = np.random.default_rng(seed)
    e = np.linspace(845.0, 860.0, n_energy)
    a = disk((40, 40), (20, 18), 9)
    b = np.clip(disk((40, 40), (20, 18), 14) - a, 0, 1)
    spec_a = 0.3 + 0.8 * np.exp(-0.5 * ((e - 853.0) / 1.2) ** 2)
    spec_b = 0.2 + 0.1 * (e > 851)
    od = a[None] * spec_a[:, None, None] + b[None] * spec_b[:, None, None]
    if shifts is not None:
        od = np.stack([ndimage.shift(f, s, order=3, mode="nearest") for f, s in zip(od, shifts)])
    if counts:
        i0 = 5000.0
        data = rng.poisson(i0 * np.exp(-od)).astype(float)
        return Stack(data=data, energies_ev=e, pixel_size_nm=STXM_PX, kind="counts", edge="Ni-L"), od
    return Stack(data=od + rng.normal(0, 0.005, od.shape), energies_ev=e, pixel_size_nm=STXM_PX, kind="od",
                 edge="Ni-L"), od


def test_world_coordinates_round_trip_through_the_registration_affine():
    stack, _ = od_scene()
    matrix = similarity_matrix(STXM_PX / SEM_PX, 3.0, (12.0, -5.0))
    layer = as_layer(stack_layer(stack, matrix=matrix, sem_pixel_nm=SEM_PX))
    pix_yx = np.array([[0.0, 0.0], [10.0, 30.0], [39.0, 5.5]])
    sem_xy = transform_points(matrix, pix_yx[:, ::-1])
    world = sem_xy[:, ::-1] * SEM_PX
    assert np.allclose(act.world_to_stxm_pixels(layer, world), pix_yx, atol=1e-9)
    # unregistered: placed by its own pixel size and stage origin
    free = as_layer(stack_layer(stack))
    assert np.allclose(act.world_to_stxm_pixels(free, [[80.0, 120.0]]), [[2.0, 3.0]])


def test_i0_region_from_a_drawn_rectangle_covers_exactly_its_pixels():
    stack, _ = od_scene()
    layer = as_layer(stack_layer(stack))  # world = 40 nm × pixel
    rect = np.array([[0.0, 0.0], [0.0, 200.0], [120.0, 200.0], [120.0, 0.0]])  # rows 0–3, columns 0–5
    mask = act.region_mask_from_shapes([rect], layer)
    assert mask[:3, :5].all() and mask.sum() <= 4 * 6 and not mask[10:, 10:].any()


def test_preprocess_aligns_frames_and_converts_counts_to_od():
    rng = np.random.default_rng(3)
    true = np.cumsum(rng.normal(0, 0.3, (12, 2)), axis=0)
    stack, od_true = od_scene(shifts=true, counts=True)
    layer = as_layer(stack_layer(stack))
    data, kwargs, kind = act.preprocess(layer)
    assert kind == "image" and kwargs["name"] == "Ni-L OD aligned" and kwargs["metadata"]["kind"] == "od"
    found = np.asarray(kwargs["metadata"]["drift_px"])
    residual = (found - found.mean(0)) - (true - true.mean(0))
    assert np.abs(residual).mean() < 0.1  # subpixel: well under the 0.3 px steps of the walk
    # OD against truth in the disk interior, where the shift does not matter
    inner = disk((40, 40), (20, 18), 5).astype(bool)
    assert np.allclose(np.median(data[:, inner], axis=1), np.median(od_true[:, inner], axis=1), atol=0.05)


def test_preprocess_takes_i0_from_the_users_region():
    stack, _ = od_scene(counts=True)
    layer = as_layer(stack_layer(stack))
    rect = np.array([[0.0, 0.0], [0.0, 1500.0], [150.0, 1500.0], [150.0, 0.0]])  # top rows: empty
    data, kwargs, _ = act.preprocess(layer, i0_region_world=[rect], align=False)
    assert kwargs["metadata"]["od_report"]["i0_source"] != "file monitor"
    assert abs(float(np.median(data[:, :3, :30]))) < 0.02  # empty area is OD 0
    far = np.array([[1e5, 1e5], [1e5, 1.1e5], [1.1e5, 1.1e5]])
    with pytest.raises(act.LayerError, match="does not cover"):
        act.preprocess(layer, i0_region_world=[far], align=False)


def test_register_from_landmarks_recovers_the_matrix():
    stack, _ = od_scene()
    truth = similarity_matrix(STXM_PX / SEM_PX, -2.0, (30.0, 14.0))
    sem = as_layer(sem_layer(SemImage(np.zeros((200, 200), np.float32), SEM_PX, "user", "")))
    layer = as_layer(stack_layer(stack, matrix=similarity_matrix(STXM_PX / SEM_PX), sem_pixel_nm=SEM_PX))
    pix_yx = np.array([[5.0, 5.0], [5.0, 35.0], [33.0, 20.0]])
    current = np.asarray(layer.metadata["matrix_stxm_to_sem"])
    stxm_world = transform_points(current, pix_yx[:, ::-1])[:, ::-1] * SEM_PX  # where the user clicks
    sem_world = transform_points(truth, pix_yx[:, ::-1])[:, ::-1] * SEM_PX
    data, kwargs, _ = act.register(layer, sem, stxm_points_world=stxm_world, sem_points_world=sem_world)
    assert kwargs["name"] == layer.name
    assert np.allclose(kwargs["metadata"]["matrix_stxm_to_sem"], truth, atol=1e-6)
    assert kwargs["metadata"]["registration"].startswith("landmarks-similarity")
    with pytest.raises(act.LayerError, match="same order"):
        act.register(layer, sem, stxm_points_world=stxm_world, sem_points_world=sem_world[:2])


def test_decompose_finds_two_phases_and_clusters_them():
    stack, _ = od_scene()
    layer = as_layer(stack_layer(stack))
    (maps, kwargs, kind), = act.decompose(layer, method="pca")
    assert kind == "image" and maps.shape[1:] == (40, 40)
    assert maps.shape[0] == 2  # background is the mean; two phases → rank 2 after centring
    layers = act.decompose(layer, method="kmeans", n_clusters=3)
    labels = layers[1][0]
    a = disk((40, 40), (20, 18), 7).astype(bool)
    b = (disk((40, 40), (20, 18), 13) - disk((40, 40), (20, 18), 10)).astype(bool)
    out = disk((40, 40), (20, 18), 17) == 0
    for region in (a, b, out):  # each phase is one cluster, and the three differ
        assert np.mean(labels[region] == np.bincount(labels[region]).argmax()) > 0.95
    assert len({np.bincount(labels[r]).argmax() for r in (a, b, out)}) == 3
    nmf_maps = act.decompose(layer, method="nmf", n_components=2)[0][0]
    assert nmf_maps.min() >= 0


def test_actions_refuse_the_wrong_layers():
    sem = as_layer(sem_layer(SemImage(np.zeros((20, 20), np.float32), SEM_PX, "user", "")))
    with pytest.raises(act.LayerError, match="not an STXM stack"):
        act.preprocess(sem)
    counts, _ = od_scene(counts=True)
    with pytest.raises(act.LayerError, match="optical density first"):
        act.decompose(as_layer(stack_layer(counts)), method="pca")
    stack, _ = od_scene()
    with pytest.raises(act.LayerError, match="not registered"):
        act.pipeline_result(sem, [as_layer(stack_layer(stack))])


def test_spectrum_at_a_world_point():
    stack, _ = od_scene()
    layer = as_layer(stack_layer(stack))
    e, od = act.spectrum_at(layer, [20 * STXM_PX, 18 * STXM_PX])
    assert np.allclose(od, stack.data[:, 20, 18]) and np.allclose(e, stack.energies_ev)
    assert act.spectrum_at(layer, [-1000.0, 0.0]) is None


def classify_scene(seed=0):
    """SEM (160², 10 nm) drawn from the od_scene phases (STXM 40², 40 nm, registered ×4) and sparse strokes."""
    from ceimap.segment.register import similarity_matrix

    rng = np.random.default_rng(seed)
    stack, _ = od_scene(seed=seed)
    yy, xx = np.indices((160, 160)) / 4.0
    a = ((yy - 20) ** 2 + (xx - 18) ** 2) <= 81
    b = (((yy - 20) ** 2 + (xx - 18) ** 2) <= 196) & ~a
    sem_img = np.where(a, 180.0, np.where(b, 110.0, 40.0)) + rng.normal(0, 8, (160, 160))
    truth = np.where(a, 1, np.where(b, 3, 4)).astype(np.uint8)
    strokes = np.zeros_like(truth)
    strokes[78:82, 55:90] = 1
    strokes[78:82, 20:26] = 3
    strokes[5:8, 5:150] = 4
    sem = as_layer(sem_layer(SemImage(sem_img.astype(np.float32), SEM_PX, "user", "")))
    od = as_layer(stack_layer(stack, matrix=similarity_matrix(STXM_PX / SEM_PX), sem_pixel_nm=SEM_PX))
    return sem, od, strokes, truth


def test_train_and_predict_from_strokes_and_the_visible_region():
    sem, od, strokes, truth = classify_scene()
    maps = act.lamella_maps(sem, [od])
    clf = act.train(maps, strokes)
    (classes, kw, kind), (unc, ukw, _) = act.predict(clf, maps)
    assert kind == "labels" and kw["name"] == "prediction" and ukw["name"] == "uncertainty"
    inner = ndimage.binary_erosion(truth > 0, iterations=3)  # away from the blurred boundaries
    for c in (1, 3, 4):
        m = ndimage.binary_erosion(truth == c, iterations=4)
        assert np.mean(classes[m] == c) > 0.95, c
    assert np.nanmean(unc[inner & (truth == 1)]) < np.nanmean(unc[strokes == 0]) + 0.2
    region = act.visible_region((160, 160), [100.0, 100.0], [600.0, 700.0], SEM_PX)
    assert region == (slice(10, 61), slice(10, 71))
    (part, _, _), _ = act.predict(clf, maps, region=region)
    assert np.array_equal(part[region], classes[region])  # the preview equals the full prediction there
    assert (part == 0).mean() > 0.3  # tiles far from the view are not computed
    with pytest.raises(act.LayerError, match="two classes"):
        act.train(maps, np.where(strokes == 1, 1, 0))
    with pytest.raises(act.LayerError, match="codes"):
        act.train(maps, np.where(strokes == 1, 7, strokes))


# -- live classification: feature cache, coarse-to-fine, stale work ----------------------------------------

TILE = 64  # several tiles on the 160² scene


def live_scene(**cache_kwargs):
    sem, od, strokes, truth = classify_scene()
    maps = act.lamella_maps(sem, [od])
    return maps, act.LivePredictor(maps, tile_px=TILE, **cache_kwargs), strokes, truth


def library_prediction(clf, maps):
    return clf.predict(maps["sem"], maps["od_stacks"], maps["registrations"], egt2g=maps["egt2g"],
                       s_edge=maps["s_edge"], tile_px=TILE)


def test_feature_cache_holds_exactly_the_fresh_features():
    from ceimap.segment.classifier import lamella_samples
    from ceimap.segment.features import feature_image, features_at

    maps, live, strokes, _ = live_scene()
    c = live.cache
    fresh = feature_image(c.sem_image, c.pixel_size_nm, c.spec, c.maps, c.matrices, tile_px=TILE)
    rows, cols = np.arange(3, 160, 7), np.arange(0, 160, 5)
    assert np.array_equal(c.grid(rows, cols), fresh[np.ix_(rows, cols)])  # computed on demand, tile by tile
    assert len(c.tiles) == 9 and c.nbytes == 160 * 160 * c.n_features * 4  # float32, every pixel once
    mask = strokes > 0
    assert np.array_equal(c.at(mask), features_at(mask, c.sem_image, c.pixel_size_nm, c.spec, c.maps,
                                                  c.matrices, tile_px=TILE))
    samples = act.samples_from_cache(c, maps, strokes)
    ref = lamella_samples("napari", maps["sem"], maps["od_stacks"], maps["registrations"], strokes, c.spec,
                          egt2g=maps["egt2g"], s_edge=maps["s_edge"], tile_px=TILE)
    assert np.array_equal(samples.features, ref.features) and np.array_equal(samples.labels, ref.labels)
    assert samples.stxm_pixel_nm == ref.stxm_pixel_nm and samples.energy_range_ev == ref.energy_range_ev
    # the key names the features: another image or spec → another key; the same → the same
    from dataclasses import replace

    other = act.FeatureCache(replace(maps["sem"], image=maps["sem"].image + 1), c.spec, c.maps, c.matrices)
    assert other.key != c.key
    assert act.FeatureCache(maps["sem"], c.spec, c.maps, c.matrices).key == c.key
    assert act.FeatureCache(maps["sem"], replace(c.spec, sem_scales_nm=(10.0,)), c.maps, c.matrices).key != c.key
    # a cache smaller than the image keeps the most recently used tiles and still answers right
    one_tile_mb = TILE * TILE * c.n_features * 4 / 2**20
    small = act.FeatureCache(maps["sem"], c.spec, c.maps, c.matrices, tile_px=TILE, max_mb=2.5 * one_tile_mb)
    assert np.array_equal(small.grid(rows, cols), fresh[np.ix_(rows, cols)])
    assert small.nbytes <= small.max_bytes and len(small.tiles) < 9


def test_coarse_to_fine_ends_exactly_on_the_full_prediction():
    maps, live, strokes, truth = live_scene()
    view = (slice(10, 70), slice(30, 100))
    out = list(live.run(strokes, view=view, step=3))
    stages = [s for s in out if isinstance(s, act.Stage)]
    assert [s.name for s in stages] == ["preview", "view", "all"]
    assert all(isinstance(s, str) for s in out if not isinstance(s, act.Stage))  # progress messages
    clf = live.classifier
    classes, _, entropy = library_prediction(clf, maps)
    final = stages[-1]
    assert np.array_equal(final.classes, classes) and np.array_equal(final.entropy, entropy)
    assert stages[1].region == (slice(0, 2 * TILE), slice(0, 2 * TILE))  # the cache tiles under the view first,
    assert np.array_equal(stages[1].classes[stages[1].region], classes[stages[1].region])  # at full resolution
    assert not stages[1].classes[2 * TILE:, :].any()  # … and nothing else yet (no earlier prediction)
    # refitted on the cached features of the strokes = the library's training on this lamella
    lib = act.train(maps, strokes)
    assert np.array_equal(library_prediction(lib, maps)[0], classes)
    # the preview: a 3-pixel lattice of the view, shown upsampled; right away from class boundaries
    preview = stages[0]
    assert preview.step == 3 and not preview.classes[:10].any() and preview.classes[view].all()
    far = np.zeros_like(truth, bool)
    for c in (1, 3, 4):
        far |= ndimage.binary_erosion(truth == c, iterations=2 * preview.step + 4)
    inside = far[view]
    assert np.mean(preview.classes[view][inside] == classes[view][inside]) > 0.95
    # a given model (e.g. loaded from a file) predicts without refitting, to the same result
    again = [s for s in live.run(classifier=clf) if isinstance(s, act.Stage)]
    assert [s.name for s in again] == ["preview", "all"] and live.classifier is clf
    assert np.array_equal(again[-1].classes, classes)


def test_a_new_edit_cancels_the_stale_prediction():
    maps, live, strokes, truth = live_scene()
    view = (slice(0, 64), slice(0, 64))
    first = live.run(strokes, view=view, step=2)
    item = next(first)
    while not isinstance(item, act.Stage):
        item = next(first)
    assert item.name == "preview"
    live.edit()  # the user painted again: the running prediction is stale
    rest = list(first)
    assert not any(isinstance(s, act.Stage) for s in rest)  # it shows nothing more …
    assert live.classifier is None  # … and did not even fit its final model
    edited = strokes.copy()
    edited[120:124, 20:140] = 3  # a wrong stroke: electrolyte painted across the void
    stages = [s for s in live.run(edited, view=view, step=2) if isinstance(s, act.Stage)]
    assert [s.name for s in stages] == ["preview", "view", "all"]
    assert np.array_equal(stages[-1].classes, library_prediction(live.classifier, maps)[0])
    assert np.mean(stages[-1].classes[120:124, 20:140] == 3) > 0.9  # the new stroke is what it learnt
    # stale in the middle of the whole-image stage: stops between chunks
    run = live.run(strokes, view=view, step=2)
    names = []
    for item in run:
        if isinstance(item, act.Stage):
            names.append(item.name)
            if item.name == "view":
                live.edit()
    assert names == ["preview", "view"]


def test_preview_lattice_matches_the_screen():
    assert act.preview_step((2048, 2048), 2048 / 900) == 4  # the budget (2^18 points) rules here
    assert act.preview_step((2048, 2048), 2048 / 900, max_points=2**21) == 2  # the screen: ~1 point / screen px
    assert act.preview_step((300, 400), 0.5) == 1  # zoomed in: every pixel
    rows, cols = act._lattice((slice(10, 21), slice(0, 4)), 4)
    assert rows.tolist() == [12, 16, 20] and cols.tolist() == [2]


def test_viewer_lamella_is_checked_like_ceimap_run():
    """The viewer's lamella passes segment.lamella.check_lamella (as `ceimap run` does) before any map is made."""
    matrix = similarity_matrix(STXM_PX / SEM_PX, 0.0, (1.5, 1.5))
    sem = as_layer(sem_layer(SemImage(np.zeros((160, 160), np.float32), SEM_PX, "user", "sem.tif")))
    stack, _ = od_scene(n_energy=4)                       # 4 energies within the Ni L3 window: the fit needs 8
    with pytest.raises(act.LayerError, match="needs at least 8 energies within 845–856 eV"):
        act.pipeline_result(sem, [as_layer(stack_layer(stack, matrix=matrix, sem_pixel_nm=SEM_PX))])
    stack, _ = od_scene()
    tiny = as_layer(sem_layer(SemImage(np.zeros((160, 160), np.float32), 0.01, "user", "sem.tif")))
    with pytest.raises(act.LayerError, match="differ 1000-fold in size"):
        act.pipeline_result(tiny, [as_layer(stack_layer(stack, matrix=matrix, sem_pixel_nm=0.01))])
    # the control: the same layers with a sound stack reach the segmentation (given classes: no segment run)
    classes = np.ones((160, 160), np.uint8)
    result = act.pipeline_result(sem, [as_layer(stack_layer(stack, matrix=matrix, sem_pixel_nm=SEM_PX))],
                                 classes=classes)
    assert result.classes.shape == (160, 160)
