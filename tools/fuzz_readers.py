"""Fuzz every reader with many random mutants, each read in a guarded process (not part of the test suite).

Usage::

    python3 tools/fuzz_readers.py [--mutants 20000] [--kinds sem h5 ...] [--seed S] [--workers 2] [--out DIR]

For each input kind of ``tests/reader_fuzzing.py`` (NXstxm HDF5, TIFF stack + energies, aXis2000 ncb + dat,
ALS hdr + xim, SEM TIFF, annotation TIFF, lamella manifest) it mutates the kind's small valid files at random
(one file at a time, one to four byte mutations) and reads each mutant in a :class:`ReaderProcess` (time and
memory limits). It prints, per kind, how many mutants were read, refused, and how many failed (another
exception, a memory failure, a hang, a crash, or a flood of messages), with the slowest read; each failing
mutant is saved in ``--out`` with the mutation that made it. Exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the test helpers

import reader_fuzzing as F  # noqa: E402


def fuzz_kind(kind: str, n_mutants: int, seed: int, n_workers: int, out: Path) -> dict:
    """Read ``n_mutants`` random mutants of one kind; the counts of outcomes and the failures."""
    rng_seeds = np.random.SeedSequence([seed, list(F.CASES).index(kind)]).spawn(n_workers)
    counts = {"read": 0, "refused": 0, "failed": 0}
    slowest = [0.0, ""]
    failures = []
    lock = threading.Lock()

    def work(i: int):
        rng = np.random.default_rng(rng_seeds[i])
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{kind}-") as tmp, F.ReaderProcess() as proc:
            folder = Path(tmp)
            path, mutable = F.write_originals(kind, folder)
            names = sorted(mutable)
            for _ in range(i, n_mutants, n_workers):
                which = names[int(rng.integers(len(names)))]
                mutations = F.random_mutations(rng)
                for name in names:
                    (folder / name).write_bytes(mutable[name])
                (folder / which).write_bytes(F.mutate(mutable[which], mutations))
                start = time.perf_counter()
                outcome = proc.read(kind, path)
                took = time.perf_counter() - start
                failed = outcome.status not in ("read", "refused") or outcome.flooded or (
                    outcome.status == "refused" and "\n" in outcome.detail.strip())
                with lock:
                    if took > slowest[0]:
                        slowest[:] = [took, f"{which} {mutations}"]
                    if failed:
                        counts["failed"] += 1
                        n = len(failures)
                        saved = out / kind / f"{n:04d}_{which}"
                        saved.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(folder / which, saved)
                        failures.append({"file": which, "mutations": mutations, "status": outcome.status,
                                         "messages": outcome.messages, "chars": outcome.chars,
                                         "detail": outcome.detail[-2000:], "saved": str(saved)})
                    else:
                        counts[outcome.status] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"kind": kind, **counts, "slowest_s": round(slowest[0], 3), "slowest_mutant": slowest[1],
            "failures": failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=20000, help="mutants per kind (default 20000)")
    parser.add_argument("--kinds", nargs="+", default=list(F.CASES), choices=list(F.CASES))
    parser.add_argument("--seed", type=int, default=None, help="default: a new seed, printed")
    parser.add_argument("--workers", type=int, default=2, help="reading processes at once (default 2)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="folder for failing mutants and fuzz_readers.json")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}, {args.mutants} mutants per kind, {args.workers} reading processes", flush=True)
    results = []
    for kind in args.kinds:
        start = time.perf_counter()
        res = fuzz_kind(kind, args.mutants, seed, args.workers, args.out)
        res["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(res)
        print(f"{kind:12s} read {res['read']:6d}  refused {res['refused']:6d}  failed {res['failed']:4d}  "
              f"slowest {res['slowest_s']:.3f} s  wall {res['wall_s']:.0f} s", flush=True)
        for f in res["failures"][:5]:
            print(f"    {f['status']}: {f['file']} {f['mutations']}: {f['detail'].strip()[-300:]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_readers.json").write_text(json.dumps({"seed": seed, "results": results}, indent=1))
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
