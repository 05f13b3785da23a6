"""Shared plumbing of the benchmark scripts: example lamellae, timing, peak memory, the result table.

Every ``bench_*.py`` module in this folder exposes ``run(quick: bool = False) -> list[dict]``; each dict is one
row of the printed table with the keys of :data:`COLUMNS` (``ratio`` = ceimap ÷ baseline for the named
metric, with ``better`` saying which direction is good). ``python3 benchmarks/run.py`` runs them all.
These are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO / "datasets"
EXAMPLES = ("charged", "cycled_4p25v", "cycled_4p7v")

try:  # the benchmarks measure the installed ceimap (`pip install -e .` makes it this checkout)
    import ceimap  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise SystemExit("benchmarks: ceimap is not installed; run `python3 -m pip install -e .` in the repository")

COLUMNS = ("benchmark", "case", "metric", "unit", "ceimap", "baseline", "baseline_value", "ratio", "better")


def example_dir(name: str) -> Path:
    """Folder of a shipped example lamella (``datasets/NAME``)."""
    return DATASETS / name


def row(benchmark: str, case: str, metric: str, unit: str, ceimap: float, baseline: str,
        baseline_value: float, better: str = "lower") -> dict:
    """One table row; ``ratio`` is ceimap ÷ baseline (NaN when the baseline value is 0 or missing)."""
    ratio = float("nan")
    if baseline_value not in (None, 0) and ceimap is not None:
        ratio = float(ceimap) / float(baseline_value)
    return {"benchmark": benchmark, "case": case, "metric": metric, "unit": unit,
            "ceimap": None if ceimap is None else float(ceimap), "baseline": baseline,
            "baseline_value": None if baseline_value is None else float(baseline_value),
            "ratio": ratio, "better": better}


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t["s"]`` is the wall time in seconds."""
    out = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0


@contextmanager
def peak_memory():
    """``with peak_memory() as m: ...`` then ``m["python_mb"]`` is the peak of Python/numpy allocations
    (tracemalloc) above the start, and ``m["rss_mb"]`` the process's resident high-water mark (ru_maxrss; only
    grows, so it is an upper bound for what ran inside)."""
    out = {}
    gc.collect()
    tracemalloc.start()
    try:
        yield out
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["python_mb"] = peak / 2**20
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["rss_mb"] = kb / 1024 if sys.platform != "darwin" else kb / 2**20


def single_threaded_blas():
    """Pin BLAS/OpenMP pools to one thread when threadpoolctl is available (fair timings on a shared box)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return None
    return threadpool_limits(1)


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    def cell(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            if v != v:
                return "—"
            return f"{v:.4g}"
        return str(v)
    body = [[cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


_lock = threading.Lock()


def log(message: str) -> None:
    """Progress to stderr (the table goes to stdout)."""
    with _lock:
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# example lamellae, preprocessed the ceimap way (shared by bench_align, bench_register, bench_decompose)
# ----------------------------------------------------------------------------------------------------------

EDGES = ("Ni-L", "S-L")
_MEMO: dict = {}
CACHE_DIR: Path | None = None
"""When set (``run.py --cache DIR``), preprocessed stacks are also kept on disk between runs."""


def load_example(name: str):
    """``(Lamella, truth)`` of a shipped example (memoised in the process)."""
    key = ("lamella", name)
    if key not in _MEMO:
        from ceimap.segment.io import read_lamella
        from ceimap.segment.synthetic import load_truth

        folder = example_dir(name)
        _MEMO[key] = (read_lamella(folder / "lamella.toml"), load_truth(folder))
    return _MEMO[key]


def _memo(key: tuple, filename: str, make, dump=None, load=None):
    """``make()`` once per process (and once per :data:`CACHE_DIR`, when set, through ``dump``/``load``: plain
    ``.npz`` arrays and JSON, never a pickle)."""
    if key in _MEMO:
        return _MEMO[key]
    path = None if CACHE_DIR is None or dump is None else Path(CACHE_DIR) / filename
    if path is not None and path.is_file():
        _MEMO[key] = load(path)
        return _MEMO[key]
    out = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        dump(path, out)
    _MEMO[key] = out
    return out


def _dump_preprocessed(path: Path, d: dict) -> None:
    import json

    od = d["od"]
    meta = {"pixel_size_nm": od.pixel_size_nm, "kind": od.kind, "edge": od.edge, "source": od.source,
            "align_s": d["align_s"], "od_s": d["od_s"]}
    valid = od.metadata.get("valid_region")
    arrays = {"data": od.data, "energies_ev": od.energies_ev, "shifts": d["shifts"]}
    if valid is not None:
        arrays["valid_region"] = np.asarray(valid, bool)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def _load_preprocessed(path: Path) -> dict:
    import json

    from ceimap.segment.stack import Stack

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        metadata = {"valid_region": z["valid_region"]} if "valid_region" in z else {}
        od = Stack(data=z["data"], energies_ev=z["energies_ev"], pixel_size_nm=meta["pixel_size_nm"],
                   kind=meta["kind"], edge=meta["edge"], source=meta["source"], metadata=metadata)
        return {"od": od, "shifts": z["shifts"], "align_s": meta["align_s"], "od_s": meta["od_s"]}


def preprocessed(name: str, edge: str) -> dict:
    """The ceimap preprocessing of one stack (``segment.pipeline.preprocess_stack``), timed.

    Returns a dict with ``od`` (aligned OD Stack), ``shifts`` (n_energy, 2) drift found by
    ``segment.align.align_frames``, ``align_s`` (wall time of the alignment alone) and ``od_s`` (the OD
    conversion). Memoised in the process, so the benchmarks that need the same stacks align them once; with
    :data:`CACHE_DIR` set, also cached on disk (the timings are those of the run that made the cache).
    """
    def make():
        from ceimap.segment.align import align_frames
        from ceimap.segment.stack import optical_density

        lam, _ = load_example(name)
        with timed() as t_align:
            aligned, shifts = align_frames(lam.stacks[edge])
        with timed() as t_od:
            od, _ = optical_density(aligned)
        return {"od": od, "shifts": np.asarray(shifts, float), "align_s": t_align["s"], "od_s": t_od["s"]}

    return _memo(("pre", name, edge), f"{name}_{edge}.npz", make, _dump_preprocessed, _load_preprocessed)


def registration(name: str, edge: str) -> dict:
    """ceimap's STXM→SEM registration of one preprocessed stack, timed (memoised in the process): ``register_stxm_to_sem(contrast_image(od), …)`` as ``process_lamella`` calls it.
    Returns ``{"registration": Registration, "s": seconds}``."""
    def make():
        from ceimap.segment.register import contrast_image, register_stxm_to_sem

        lam, _ = load_example(name)
        od = preprocessed(name, edge)["od"]
        with timed() as t:
            reg = register_stxm_to_sem(contrast_image(od), od.pixel_size_nm, lam.sem.image,
                                       lam.sem.pixel_size_nm)
        return {"registration": reg, "s": t["s"]}

    return _memo(("reg", name, edge), f"{name}_{edge}_registration", make)  # cheap: memoised in the process only


def mantis_import_error() -> str | None:
    """None when MANTiS's analysis modules (``mantis_xray.analysis``) import headless, else the reason."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):       # it prints its file plugins as it loads
            from mantis_xray.analysis import analyze, data_stack, data_struct  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip with the reason
        return f"{type(exc).__name__}: {exc}"
    return None


def examples(quick: bool) -> tuple[str, ...]:
    """The lamellae a benchmark runs on: all three, or the first with ``--quick``."""
    return EXAMPLES[:1] if quick else EXAMPLES


def reference_matrix(name: str, edge: str) -> np.ndarray:
    """The true STXM px → SEM px matrix of the *aligned* stack's grid.

    The truth maps frame-0 pixels; ceimap's aligned grid is referenced to the median frame position, where
    frame 0 sits at its estimated shift ``d0``: aligned pixel ``x`` shows frame-0 pixel ``x + d0``.
    """
    _, truth = load_example(name)
    d0 = preprocessed(name, edge)["shifts"][0]
    return np.asarray(truth["transforms"][edge]["matrix"], float) @ np.array(
        [[1.0, 0.0, d0[1]], [0.0, 1.0, d0[0]], [0.0, 0.0, 1.0]])
