"""``python -m ceimap.segment.synthetic OUT_DIR [NAME ...]`` — regenerate the example lamellae (all by default)."""

from __future__ import annotations

import argparse
import sys
import time

from .files import EXAMPLES, make_datasets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ceimap.segment.synthetic",
                                     description="Regenerate the synthetic example lamellae with their truth.")
    parser.add_argument("out_dir", help="output folder (e.g. datasets/)")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"which examples (default all: {', '.join(EXAMPLES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}; choose from {', '.join(EXAMPLES)}")
    for name in args.names or list(EXAMPLES):
        t0 = time.perf_counter()
        (manifest,) = make_datasets(args.out_dir, [name])
        print(f"{manifest}  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
