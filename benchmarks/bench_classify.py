"""Pixel classifier: time and peak memory against image size, and against scikit-image's recipe (issues 6–8).

End to end on each side, in one run (both suffer the same load): train on the 4.25 V example's annotation
strokes (features of the annotated pixels + fit), then classify SEM images of 1k², 2k², 4k² pixels made by
mirror-tiling the example's SEM (the STXM maps stay where they are: outside their field the spectral features
say "no STXM"). ceimap: ``segment.classifier`` (two-stage random forest, features of ``segment.features``,
tiles, coarse prediction lattice). Baseline: scikit-image's documented recipe
(``skimage.feature.multiscale_basic_features`` + a 50-tree random forest, the ``TrainableSegmenter`` set-up)
on the same strokes, SEM only, whole image at once. The STXM-side inputs ceimap also needs (alignment,
registration, e_g/t_2g and S-edge fits) are computed once per lamella before timing, whatever the SEM size.
Also macro F1 of both within the 4.25 V lamella (ceimap's also after the SEM boundary refinement that ``ceimap
run --model`` applies, and that step's time on the lamella), and ``python3 bench_classify.py --sizes 4096`` runs
one size.
Also the napari classify widget's "region on screen first": a 2048² view of the largest image
(``PixelClassifier.predict(mask=...)``).

Peak memory is what tracemalloc sees (NumPy and Python allocations), above the start of each call. The CPU time
(process time, all threads) is given too: on this shared machine the wall-time ratio moves with the other jobs.
"""

from __future__ import annotations

import time

import numpy as np

from _common import load_example, log, peak_memory, preprocessed, registration, row, timed

BENCH = "classify"
BASELINE = "skimage multiscale_basic_features + RF(50)"


def _inputs():
    from ceimap.segment.io import read_annotations
    from ceimap.segment.spectra import egt2g_map, s_edge_map

    lam, _ = load_example("cycled_4p25v")
    od = {e: preprocessed("cycled_4p25v", e)["od"] for e in lam.stacks}
    regs = {e: registration("cycled_4p25v", e)["registration"] for e in lam.stacks}
    maps = {"egt2g": egt2g_map(od["Ni-L"]), "s_edge": s_edge_map(od["S-L"])}
    ann = read_annotations(lam.annotations_path, lam.sem.image.shape)
    return lam, od, regs, maps, ann


def _train(lam, od, regs, maps, ann):
    from ceimap.segment.classifier import PixelClassifier, default_spec, lamella_samples

    spec = default_spec(od)
    return PixelClassifier(spec, [lamella_samples(lam.name, lam.sem, od, regs, ann, spec, **maps)])


def _mirror_tile(image: np.ndarray, n: int) -> np.ndarray:
    reps = (int(np.ceil(n / image.shape[0])), int(np.ceil(n / image.shape[1])))
    rows = [np.concatenate([image if (i + j) % 2 == 0 else image[:, ::-1] for j in range(reps[1])], axis=1)
            for i in range(reps[0])]
    big = np.concatenate([r if i % 2 == 0 else r[::-1] for i, r in enumerate(rows)], axis=0)
    return np.ascontiguousarray(big[:n, :n], dtype=np.float32)


def _skimage_features(img):
    from skimage.feature import multiscale_basic_features

    lo, hi = np.percentile(img, [1, 99])
    return multiscale_basic_features((img - lo) / (hi - lo), sigma_min=1, sigma_max=16)


def _skimage_train(sem_image, ann):
    from sklearn.ensemble import RandomForestClassifier

    f = _skimage_features(sem_image)
    m = ann > 0
    rf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=0)
    return rf.fit(f[m], ann[m])


def _skimage_predict(rf, image):
    fb = _skimage_features(image)
    return rf.predict(fb.reshape(-1, fb.shape[-1])).reshape(image.shape)


def _f1_rows(lam, od, regs, maps, ann, clf) -> list[dict]:
    """Macro F1 of both on the 4.25 V lamella itself (truth of the generator), the trained-on image: the
    classifier's map (what is timed below), after the SEM boundary refinement ``ceimap run --model`` applies
    (:func:`ceimap.segment.classifier.refine_boundaries`, timed here on the lamella) and after the interphase is re-drawn
    from the chemistry (:func:`ceimap.segment.classifier.place_interphase`, timed likewise): the steps of
    :func:`ceimap.segment.pipeline.classify_with_model`."""
    from ceimap.segment.outside import split_empty
    from ceimap.segment.classifier import macro_f1, place_interphase, refine_boundaries

    _, truth = load_example("cycled_4p25v")
    classes, _, _ = clf.predict(lam.sem, od, regs, **maps)
    stxm_px = max(float(o.pixel_size_nm) for o in od.values())
    with timed() as t_refine:
        refined = refine_boundaries(classes, lam.sem.image, lam.sem.pixel_size_nm, stxm_px)
    with timed() as t_place:
        placed, _ = place_interphase(refined, od, regs, float(lam.sem.pixel_size_nm))
    for c in (classes, refined, placed):
        c[split_empty(c == 4, lam.sem.pixel_size_nm)] = 0
    ours, ours_refined, ours_placed = (macro_f1(c, truth["classes"])[0] for c in (classes, refined, placed))
    base = _skimage_predict(_skimage_train(lam.sem.image, ann), lam.sem.image)
    theirs = macro_f1(base, truth["classes"])[0]
    log(f"  macro F1 within the 4.25 V lamella: ceimap {ours:.3f} (refined {ours_refined:.3f}, "
        f"{t_refine['s']:.1f} s; interphase placed {ours_placed:.3f}, {t_place['s']:.1f} s), skimage {theirs:.3f}")
    n = lam.sem.image.size
    return [row(BENCH, "4.25 V lamella, trained on its strokes", "macro F1", "", ours, BASELINE, theirs,
                better="higher"),
            row(BENCH, "4.25 V lamella, + boundary refinement", "macro F1", "", ours_refined, BASELINE,
                theirs, better="higher"),
            row(BENCH, "4.25 V lamella, + interphase from the chemistry (run --model)", "macro F1", "", ours_placed,
                BASELINE, theirs, better="higher"),
            row(BENCH, f"boundary refinement, {n / 1e6:.2f} Mpx lamella", "time", "s", t_refine["s"],
                "none in the baseline", None),
            row(BENCH, f"interphase placement (chemistry + band fit), {n / 1e6:.2f} Mpx lamella", "time", "s",
                t_place["s"], "none in the baseline", None)]


def run(quick: bool = False, sizes=None) -> list[dict]:
    from ceimap.segment.lamella import SemImage

    sizes = sizes or ((1024, 2048) if quick else (1024, 2048, 4096))
    log("classify: inputs of the 4.25 V example (alignment, registration, spectral fits: not timed)")
    lam, od, regs, maps, ann = _inputs()
    clf = _train(lam, od, regs, maps, ann)
    rows = _f1_rows(lam, od, regs, maps, ann, clf)
    n_features = len(clf.spec.names)
    for n in sizes:
        big = SemImage(_mirror_tile(lam.sem.image, n), lam.sem.pixel_size_nm)
        # end to end, each side: features of the strokes + fit, then features + prediction of the n² image
        cpu = time.process_time()
        with peak_memory() as mem, timed() as t:
            with timed() as t_train:
                clf = _train(lam, od, regs, maps, ann)
            with timed() as t_pred:
                clf.predict(big, od, regs, **maps)
        cpu = time.process_time() - cpu
        log(f"  {n}²: ceimap train {t_train['s']:.1f} s + predict {t_pred['s']:.1f} s = {t['s']:.1f} s, "
            f"peak {mem['python_mb']:.0f} MB")
        bcpu = time.process_time()
        with peak_memory() as bmem, timed() as bt:
            with timed() as bt_train:
                rf = _skimage_train(lam.sem.image, ann)
            with timed() as bt_pred:
                _skimage_predict(rf, big.image)
        bcpu = time.process_time() - bcpu
        log(f"  {n}²: skimage train {bt_train['s']:.1f} s + predict {bt_pred['s']:.1f} s = {bt['s']:.1f} s, "
            f"peak {bmem['python_mb']:.0f} MB; ratio {bt['s'] / t['s']:.2f}× faster (CPU {bcpu / cpu:.2f}×), "
            f"{bmem['python_mb'] / mem['python_mb']:.2f}× less memory")
        rows += [row(BENCH, f"{n}² SEM, train ({n_features} features)", "time", "s", t_train["s"], BASELINE,
                     bt_train["s"]),
                 row(BENCH, f"{n}² SEM, predict", "time", "s", t_pred["s"], BASELINE, bt_pred["s"]),
                 row(BENCH, f"{n}² SEM, train + predict", "time", "s", t["s"], BASELINE, bt["s"]),
                 row(BENCH, f"{n}² SEM, train + predict", "CPU time (all threads)", "s", cpu, BASELINE, bcpu),
                 row(BENCH, f"{n}² SEM, train + predict", "peak memory", "MB", mem["python_mb"], BASELINE,
                     bmem["python_mb"])]
    n = sizes[-1]
    big = SemImage(_mirror_tile(lam.sem.image, n), lam.sem.pixel_size_nm)
    view = min(2048, n)
    mask = np.zeros((n, n), bool)
    y0 = (n - view) // 2
    mask[y0:y0 + view, y0:y0 + view] = True
    with timed() as t:
        clf.predict(big, od, regs, mask=mask, tile_px=view, **maps)
    log(f"  {view}² view of the {n}² image: {t['s']:.1f} s")
    rows.append(row(BENCH, f"re-predict a {view}² view of a {n}² image", "time", "s", t["s"],
                    "target (issue 7): about 1 s", 1.0))
    return rows


if __name__ == "__main__":
    import argparse

    from _common import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k² and 2k² only")
    parser.add_argument("--sizes", type=int, nargs="+", help="SEM sizes to run (e.g. 4096)")
    args = parser.parse_args()
    print(format_table(run(args.quick, args.sizes)))
