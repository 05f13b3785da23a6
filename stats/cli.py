"""The ``ceimap`` command line: demo, run, train, compare, report.

Exit status: 0 success; 2 bad input or usage (the message names the file and the problem);
1 an internal error. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path

from ceimap.segment.errors import CeimapInputError

DEFAULT_DEMO_OUT = "ceimap-demo"
DEMO_MARKER = ".ceimap-demo"


class _Progress:
    """Prints ``[  12.3 s] message`` lines on stderr."""

    def __init__(self, prefix: str = ""):
        self.start = time.perf_counter()
        self.prefix = prefix

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        print(f"[{elapsed:7.1f} s] {self.prefix}{message}", file=sys.stderr, flush=True)


def repo_datasets_dir() -> Path:
    """The ``datasets/`` folder shipped beside the packages (an editable / source install)."""
    return Path(__file__).resolve().parents[1] / "datasets"


def _parse_stxm(values: list[str]) -> dict[str, Path]:
    stacks: dict[str, Path] = {}
    for value in values:
        edge, sep, path = value.partition("=")
        if not sep or not edge or not path:
            raise CeimapInputError(f"--stxm expects EDGE=PATH (e.g. Ni-L=stack.hdf5), got {value!r}")
        if edge in stacks:
            raise CeimapInputError(f"--stxm names the edge {edge!r} twice")
        stacks[edge] = Path(path)
    return stacks


def load_lamella_from_args(args) -> "Lamella":  # noqa: F821 - imported lazily
    """A Lamella from a manifest or from --sem/--stxm options (validated by the readers)."""
    from ceimap.api import load_lamella

    return load_lamella(args.lamella, sem=args.sem, sem_pixel_nm=args.sem_pixel_nm,
                        stxm=_parse_stxm(args.stxm), sample=args.sample)


def _require_ni(lamella) -> None:
    """Refuse, before any processing, a lamella the pipeline cannot analyse (see segment.lamella.check_lamella)."""
    from ceimap.segment.lamella import check_lamella

    check_lamella(lamella, required_edges=("Ni-L",))


def _worker_pool(stack: ExitStack):
    """One worker process (None on a one-core machine), closed with ``stack``.

    Started before the heavy imports of the caller, so that its own imports (it loads the pipeline at once)
    overlap them. :func:`ceimap.stats.run.run_lamella` preprocesses and registers the second edge in it alongside the
    first, then draws half of the report there (same results as serial).
    """
    from ceimap.segment.workers import spawn_pool

    if (os.cpu_count() or 1) < 2:
        return None
    pool = stack.enter_context(spawn_pool(1))
    pool.submit(importlib.import_module, "ceimap.segment.pipeline")
    return pool


def cmd_run(args) -> int:
    progress = _Progress()
    lamella = load_lamella_from_args(args)
    _require_ni(lamella)
    with ExitStack() as stack:
        pool = _worker_pool(stack)
        from .run import run_lamella

        model = None
        if args.model is not None:
            from ceimap.segment.classifier import PixelClassifier

            progress(f"loading the pixel classifier {args.model} (refitting it from its training data)")
            model = PixelClassifier.load(args.model)
            model.check_lamella(lamella.sem, lamella.stacks, path=args.model)
        report = run_lamella(lamella, args.out, overwrite=args.overwrite, model=model, progress=progress,
                             accept_unmatched=args.accept_registration, pool=pool)
    print(report)
    return 0


TRAIN_USAGE = ("ceimap train (LAMELLA.toml | --sem SEM [--sem-pixel-nm NM] --stxm EDGE=PATH ...) "
               "[--annotations LABELS.tif] [... more lamellae ...] --out MODEL "
               "[--estimator random_forest|hist_gradient_boosting] [--seed N] [--overwrite]")


TRAIN_HELP = """Train the supervised pixel classifier from sparse annotations drawn on the SEM grid
(class codes 0 not annotated, 1 NMC, 2 interphase, 3 electrolyte, 4 void) of one or more lamellae; a
LAMELLA.toml's own `annotations` key counts as its annotations. The model file (.npz) holds only data —
the annotated pixels' features and labels, the feature spec, hyper-parameters and seed — and the classifier
is refitted from it on load; apply it with `ceimap run ... --model MODEL`."""


def parse_train_args(argv: list[str]) -> tuple[list[dict], dict]:
    """Split ``ceimap train`` arguments into lamellae (in order) and global options.

    A lamella starts at a ``LAMELLA.toml`` or at ``--sem``; ``--sem-pixel-nm``, ``--stxm``,
    ``--annotations`` and ``--sample`` that follow belong to it. ``--out``, ``--estimator``, ``--seed`` and
    ``--overwrite`` are global.
    """
    per_lamella = {"--sem", "--sem-pixel-nm", "--stxm", "--annotations", "--sample"}
    global_values = {"--out", "--estimator", "--seed"}
    groups, options = [], {"overwrite": False, "estimator": "random_forest", "seed": 0, "out": None}
    i = 0

    def value(flag):
        nonlocal i
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise CeimapInputError(f"{flag} needs a value; usage: {TRAIN_USAGE}")
        i += 1
        return argv[i]

    while i < len(argv):
        token = argv[i]
        flag, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if eq:
            argv = argv[:i] + [flag, inline] + argv[i + 1:]
            token = flag
        if token in ("-h", "--help"):
            print(f"usage: {TRAIN_USAGE}\n\n{TRAIN_HELP}")
            raise SystemExit(0)
        if token == "--overwrite":
            options["overwrite"] = True
        elif token in global_values:
            options[token[2:]] = value(token)
        elif token == "--sem" or not token.startswith("-"):
            if token == "--sem":
                groups.append({"sem": Path(value(token)), "stxm": []})
            else:
                groups.append({"manifest": Path(token), "stxm": []})
        elif token in per_lamella:
            if not groups:
                raise CeimapInputError(f"{token} must follow a LAMELLA.toml or --sem; usage: {TRAIN_USAGE}")
            key = token[2:].replace("-", "_")
            v = value(token)
            if key == "stxm":
                groups[-1]["stxm"].append(v)
            elif key in groups[-1]:
                raise CeimapInputError(f"{token} given twice for one lamella")
            else:
                groups[-1][key] = v
        else:
            raise CeimapInputError(f"unknown option {token!r}; usage: {TRAIN_USAGE}")
        i += 1
    if not groups:
        raise CeimapInputError(f"no lamella given; usage: {TRAIN_USAGE}")
    if options["out"] is None:
        raise CeimapInputError(f"--out MODEL is required; usage: {TRAIN_USAGE}")
    try:
        options["seed"] = int(options["seed"])
    except ValueError:
        raise CeimapInputError(f"--seed must be an integer, got {options['seed']!r}") from None
    if options["estimator"] not in ("random_forest", "hist_gradient_boosting"):
        raise CeimapInputError(f"--estimator must be random_forest or hist_gradient_boosting, "
                               f"got {options['estimator']!r}")
    return groups, options


def cmd_train(args) -> int:
    from ceimap.api import annotations_path, read_annotated, train_annotated

    groups, options = parse_train_args(args.rest)
    out = Path(options["out"])
    if out.exists() and not options["overwrite"]:
        raise CeimapInputError("the model file exists; choose another --out or pass --overwrite", path=out)
    if out.is_dir():
        raise CeimapInputError("--out must be a file name (e.g. model.npz), not a folder", path=out)
    annotated = []
    for group in groups:
        if "sem" in group and "manifest" in group:
            raise CeimapInputError("give either LAMELLA.toml or --sem/--stxm for one lamella, not both")
        ns = argparse.Namespace(lamella=group.get("manifest"), sem=group.get("sem"),
                                sem_pixel_nm=float(group["sem_pixel_nm"]) if "sem_pixel_nm" in group else None,
                                stxm=group["stxm"], sample=group.get("sample"))
        lamella = load_lamella_from_args(ns)
        _require_ni(lamella)
        path = annotations_path(lamella, group.get("annotations"))
        if any(p.resolve() == out.resolve() for p in [*lamella.input_paths, path]):
            raise CeimapInputError("--out would overwrite an input file", path=out)
        annotated.append(read_annotated(lamella, path))
    model = train_annotated(annotated, estimator=options["estimator"], seed=options["seed"], progress=_Progress(),
                            warn=lambda message: print(f"ceimap: warning: {message}", file=sys.stderr))
    digest = model.save(out)
    for name, v in model.validation.get("leave_one_lamella_out", {}).items():
        per = ", ".join(f"{k}: {f:.3f}" for k, f in v["per_class_f1"].items())
        print(f"leave-one-lamella-out {name}: macro F1 {v['macro_f1']:.3f} (per class {per}; "
              f"{v['n']} annotated pixels)", file=sys.stderr)
    if len(annotated) < 2:
        print("leave-one-lamella-out validation needs two or more lamellae (one given)", file=sys.stderr)
    print(f"model sha256 {digest}", file=sys.stderr)
    print(out)
    return 0


def cmd_batch(args) -> int:
    from .batch import run_batch

    progress = _Progress()
    if args.model is not None:
        from ceimap.segment.classifier import PixelClassifier

        progress(f"checking the pixel classifier {args.model}")
        PixelClassifier.load(args.model)  # refuse a bad model before any lamella starts
    where = args.scheduler or f"a local dask cluster of {args.workers} worker processes"
    progress(f"{len(args.manifests)} lamellae on {where}")
    result = run_batch(args.manifests, args.out, scheduler=args.scheduler, n_workers=args.workers,
                       overwrite=args.overwrite, model=args.model, progress=progress)
    for rec in result["lamellae"]:
        if rec["status"] != "ok":
            print(f"ceimap: {rec['name']}: {rec['error']}", file=sys.stderr)
    print(Path(args.out) / "batch.json")
    return 0 if result["n_failed"] == 0 else 1


def cmd_report(args) -> int:
    from .report import write_report

    out = Path(args.out)
    if not (out / "summary.json").is_file():
        raise CeimapInputError("not a ceimap results folder (no summary.json)", path=out)
    print(write_report(out))
    return 0


def cmd_compare(args) -> int:
    from .compare import write_compare

    for run in args.runs:
        if not (Path(run) / "summary.json").is_file():
            raise CeimapInputError("not a ceimap results folder (no summary.json)", path=run)
    print(write_compare([Path(r) for r in args.runs], Path(args.out)))
    return 0


def cmd_demo(args) -> int:
    from ceimap.segment.io import read_lamella

    from .compare import write_compare
    from .outputs import AtomicFolder
    from .run import run_lamella

    datasets = Path(args.datasets) if args.datasets else repo_datasets_dir()
    manifests = sorted(datasets.glob("*/lamella.toml"))
    if not manifests:
        raise CeimapInputError("no example lamellae (*/lamella.toml) found; pass --datasets DIR", path=datasets)
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists() and not args.overwrite:
        raise CeimapInputError("the folder exists, is not empty and is not a ceimap demo folder; "
                               "choose another --out or pass --overwrite", path=out)
    progress = _Progress()
    with ExitStack() as stack, AtomicFolder(out) as tmp:
        pool = _worker_pool(stack)
        (tmp / DEMO_MARKER).write_text("written by `ceimap demo`; the demo replaces this folder\n")
        runs = []
        for manifest in manifests:
            lamella = read_lamella(manifest)
            _require_ni(lamella)
            progress.prefix = f"{lamella.name}: "
            run_lamella(lamella, tmp / lamella.name, progress=progress, pool=pool)
            runs.append(tmp / lamella.name)
        progress.prefix = ""
        progress("comparing samples")
        # compare.json and its report name the run folders where they will be, not in ``tmp``
        write_compare(runs, tmp / "compare", final_dirs=[out / r.name for r in runs])
    report = out / "compare" / "report.html"
    print(f"Reports: {', '.join(str(out / r.name / 'report.html') for r in runs)}", file=sys.stderr)
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ceimap",
        description="Correlated SEM + STXM chemical maps and statistics of battery cathode lamellae.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on the example lamellae and compare them")
    demo.add_argument("--out", default=DEFAULT_DEMO_OUT, help=f"results folder (default ./{DEFAULT_DEMO_OUT})")
    demo.add_argument("--datasets", default=None, help="folder of example lamellae (default: the shipped datasets/)")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-demo --out folder")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="one lamella, raw files to results")
    run.add_argument("lamella", nargs="?", type=Path, default=None, help="LAMELLA.toml manifest")
    run.add_argument("--sem", type=Path, help="SEM TIFF")
    run.add_argument("--sem-pixel-nm", type=float, default=None, help="SEM pixel size in nm (overrides the file)")
    run.add_argument("--stxm", action="append", default=[], metavar="EDGE=PATH", help="an STXM stack, e.g. Ni-L=ni.hdf5")
    run.add_argument("--model", type=Path, default=None, help="trained pixel classifier")
    run.add_argument("--sample", default=None, help="sample name (overrides the manifest)")
    run.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    run.add_argument("--accept-registration", action="store_true",
                     help="keep an automatic registration that matches no better than chance (small or symmetric "
                          "STXM fields) instead of refusing the lamella; the chance test stays in registration.json")
    run.add_argument("--out", required=True, type=Path, help="results folder")
    run.set_defaults(func=cmd_run)

    train = sub.add_parser("train", help="train the pixel classifier from sparse annotations",
                           usage=TRAIN_USAGE, add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    train.set_defaults(func=cmd_train)

    batch = sub.add_parser("batch", help="many lamellae in parallel on dask.distributed")
    batch.add_argument("manifests", nargs="+", type=Path, help="LAMELLA.toml manifests")
    batch.add_argument("--out", required=True, type=Path, help="batch folder (one run folder per lamella)")
    batch.add_argument("--scheduler", default=None, help="address of a running dask scheduler "
                       "(default: a LocalCluster for this batch)")
    batch.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (default 2)")
    batch.add_argument("--model", type=Path, default=None, help="trained pixel classifier for every lamella")
    batch.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    batch.set_defaults(func=cmd_batch)

    compare = sub.add_parser("compare", help="statistics between samples")
    compare.add_argument("runs", nargs="+", help="results folders of `ceimap run`")
    compare.add_argument("--out", required=True, help="folder for compare.json and report.html")
    compare.set_defaults(func=cmd_compare)

    report = sub.add_parser("report", help="re-render OUT/report.html from saved results")
    report.add_argument("out", help="results folder of `ceimap run`")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":  # lamella groups are order-dependent: parsed by parse_train_args
        args = argparse.Namespace(command="train", func=cmd_train, rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CeimapInputError as error:
        print(f"ceimap: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ceimap: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception:  # an internal error: say so, show where
        traceback.print_exc()
        print("ceimap: internal error (the traceback above); please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
