"""Chunked outputs: large maps are written as tiled TIFFs that read back identical."""

import numpy as np
import tifffile

import ceimap.stats.outputs as outputs


def test_large_maps_are_tiled_and_read_back_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "TILED_TIFF_PIXELS", 100 * 100)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 5, (130, 700), dtype=np.uint8)            # planes above the threshold: tiled
    stack = rng.random((4, 120, 130)).astype(np.float32)
    small = rng.integers(0, 2**31, (40, 50), dtype=np.uint32)       # below it: one strip image, as before
    for name, a in (("big", big), ("stack", stack), ("small", small)):
        outputs.write_tiff(tmp_path / f"{name}.tif", a)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{name}.tif"), a)
    with tifffile.TiffFile(tmp_path / "big.tif") as t:
        assert t.pages[0].is_tiled
    with tifffile.TiffFile(tmp_path / "stack.tif") as t:
        assert len(t.pages) == 4 and all(p.is_tiled for p in t.pages)
    with tifffile.TiffFile(tmp_path / "small.tif") as t:
        assert not t.pages[0].is_tiled
