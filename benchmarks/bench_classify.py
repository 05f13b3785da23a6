"""Pixel classifier: time and peak memory against image size, and against scikit-image's recipe (issues 6–8).

The classifier is trained on the 4.25 V example's annotation strokes (``segment.classifier``, random forest,
features of ``segment.features``). It then classifies SEM images of 1k², 2k², 4k² and 8k² pixels made by
mirror-tiling the example's SEM (the STXM maps stay where they are: outside their field the spectral features
say "no STXM"). Baseline: scikit-image's documented recipe (``skimage.feature.multiscale_basic_features`` +
a 50-tree random forest, the ``TrainableSegmenter`` set-up) trained on the same strokes, SEM only, on the
whole image at once — run only where its float64 feature stack fits in 6 GB (else the row gives the estimate).
Also the napari classify widget's "region on screen first": a 2048² view of the largest image
(``PixelClassifier.predict(mask=...)``).

Peak memory is what tracemalloc sees (NumPy and Python allocations), above the start of each call.
"""

from __future__ import annotations

import numpy as np

from _common import load_example, log, peak_memory, preprocessed, registration, row, timed

BENCH = "classify"
BASELINE = "skimage multiscale_basic_features + RF(50)"
MAX_BASELINE_GB = 6.0


def _trained():
    from segment.classifier import PixelClassifier, default_spec, lamella_samples
    from segment.io import read_annotations
    from segment.spectra import egt2g_map, s_edge_map

    lam, _ = load_example("cycled_4p25v")
    od = {e: preprocessed("cycled_4p25v", e)["od"] for e in lam.stacks}
    regs = {e: registration("cycled_4p25v", e)["registration"] for e in lam.stacks}
    maps = {"egt2g": egt2g_map(od["Ni-L"]), "s_edge": s_edge_map(od["S-L"])}
    ann = read_annotations(lam.annotations_path, lam.sem.image.shape)
    spec = default_spec(od)
    clf = PixelClassifier(spec, [lamella_samples(lam.name, lam.sem, od, regs, ann, spec, **maps)])
    return lam, od, regs, maps, ann, clf


def _mirror_tile(image: np.ndarray, n: int) -> np.ndarray:
    reps = (int(np.ceil(n / image.shape[0])), int(np.ceil(n / image.shape[1])))
    rows = [np.concatenate([image if (i + j) % 2 == 0 else image[:, ::-1] for j in range(reps[1])], axis=1)
            for i in range(reps[0])]
    big = np.concatenate([r if i % 2 == 0 else r[::-1] for i, r in enumerate(rows)], axis=0)
    return np.ascontiguousarray(big[:n, :n], dtype=np.float32)


def _skimage_recipe(sem_image, ann, big):
    from sklearn.ensemble import RandomForestClassifier
    from skimage.feature import multiscale_basic_features

    def feats(img):
        lo, hi = np.percentile(img, [1, 99])
        return multiscale_basic_features((img - lo) / (hi - lo), sigma_min=1, sigma_max=16)

    f = feats(sem_image)
    m = ann > 0
    rf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=0)
    rf.fit(f[m], ann[m])
    fb = feats(big)
    return rf.predict(fb.reshape(-1, fb.shape[-1])).reshape(big.shape)


def run(quick: bool = False) -> list[dict]:
    from segment.lamella import SemImage

    sizes = (1024, 2048) if quick else (1024, 2048, 4096, 8192)
    log("classify: training on the 4.25 V strokes")
    lam, od, regs, maps, ann, clf = _trained()
    rows = []
    n_features = len(clf.spec.names)
    for n in sizes:
        big = SemImage(_mirror_tile(lam.sem.image, n), lam.sem.pixel_size_nm)
        with peak_memory() as mem, timed() as t:
            clf.predict(big, od, regs, **maps)
        mpx = n * n / 1e6
        log(f"  {n}²: ceimap {t['s']:.1f} s ({t['s'] / mpx:.2f} s/Mpx), peak {mem['python_mb']:.0f} MB")
        base_s = base_mb = None
        est_gb = n * n * 8 * 8 * 15 / 2**30  # float64 × ~15 features per sigma level × 5 levels (upper bound)
        if est_gb <= MAX_BASELINE_GB:
            with peak_memory() as bmem, timed() as bt:
                _skimage_recipe(lam.sem.image, ann, big.image)
            base_s, base_mb = bt["s"], bmem["python_mb"]
            log(f"  {n}²: skimage {base_s:.1f} s, peak {base_mb:.0f} MB")
        else:
            log(f"  {n}²: skimage recipe skipped (its feature stack would need ~{est_gb:.0f} GB)")
        rows += [row(BENCH, f"{n}² SEM ({n_features} features)", "time", "s", t["s"], BASELINE, base_s),
                 row(BENCH, f"{n}² SEM", "time per Mpx", "s/Mpx", t["s"] / mpx, BASELINE,
                     None if base_s is None else base_s / mpx),
                 row(BENCH, f"{n}² SEM", "peak memory", "MB", mem["python_mb"], BASELINE, base_mb)]
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
