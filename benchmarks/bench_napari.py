"""napari classify widget: from an annotation edit to the prediction on screen, on a 2048² SEM view (issue 7).

The 4.25 V example is upsampled (bilinear SEM, nearest-neighbour annotations, registration matrices scaled,
pixel size divided by the same factor) and cropped to 2048 × 2048 SEM pixels, all of it on screen in a canvas
900 screen pixels tall. The user has trained on the example's strokes but one; the *edit* paints that stroke
back. Measured, within one run (same load on both sides):

- **live** (``napari_plugin._actions.LivePredictor``, what the widget runs in its worker): the one-off feature
  cache (time, MB), then from the edit to the first displayed prediction (a small model on a lattice of the
  view, shown upsampled) and to the full-resolution view (the final model, every pixel);
- **previous behaviour** (the widget before the cache: ``act.train`` recomputing the annotated tiles' features,
  then ``act.predict`` of the whole view) — both the first display and the full view came after all of it;
- the agreement (fraction of equal pixels) of the first preview with the final prediction, and of the final
  prediction with the previous behaviour's (1 = identical).

Wall times depend on the load of the machine; the CPU times (all threads of the process) less so.
Debounce (the widget waits for the user to stop painting) and the viewer's redraw are not included.
"""

from __future__ import annotations

import time

import numpy as np

from _common import load_example, log, peak_memory, preprocessed, registration, row, timed

BENCH = "napari"
BASELINE = "full re-prediction (previous widget)"
CANVAS_PX = 900


def _upsampled_lamella(n: int):
    """``(maps, annotations_without_one_stroke, annotations)`` of the 4.25 V example upsampled to an n² SEM."""
    from scipy import ndimage

    from ceimap.segment.io import read_annotations
    from ceimap.segment.lamella import SemImage
    from ceimap.segment.register import Registration
    from ceimap.segment.spectra import egt2g_map, s_edge_map

    lam, _ = load_example("cycled_4p25v")
    od = {e: preprocessed("cycled_4p25v", e)["od"] for e in lam.stacks}
    regs = {e: registration("cycled_4p25v", e)["registration"] for e in lam.stacks}
    z = n / min(lam.sem.image.shape)
    sem = ndimage.zoom(lam.sem.image.astype(np.float32), z, order=1)[:n, :n]
    ann = read_annotations(lam.annotations_path, lam.sem.image.shape)
    ann = ndimage.zoom(ann, z, order=0)[:n, :n]
    scale = np.diag([z, z, 1.0])
    maps = {"sem": SemImage(np.ascontiguousarray(sem), lam.sem.pixel_size_nm / z),
            "od_stacks": od,
            "registrations": {e: Registration(matrix=scale @ np.asarray(r.matrix, float), quality=r.quality,
                                              method=r.method) for e, r in regs.items()},
            "egt2g": egt2g_map(od["Ni-L"]), "s_edge": s_edge_map(od["S-L"])}
    # the edit: one stroke (the largest connected stroke of the electrolyte class) painted back
    strokes, n_strokes = ndimage.label(ann == 3)
    biggest = 1 + int(np.argmax(np.bincount(strokes.ravel())[1:])) if n_strokes else 0
    before = np.where(strokes == biggest, 0, ann).astype(np.uint8)
    return maps, before, ann


def run(quick: bool = False) -> list[dict]:
    from ceimap.napari_plugin import _actions as act

    n = 1024 if quick else 2048
    log(f"napari: upsampling the 4.25 V example to a {n}² SEM")
    maps, before, after = _upsampled_lamella(n)
    log(f"  {int((after > 0).sum())} annotated pixels; the edit adds {int((after != before).sum())}")
    live = act.LivePredictor(maps)
    cache = live.cache
    with peak_memory() as mem, timed() as t_cache:
        cache.ensure(cache.tiles_of())
    cache_mb = cache.nbytes / 2**20
    log(f"  feature cache: {t_cache['s']:.1f} s, {cache_mb:.0f} MB ({cache.n_features} features, float32), "
        f"peak {mem['python_mb']:.0f} MB")
    for _ in live.run(before, data_px_per_screen_px=n / CANVAS_PX):  # the model before the edit
        pass

    # the edit, live
    times, cpu, stages = {}, {}, {}
    t0, c0 = _now(), time.process_time()
    for item in live.run(after, data_px_per_screen_px=n / CANVAS_PX):
        if isinstance(item, act.Stage):
            times[item.name], cpu[item.name] = _now() - t0, time.process_time() - c0
            stages[item.name] = item
    first = stages["preview"]
    final = stages["all"]
    agreement = float(np.mean(first.classes == final.classes))
    log(f"  live: preview (lattice step {first.step}) after {times['preview']:.2f} s "
        f"(CPU {cpu['preview']:.2f} s), full view after {times['all']:.1f} s (CPU {cpu['all']:.1f} s); "
        f"preview agrees with the final prediction on {agreement:.1%} of the pixels")

    # the edit, previous behaviour
    c0 = time.process_time()
    with timed() as t_old:
        clf = act.train(maps, after)
        (old_classes, _, _), _ = act.predict(clf, maps)
    cpu_old = time.process_time() - c0
    same = float(np.mean(old_classes == final.classes))
    log(f"  previous: {t_old['s']:.1f} s (CPU {cpu_old:.1f} s); final live prediction equals it on "
        f"{same:.4%} of the pixels")

    case = f"{n}² view, edit of {int((after != before).sum())} px"
    return [
        row(BENCH, case, f"edit → first display (preview, lattice step {first.step})", "s", times["preview"],
            BASELINE, t_old["s"]),
        row(BENCH, case, "edit → full-resolution view", "s", times["all"], BASELINE, t_old["s"]),
        row(BENCH, case, "edit → first display, CPU time (all threads)", "s", cpu["preview"], BASELINE, cpu_old),
        row(BENCH, case, "feature cache build (one-off)", "s", t_cache["s"], BASELINE + ": none", None),
        row(BENCH, case, "feature cache memory", "MB", cache_mb, BASELINE + ": none", None),
        row(BENCH, case, "preview = final prediction", "fraction", agreement, "final prediction", 1.0,
            better="higher"),
        row(BENCH, case, "final = previous prediction", "fraction", same, BASELINE, 1.0, better="higher"),
    ]


def _now() -> float:
    return time.perf_counter()
