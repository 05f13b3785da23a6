"""The test suite's own cost: wall time and peak memory of ``python3 -m pytest --slow`` (issue 16).

The suite runs in a child process; every 0.25 s the resident memory of the child and all its descendants
(spawned workers, dask workers, the fuzz tests' reading processes) is summed, and the largest sum and the
largest single process are kept. Baselines: the 8 GB the slow suite must stay under on these 24 GB machines,
and CI's 90 minutes. Run alone (``python3 benchmarks/bench_test_suite.py``) or as ``run.py test_suite``;
it takes as long as the suite (about 12 minutes on an idle 2-core machine).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import format_table, log, row  # noqa: E402

REPO = HERE.parent
MEMORY_TARGET_BYTES = 8 * 10**9
CI_LIMIT_S = 90 * 60.0
SAMPLE_S = 0.25


def measure(args: list[str]) -> dict:
    """Run a command from the repository root; its wall time, exit status, peak tree and process RSS (bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"tree": 0, "process": 0, "tree_at_s": 0.0}
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            if rss and sum(rss) > peak["tree"]:
                peak["tree"], peak["tree_at_s"] = sum(rss), time.perf_counter() - start
            peak["process"] = max([peak["process"], *rss])
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    proc.wait()
    done.set()
    sampler.join()
    summary = next((ln for ln in reversed(output.splitlines()) if " passed" in ln or " failed" in ln), "")
    return {"wall_s": time.perf_counter() - start, "returncode": proc.returncode, "summary": summary.strip("= "),
            **peak}


def run(quick: bool = False) -> list[dict]:
    """One row each for the wall time and the peak memory of the test suite (``quick``: the fast suite)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + ([] if quick else ["--slow"])
    case = "pytest" + ("" if quick else " --slow")
    log(f"test_suite: {' '.join(args[1:])} …")
    got = measure(args)
    log(f"test_suite: {got['summary']} (exit {got['returncode']}) in {got['wall_s']:.0f} s; peak "
        f"{got['tree'] / 1e9:.2f} GB over all processes at {got['tree_at_s']:.0f} s, "
        f"{got['process'] / 1e9:.2f} GB in one process")
    return [
        row("test_suite", case, "wall time", "s", got["wall_s"], "CI limit (90 min)", CI_LIMIT_S),
        row("test_suite", case, "peak RSS, all processes", "GB", got["tree"] / 1e9, "target 8 GB",
            MEMORY_TARGET_BYTES / 1e9),
        row("test_suite", case, "peak RSS, one process", "GB", got["process"] / 1e9, "target 8 GB",
            MEMORY_TARGET_BYTES / 1e9),
    ]


if __name__ == "__main__":
    print(format_table(run(quick="--quick" in sys.argv)))
