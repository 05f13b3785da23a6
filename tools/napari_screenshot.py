"""Screenshot of the ceimap napari plugin on the 4.7 V example, for the README.

    xvfb-run -a -s "-screen 0 1600x1000x24" python3 tools/napari_screenshot.py docs/napari_plugin.png

Opens the example lamella (File ▸ Open Sample ▸ ceimap), runs the preprocess widget on both stacks, the segment
widget and the measure widget exactly as a user would (each in its worker thread), clicks a pixel for its spectra,
and saves a screenshot of the whole window. Takes a few minutes (frame alignment of two stacks). Needs a display
(Xvfb is enough) with OpenGL (Mesa).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _wait(app, widget, timeout_s: float = 1200.0) -> None:
    t0 = time.time()
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"{widget.title} did not finish in {timeout_s:.0f} s")
    if widget.status.value != "done":
        raise RuntimeError(f"{widget.title}: {widget.status.value}")


def main(argv=None) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from ceimap.napari_plugin._widgets import MeasureWidget, PreprocessWidget, SegmentWidget

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/napari_plugin.png")
    viewer = napari.Viewer(show=True, title="ceimap — 100 cycles to 4.7 V")
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    viewer.open_sample("ceimap", "cycled_4p7v")
    pre = PreprocessWidget(viewer)
    viewer.window.add_dock_widget(pre, name="ceimap: preprocess", area="right")
    for edge in ("Ni-L", "S-L"):
        pre.stack.value = next(la for la in viewer.layers if la.metadata.get("edge") == edge and "OD" in la.name)
        pre.start()
        _wait(app, pre)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="ceimap: segment", area="right", tabify=True)
    seg.start()
    _wait(app, seg)
    meas = MeasureWidget(viewer)
    viewer.window.add_dock_widget(meas, name="ceimap: measure", area="right", tabify=True)
    meas.classes.value = viewer.layers["classes"]
    meas.start()
    _wait(app, meas)
    for layer in viewer.layers:  # SEM with the class map on top
        layer.visible = layer.name.endswith("SEM") or layer.name == "classes"
    viewer.layers["classes"].opacity = 0.45
    viewer.layers.selection.active = viewer.layers["classes"]
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(out)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
