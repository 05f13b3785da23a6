"""Run the benchmarks and print one table of ratios against the named baselines.

    python3 -m pip install -e ".[bench]"      # hyperspy, pystackreg, dask.distributed
    python3 benchmarks/run.py                 # all benchmarks but test_suite (the slow suite's own cost)
    python3 benchmarks/run.py align register  # only these (module names without ``bench_``)
    python3 benchmarks/run.py --quick         # smaller cases, for a smoke run
    python3 benchmarks/run.py --json out.json # also save the rows
    python3 benchmarks/run.py --cache /tmp/x  # keep the ceimap-preprocessed stacks there between runs

Each ``bench_NAME.py`` here exposes ``run(quick=False) -> list[dict]`` (rows of ``_common.COLUMNS``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import format_table, log  # noqa: E402


ON_REQUEST = {"test_suite"}
"""Benchmarks run only when named: ``test_suite`` runs the whole slow test suite (about 12 minutes)."""


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all but {', '.join(sorted(ON_REQUEST))}: "
                                                 f"{', '.join(available())})")
    parser.add_argument("--quick", action="store_true", help="smaller cases")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--cache", type=Path,
                        help="keep the ceimap-preprocessed stacks (and their timings) in this folder between runs")
    args = parser.parse_args(argv)
    _common.CACHE_DIR = args.cache
    names = args.names or [n for n in available() if n not in ON_REQUEST]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
    rows, failed = [], []
    for name in names:
        log(f"== {name}")
        try:
            module = importlib.import_module(f"bench_{name}")
            rows.extend(module.run(quick=args.quick))
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed.append(name)
            traceback.print_exc()
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
