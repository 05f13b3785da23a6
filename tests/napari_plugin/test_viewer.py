"""The plugin inside a real napari viewer: discovery through the installed manifest, open, write.

Runs headless under pytest-xvfb (see /work/shared/NAPARI_CI.md); skipped without Qt or a display.
"""

import os

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = pytest.mark.viewer


@pytest.fixture
def viewer(request):
    # decide before Qt starts: without a display QApplication aborts the whole process
    if not os.environ.get("DISPLAY"):  # (QT_QPA_PLATFORM=offscreen gives vispy no OpenGL context)
        pytest.skip("no display (run under pytest-xvfb or xvfb-run)")
    return request.getfixturevalue("make_napari_viewer")()


def test_viewer_opens_run_folder_with_ceimap_and_saves_labels(viewer, tmp_path):
    import json

    import tifffile

    from ceimap.segment.io import read_annotations

    run = tmp_path / "run"
    run.mkdir()
    classes = np.zeros((20, 30), np.uint8)
    classes[2:10, 2:10] = 1
    classes[10:, :] = 3
    tifffile.imwrite(run / "classes.tif", classes)
    tifffile.imwrite(run / "particles.tif", (classes == 1).astype(np.uint32))
    (run / "summary.json").write_text(json.dumps({"sem_pixel_nm": 5.0}))
    layers = viewer.open(str(run), plugin="ceimap")
    assert [la.name for la in layers] == ["classes", "particles"]
    assert tuple(viewer.layers["classes"].scale) == (5.0, 5.0)
    assert np.array_equal(viewer.layers["classes"].data, classes)
    out = tmp_path / "classes_out.tif"
    written = viewer.layers["classes"].save(str(out), plugin="ceimap")
    assert written == [str(out)]
    assert np.array_equal(read_annotations(out, classes.shape), classes)
