"""End to end: ``ceimap run`` per example lamella with a per-step profile, and ``ceimap batch`` vs serial (issue 8).

* **per lamella** — the ``ceimap run`` command on each example (wall time, the figure for the issue's target), and
  :func:`ceimap.stats.run.run_lamella` (what ``ceimap run`` calls) in this process, serially, with the wall and
  CPU time of each step (alignment and OD of each stack, registration of each stack, spectral maps,
  chemistry/classification, particles, statistics, report, writing). The steps are timed by wrapping the stage
  functions where ``segment.pipeline`` and ``stats.run`` call them; nothing else changes. Baseline: the issue's
  target of 30 s per lamella on a 2-core machine.
* **batch** — eight lamellae (the three examples repeated, each copy under its own name) by
  :func:`ceimap.stats.batch.run_batch` on a 2-worker LocalCluster, against the same batch on a 1-worker LocalCluster
  (the scaling from one worker to two: same tasks, same one thread per task; target ≥ 1.7×) and against the eight
  run one after the other in this process (:func:`ceimap.stats.batch.run_one`: ``run_lamella`` with its own threads,
  which already use part of the second core). Also the sum of the batch tasks' own durations over the batch's
  wall time (the speed-up at the load the batch itself met, since on a shared machine the phases, minutes apart,
  see different loads).
  ``--quick``: one lamella end to end, and the batch of eight on small synthetic lamellae (3 µm fields from
  :mod:`ceimap.segment.synthetic`, the 4.25 V and 4.7 V conditions alternating, seeds 11–18).
  ``--batch-only`` (script only): just the batch rows.

The load average (1 min) is printed with each measurement: on a shared machine, compare within one run.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import EXAMPLES, example_dir, examples, log, row, timed

BENCH = "end_to_end"
TARGET_S = 30.0
BATCH_TARGET = 1.7

_PIPELINE_STEPS = {
    "align_frames": "alignment", "optical_density": "I0 / OD", "contrast_image": "registration",
    "register_stxm_to_sem": "registration", "egt2g_map": "spectral maps", "s_edge_map": "spectral maps",
    "segment_lamella": "chemistry + classification", "classify_with_model": "chemistry + classification",
    "label_particles": "particles",
}
_RUN_STEPS = {"analyse_result": "statistics", "write_report": "report", "write_results": "writing (incl. report)"}


def profile_run(manifest: str | Path, out: str | Path) -> tuple[dict, float, float]:
    """Run one lamella as ``ceimap run`` does, timing each step.

    Returns
    -------
    steps : dict
        Step name → (wall s, CPU s), in the order first met; alignment and registration per edge.
    total_wall, total_cpu : float
        The whole run including reading the inputs.
    """
    import ceimap.segment.pipeline as pipeline
    import ceimap.stats.run as runmod
    from ceimap.segment.io import read_lamella

    steps: dict = {}
    edge_of = {"current": ""}
    saved = []

    def wrap(module, name, label):
        original = getattr(module, name)

        @functools.wraps(original)
        def timed_call(*args, **kwargs):
            if name == "align_frames":
                edge_of["current"] = getattr(args[0], "edge", "") or ""
            key = f"{label} {edge_of['current']}" if label in ("alignment", "I0 / OD", "registration") else label
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                w, c = steps.get(key, (0.0, 0.0))
                steps[key] = (w + time.perf_counter() - t0, c + time.process_time() - c0)

        saved.append((module, name, original))
        setattr(module, name, timed_call)

    for name, label in _PIPELINE_STEPS.items():
        wrap(pipeline, name, label)
    for name, label in _RUN_STEPS.items():
        wrap(runmod, name, label)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        lam = read_lamella(manifest)
        steps["reading inputs"] = (time.perf_counter() - t0, time.process_time() - c0)
        runmod.run_lamella(lam, out, overwrite=True)
        total = (time.perf_counter() - t0, time.process_time() - c0)
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)
    if "writing (incl. report)" in steps and "report" in steps:
        w, c = steps.pop("writing (incl. report)")
        rw, rc = steps["report"]
        steps["writing files"] = (w - rw, c - rc)
    return steps, total[0], total[1]


def command_wall(manifest: str | Path, out: str | Path) -> float:
    """Wall time of the ``ceimap run MANIFEST --out OUT`` command as a user types it: a fresh interpreter, its
    imports, the worker process it starts (edges in parallel, half of the report), reading and writing."""
    import subprocess
    import sys

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ceimap.stats.cli", "run", str(manifest), "--out", str(out), "--overwrite"],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def _copies(folder: Path, n: int) -> list[Path]:
    """``n`` manifests cycling over the examples, each a copy of the example's manifest under its own name
    (input files referenced by absolute path)."""
    from ceimap.segment.compat import tomllib

    manifests = []
    for i in range(n):
        name = EXAMPLES[i % len(EXAMPLES)]
        src = example_dir(name)
        with open(src / "lamella.toml", "rb") as f:
            doc = tomllib.load(f)
        lines = [f'name = "{name}_{i}"', f'sample = "{doc.get("sample", name)}"']
        if doc.get("annotations"):
            lines.append(f'annotations = "{(src / doc["annotations"]).as_posix()}"')
        lines += ["", "[sem]", f'path = "{(src / doc["sem"]["path"]).as_posix()}"',
                  f'pixel_size_nm = {doc["sem"]["pixel_size_nm"]}']
        for st in doc["stxm"]:
            lines += ["", "[[stxm]]", f'edge = "{st["edge"]}"', f'path = "{(src / st["path"]).as_posix()}"']
        d = folder / f"lamella_{i}"
        d.mkdir()
        (d / "lamella.toml").write_text("\n".join(lines) + "\n")
        manifests.append(d / "lamella.toml")
    return manifests


def _synthetic(folder: Path, n: int) -> list[Path]:
    """``n`` small synthetic lamellae (3 µm × 3 µm fields, four particles)."""
    from ceimap.segment.synthetic import make_lamella, make_spec, write_lamella

    manifests = []
    for i in range(n):
        spec = make_spec(("cycled_4p25v", "cycled_4p7v")[i % 2], 11 + i, field_width_nm=3000.0,
                         field_height_nm=3000.0, n_particles=4, particle_diameter_nm=(600.0, 1400.0),
                         particle_diameter_median_nm=1000.0, n_touching_pairs=0, n_narrow_gaps=0, n_free_voids=1)
        manifests.append(write_lamella(make_lamella(spec), folder / f"lamella_{i}"))
    return manifests


def run(quick: bool = False, batch_only: bool = False) -> list[dict]:
    from ceimap.stats.batch import run_batch, run_one

    rows = []
    with tempfile.TemporaryDirectory(prefix="ceimap-e2e-") as tmp:
        tmp = Path(tmp)
        for name in () if batch_only else examples(quick):
            load = os.getloadavg()[0]
            steps, wall, cpu = profile_run(example_dir(name) / "lamella.toml", tmp / f"run_{name}")
            log(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU (load average {load:.1f} → {os.getloadavg()[0]:.1f})")
            for step, (w, c) in steps.items():
                log(f"   {step:32s} {w:7.2f} s wall {c:7.2f} s CPU")
                rows.append(row(BENCH, f"{name}: {step}", "time", "s", w, "CPU time of the step", c))
            rows.append(row(BENCH, f"{name}: total, serial in-process (load {load:.1f})", "time", "s", wall,
                            "issue 8 target", TARGET_S))
            rows.append(row(BENCH, f"{name}: total, serial in-process", "CPU time", "s", cpu, "issue 8 target",
                            TARGET_S))
            load = os.getloadavg()[0]
            wall = command_wall(example_dir(name) / "lamella.toml", tmp / f"cmd_{name}")
            log(f"{name}: `ceimap run` {wall:.1f} s wall (load average {load:.1f} → {os.getloadavg()[0]:.1f})")
            rows.append(row(BENCH, f"{name}: `ceimap run` command (load {load:.1f})", "time", "s", wall,
                            "issue 8 target", TARGET_S))

        n = 8
        (tmp / "inputs").mkdir()
        manifests = _synthetic(tmp / "inputs", n) if quick else _copies(tmp / "inputs", n)
        what = "small synthetic lamellae" if quick else "example lamellae"
        load = os.getloadavg()[0]
        with timed() as t_serial:
            for i, m in enumerate(manifests):
                rec = run_one(str(m), str(tmp / "serial" / f"l{i}"))
                if rec["status"] != "ok":
                    log(f"serial {m}: {rec.get('error')}")
        with timed() as t_one:
            run_batch(manifests, tmp / "batch1", n_workers=1, progress=log)
        with timed() as t_batch:
            result = run_batch(manifests, tmp / "batch", n_workers=2, progress=log)
        scaling = t_one["s"] / t_batch["s"]
        speedup = t_serial["s"] / t_batch["s"]
        # the same tasks' own durations over the batch's wall time: the speed-up at the load the batch met
        # (the phases run minutes apart; on a shared machine their loads differ)
        parallelism = sum(r["seconds"] for r in result["lamellae"]) / t_batch["s"]
        log(f"batch of {n}: serial in one process {t_serial['s']:.1f} s, 1-worker LocalCluster {t_one['s']:.1f} s, "
            f"2-worker LocalCluster {t_batch['s']:.1f} s: {scaling:.2f}× over one worker, {speedup:.2f}× over the "
            f"serial loop, effective parallelism {parallelism:.2f} ({result['n_ok']} ok; load average {load:.1f} → "
            f"{os.getloadavg()[0]:.1f})")
        case = f"batch of {n} {what}, 2 workers (load {load:.1f})"
        rows.append(row(BENCH, case, "time", "s", t_batch["s"], "the batch on 1 worker", t_one["s"]))
        rows.append(row(BENCH, case, "speed-up over 1 worker", "×", scaling, "issue 8 target", BATCH_TARGET,
                        better="higher"))
        rows.append(row(BENCH, case, "speed-up over the serial loop", "×", speedup,
                        "serial loop in one process (s)", t_serial["s"], better="higher"))
        rows.append(row(BENCH, case, "Σ task time ÷ batch wall", "×", parallelism, "issue 8 target", BATCH_TARGET,
                        better="higher"))
        shutil.rmtree(tmp / "serial", ignore_errors=True)
    return rows


if __name__ == "__main__":
    import sys

    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv, batch_only="--batch-only" in sys.argv)))
