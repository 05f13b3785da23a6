"""Time and peak memory of the large-image classification against SEM size (issue 8).

Case: the trained pixel classifier (random forest, default parameters, trained on the annotations of the
``cycled_4p25v`` example) classifies an SEM of N² pixels tile by tile (:func:`ceimap.segment.tiles.classify_tiled`,
1024² feature tiles), streams the class probabilities into a tiled TIFF and writes ``classes.tif`` and the
entropy map (:func:`ceimap.stats.outputs.write_tiff`, tiled above 4096²). The N² SEM is the example's SEM (798×812,
9.05 nm pixels) mirrored to N×N (``numpy.pad(mode="symmetric")``); the example's STXM field and registration
stay as they are, so the spectral features cover its ~7 µm field and are absent elsewhere (as on a mosaic
larger than the STXM field). Every size runs in a fresh process, so each peak resident memory (``ru_maxrss``)
is its own; "increase" is that peak minus the resident memory just before classification (inputs loaded).

Rows: time and peak memory per size; their ratio to a linear extrapolation from the smallest size (1 = linear
growth). The issue's target: 8192² within 6 GB of peak memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import load_example, log, row, timed

BENCH = "scale"
TRAIN_EXAMPLE = "cycled_4p25v"
SIZES = (1024, 2048, 4096, 8192)
QUICK_SIZES = (1024, 2048)


def _prepare(folder: Path) -> None:
    """Train the classifier and save what the size runs need: model file, OD stacks, registration matrices."""
    from ceimap.segment.classifier import PixelClassifier, default_spec, lamella_samples
    from ceimap.segment.io import read_annotations
    from ceimap.segment.pipeline import preprocess_lamella

    lam, _ = load_example(TRAIN_EXAMPLE)
    labels = read_annotations(lam.annotations_path, lam.sem.image.shape)
    log(f"scale: preprocessing {TRAIN_EXAMPLE} and training the pixel classifier on its annotations")
    od_stacks, _, _, registrations, egt2g, s_edge = preprocess_lamella(lam)
    spec = default_spec(od_stacks)     # as segment.pipeline.train_classifier, without preprocessing twice
    samples = lamella_samples(lam.name, lam.sem, od_stacks, registrations, labels, spec, egt2g=egt2g, s_edge=s_edge)
    PixelClassifier(spec, [samples]).save(folder / "model.ceimap")
    arrays = {}
    meta = {}
    for edge, od in od_stacks.items():
        arrays[f"{edge}/data"] = od.data
        arrays[f"{edge}/energies_ev"] = od.energies_ev
        valid = od.metadata.get("valid_region")
        if valid is not None:
            arrays[f"{edge}/valid_region"] = np.asarray(valid, bool)
        meta[edge] = {"pixel_size_nm": od.pixel_size_nm, "matrix": np.asarray(registrations[edge].matrix).tolist()}
    np.savez(folder / "stacks.npz", **arrays)
    (folder / "meta.json").write_text(json.dumps(meta))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(folder: str, size: int) -> dict:
    """One size in this process (called in a fresh interpreter by :func:`run`)."""
    import resource

    from threadpoolctl import threadpool_limits

    from ceimap.segment.classifier import PixelClassifier
    from ceimap.segment.register import Registration
    from ceimap.segment.stack import Stack
    from ceimap.segment.tiles import classify_tiled
    from ceimap.stats.outputs import write_tiff

    folder = Path(folder)
    lam, _ = load_example(TRAIN_EXAMPLE)
    clf = PixelClassifier.load(folder / "model.ceimap")
    meta = json.loads((folder / "meta.json").read_text())
    od_stacks, regs = {}, {}
    with np.load(folder / "stacks.npz") as z:
        for edge, m in meta.items():
            md = {"valid_region": z[f"{edge}/valid_region"]} if f"{edge}/valid_region" in z else {}
            od_stacks[edge] = Stack(z[f"{edge}/data"], z[f"{edge}/energies_ev"], m["pixel_size_nm"], kind="od",
                                    edge=edge, metadata=md)
            regs[edge] = Registration(np.asarray(m["matrix"], float))
    ny, nx = lam.sem.image.shape
    sem = np.pad(lam.sem.image, ((0, max(0, size - ny)), (0, max(0, size - nx))), mode="symmetric")[:size, :size]
    sem = np.ascontiguousarray(sem, dtype=np.float32)
    before = _rss_mb()
    out = Path(tempfile.mkdtemp(prefix=f"scale{size}-", dir=folder))
    with threadpool_limits(1, user_api="blas"), timed() as t:
        c0 = time.process_time()
        pred = classify_tiled(clf, sem, lam.sem.pixel_size_nm, od_stacks, regs,
                              probabilities_path=out / "probabilities.tif")
        write_tiff(out / "classes.tif", pred.classes)
        write_tiff(out / "entropy.tif", pred.entropy)
        cpu = time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    return {"size": size, "seconds": t["s"], "cpu_s": cpu, "peak_rss_mb": peak, "rss_before_mb": before,
            "increase_mb": peak - before, "tiles": pred.n_tiles, "file_bytes": sizes,
            "load_avg": os.getloadavg()[0]}


def run(quick: bool = False) -> list[dict]:
    sizes = QUICK_SIZES if quick else SIZES
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="ceimap-scale-") as tmp:
        folder = Path(tmp)
        _prepare(folder)
        for size in sizes:
            code = ("import json, sys; sys.path.insert(0, %r); import bench_scale; "
                    "print(json.dumps(bench_scale.measure(%r, %d)))" % (str(Path(__file__).parent), tmp, size))
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"scale {size}²: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            log(f"scale {size}²: {r['seconds']:.1f} s wall ({r['cpu_s']:.1f} s CPU), peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(+{r['increase_mb']:.0f} MB over the loaded inputs), load average {r['load_avg']:.1f}")
    if not results:
        return rows
    ref = results[0]
    n0 = ref["size"] ** 2
    for r in results:
        k = r["size"] ** 2 / n0
        case = f"SEM {r['size']}² (load {r['load_avg']:.1f})"
        base = f"{ref['size']}² × {k:g} (linear)"
        rows.append(row(BENCH, case, "time", "s", r["seconds"], base, ref["seconds"] * k))
        rows.append(row(BENCH, case, "CPU time", "s", r["cpu_s"], base, ref["cpu_s"] * k))
        rows.append(row(BENCH, case, "peak memory increase", "MB", r["increase_mb"], base, ref["increase_mb"] * k))
        rows.append(row(BENCH, case, "peak RSS", "MB", r["peak_rss_mb"], "issue 8 target (8192²)", 6144.0))
    return rows


if __name__ == "__main__":
    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
