"""Large-image path: tiled prediction equals the whole-image prediction; chunked TIFFs read back identical."""

import numpy as np
import pytest
import tifffile

from ceimap.segment.classifier import PixelClassifier, lamella_samples
from ceimap.segment.tiles import classify_tiled, is_large, write_tiled_tiff
from test_classifier import FAST, SPEC, make_lamella  # the classifier tests' small synthetic lamella


@pytest.fixture(scope="module")
def scene():
    sem, ods, regs, eg, se, truth, ann = make_lamella(0)
    samples = lamella_samples("a", sem, ods, regs, ann, SPEC, egt2g=eg, s_edge=se)
    return PixelClassifier(SPEC, [samples], seed=3, params=FAST), sem, ods, regs, eg, se


@pytest.mark.parametrize("tile_px", [48, 64])   # 120 px: uneven edge tiles (48) and a TIFF-tile multiple (64)
def test_tiled_prediction_equals_whole_image(scene, tile_px, tmp_path):
    clf, sem, ods, regs, eg, se = scene
    classes, probs, entropy = clf.predict(sem, ods, regs, egt2g=eg, s_edge=se, tile_px=tile_px)
    out = classify_tiled(clf, sem.image, sem.pixel_size_nm, ods, regs, egt2g=eg, s_edge=se, tile_px=tile_px,
                         probabilities_path=tmp_path / "p.tif")
    np.testing.assert_array_equal(out.classes, classes)
    np.testing.assert_allclose(out.entropy, entropy, rtol=0, atol=1e-6)
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.pages[0].is_tiled
        streamed = tif.asarray()
    assert streamed.shape == sem.image.shape + (4,) and streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, np.moveaxis(probs[1:], 0, -1), rtol=0, atol=1e-6)
    assert out.n_tiles == (-(-120 // tile_px)) ** 2


@pytest.mark.parametrize("n_channels,dtype", [(1, np.uint8), (1, np.float32), (3, np.uint32)])
def test_tiled_tiff_from_uneven_bands_reads_back_identical(tmp_path, n_channels, dtype):
    rng = np.random.default_rng(1)
    shape = (75, 53)
    full = (rng.random(shape + (n_channels,)) * 250).astype(dtype)
    cuts = [0, 7, 30, 31, 75]                       # bands of 7, 23, 1 and 44 rows
    bands = ((a, b, full[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
    write_tiled_tiff(tmp_path / "x.tif", bands, shape, n_channels=n_channels, dtype=dtype, tile_px=16)
    back = tifffile.imread(tmp_path / "x.tif")
    np.testing.assert_array_equal(back, full[..., 0] if n_channels == 1 else full)
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 16


def test_large_threshold():
    assert not is_large((4096, 4096)) and is_large((4097, 4096)) and is_large((8192, 8192))


def test_pipeline_classifies_a_large_sem_tile_by_tile(scene, monkeypatch):
    from ceimap.segment import tiles
    from ceimap.segment.pipeline import classify_with_model

    clf, sem, ods, regs, eg, se = scene
    whole = classify_with_model(clf, ods, regs, sem, egt2g=eg, s_edge=se)
    monkeypatch.setattr(tiles, "LARGE_SEM_PIXELS", 50 * 50)     # the 120² scene counts as large
    tiled = classify_with_model(clf, ods, regs, sem, egt2g=eg, s_edge=se)   # 1024² tiles: one tile, as whole
    np.testing.assert_array_equal(tiled.classes, whole.classes)
    np.testing.assert_allclose(tiled.details["entropy"], whole.details["entropy"], rtol=0, atol=1e-6)
    assert tiled.probabilities is None and whole.probabilities is not None
    assert tiled.details["tiled"]["probabilities_kept"] is False
