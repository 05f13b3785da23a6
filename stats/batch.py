"""Many lamellae at once on dask.distributed: ``ceimap batch MANIFEST... --out DIR [--scheduler ADDRESS]``.

Each lamella runs exactly what ``ceimap run`` runs (:func:`ceimap.stats.run.run_lamella`) in its own task, so a batch
result is the serial result. Tasks go to an existing dask scheduler when its address is given, else to a
:class:`distributed.LocalCluster` of worker *processes* started for the batch (one thread each: every task is
CPU-bound Python/NumPy, and processes keep one lamella's memory away from the others). A lamella that fails
(bad input or an internal error) is reported with its message and the others go on; its folder is never left
looking complete (each run folder is written atomically).

``DIR`` holds one run folder per lamella (named after the lamella), ``batch.json`` (status, time and message of
every lamella, parameters, versions), ``batch_lamellae.csv`` (one row per successful lamella: its key numbers),
``batch_particles.csv`` (every particle of every lamella, with ``lamella`` and ``sample`` columns) and, when
at least two lamellae succeeded, ``compare/`` (:func:`ceimap.stats.compare.write_compare` over them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from pathlib import Path
from typing import Callable

import pandas as pd

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io.jsonfile import json_safe

from .outputs import check_output_folder, write_csv
from .summary import Bimodality, RegionValues, Summary, Test, Tests, Thickness


def _folder_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "lamella"


def plan_batch(manifests, out_dir) -> list[dict]:
    """Check the manifests and give each lamella its run folder under ``out_dir``.

    Only the manifests are read here (not the images): a missing or malformed manifest is refused before any
    work starts. Folder names come from the lamella names (``name`` in the manifest, else the manifest's
    folder), made unique.

    Returns
    -------
    list of dict
        ``manifest`` (absolute path), ``name``, ``out`` (run folder).

    Raises
    ------
    CeimapInputError
        No manifest, a manifest that does not exist or is not a LAMELLA.toml, or the same manifest twice.
    """
    from ceimap.segment.compat import tomllib

    manifests = [Path(m).resolve() for m in manifests]
    if not manifests:
        raise CeimapInputError("no LAMELLA.toml given to the batch")
    seen, plan, used = set(), [], set()
    for m in manifests:
        if m in seen:
            raise CeimapInputError("listed twice in the batch", path=m)
        seen.add(m)
        if not m.is_file():
            raise CeimapInputError("manifest not found", path=m)
        try:
            with open(m, "rb") as f:
                name = str(tomllib.load(f).get("name") or m.parent.name)
        except (OSError, ValueError) as exc:
            raise CeimapInputError(f"not a readable LAMELLA.toml ({exc})", path=m) from None
        folder = _folder_name(name)
        k = 2
        base = folder
        while folder in used:
            folder, k = f"{base}_{k}", k + 1
        used.add(folder)
        plan.append({"manifest": str(m), "name": name, "out": str(Path(out_dir) / folder)})
    return plan


def run_one(manifest: str, out: str, overwrite: bool = False, model: str | None = None) -> dict:
    """Run one lamella into ``out`` (what one batch task does); never raises.

    Returns
    -------
    dict
        ``status`` ("ok" or "failed"), ``seconds``, and ``report`` (path) or ``error`` (one line) and
        ``error_kind`` ("input" for bad input, "internal" otherwise, with ``traceback``).
    """
    from ceimap.segment.io import read_lamella

    from .run import run_lamella

    t0 = time.perf_counter()
    record = {"manifest": manifest, "out": out, "pid": os.getpid()}
    try:
        lamella = read_lamella(manifest)
        kwargs = {"overwrite": overwrite}
        if model is not None:
            kwargs["model"] = model
        report = run_lamella(lamella, out, **kwargs)
        record.update(status="ok", report=str(report))
    except CeimapInputError as exc:
        record.update(status="failed", error=str(exc), error_kind="input")
    except Exception as exc:  # noqa: BLE001 - one lamella's failure must not stop the batch
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", error_kind="internal",
                      traceback=traceback.format_exc())
    record["seconds"] = time.perf_counter() - t0
    return record


def _client(scheduler: str | None, n_workers: int):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise CeimapInputError(f"cannot reach the dask scheduler ({exc})", path=scheduler) from None
    import dask

    # dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which (setting any glibc malloc parameter fixes
    # the mmap threshold at 128 KiB) sends every array above 128 KiB to a fresh mmap: page faults on each of a
    # run's many temporary images (times in benchmarks/README.md, "Batch"). Our workers keep glibc's own
    # (dynamic) thresholds; the other
    # variables dask sets (one BLAS/OpenMP thread per worker) stay. A nanny writes its variables into this
    # process's environment before it spawns, so an earlier cluster here may have left the variable behind: it is
    # taken out while the workers start, then put back.
    environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if key != "MALLOC_TRIM_THRESHOLD_"}
    inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
    finally:
        if inherited is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited
    return Client(cluster), cluster


def lamella_row(run_dir: str | Path) -> dict:
    """The key numbers of one run folder (``summary.json``) as one flat row."""
    s = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    t = s.get(Summary.THICKNESS) or {}
    test = (s.get(Summary.TESTS) or {}).get(Tests.SURFACE) or {}
    bim = (s.get(Summary.BIMODALITY) or {}).get(Bimodality.BULK_PARTICLES) or {}
    row = {"lamella": s.get(Summary.NAME), "sample": s.get(Summary.SAMPLE), "n_particles": s.get(Summary.N_PARTICLES),
           **{f"fraction_{k}": v for k, v in (s.get(Summary.CLASS_FRACTIONS) or {}).items()},
           "thickness_mean_nm": t.get(Thickness.MEAN), "thickness_sd_nm": t.get(Thickness.SD),
           "thickness_n": t.get(Thickness.N), "thickness_resolvable": t.get(Thickness.RESOLVABLE)}
    for region, d in (s.get(Summary.EGT2G) or {}).items():
        row[f"egt2g_{region}_mean"] = (d or {}).get(RegionValues.MEAN)
        row[f"egt2g_{region}_n"] = (d or {}).get(RegionValues.N)
    row.update({"surface_test_p": test.get(Test.P_VALUE), "surface_test_effect": test.get(Test.EFFECT),
                "surface_test_method": test.get(Test.METHOD), "bulk_bimodal": bim.get(Bimodality.BIMODAL),
                "bulk_dip_p": bim.get(Bimodality.DIP_P)})
    return row


def combined_tables(run_dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``batch_lamellae`` (one row per run) and ``batch_particles`` (all particles, with lamella and sample)."""
    rows, parts = [], []
    for d in run_dirs:
        row = lamella_row(d)
        rows.append(row)
        p = pd.read_csv(Path(d) / "particles.csv")
        p.insert(0, "sample", row["sample"])
        p.insert(0, "lamella", row["lamella"])
        parts.append(p)
    return pd.DataFrame(rows), (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())


def run_batch(manifests, out_dir, *, scheduler: str | None = None, n_workers: int = 2, overwrite: bool = False,
              model: str | None = None, progress: Callable[[str], None] = lambda message: None) -> dict:
    """Process lamellae in parallel on dask.distributed and write the combined tables and comparison.

    Parameters
    ----------
    manifests : sequence of path-like
        ``LAMELLA.toml`` files.
    out_dir : path-like
        Batch folder (must be empty or absent unless ``overwrite``; never inside an input folder).
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``); default: a LocalCluster for this batch.
    n_workers : int
        Worker processes of the LocalCluster.
    overwrite : bool
        Replace existing results.
    model : path-like, optional
        Pixel-classifier model file for every lamella (``ceimap run --model``).
    progress : callable
        Receives one message per finished lamella.

    Returns
    -------
    dict
        What ``batch.json`` holds: ``lamellae`` (one record per lamella, in the order given), ``n_ok``,
        ``n_failed``, ``seconds``, ``scheduler``.
    """
    from distributed import as_completed

    from .compare import write_compare
    from .outputs import provenance
    from .report_html import write_text_atomic

    out_dir = Path(out_dir).resolve()  # batch.json records absolute paths, true from any working directory
    plan = plan_batch(manifests, out_dir)
    inputs = [Path(p["manifest"]) for p in plan]
    check_output_folder(out_dir, inputs, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    client, cluster = _client(scheduler, n_workers)
    try:
        futures = {client.submit(run_one, p["manifest"], p["out"], overwrite, None if model is None else str(model),
                                 key=f"ceimap-{i}-{Path(p['out']).name}", pure=False): i
                   for i, p in enumerate(plan)}
        records = [None] * len(plan)
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            rec = future.result()
            rec["name"] = plan[i]["name"]
            records[i] = rec
            what = "ok" if rec["status"] == "ok" else f"FAILED: {rec['error']}"
            progress(f"[{done}/{len(plan)}] {plan[i]['name']}: {what} ({rec['seconds']:.0f} s)")
        address = client.scheduler.address if client.scheduler else scheduler
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ok = [r["out"] for r in records if r["status"] == "ok"]
    result = {"lamellae": records, "n_ok": len(ok), "n_failed": len(records) - len(ok),
              "seconds": time.perf_counter() - t0, "scheduler": scheduler or f"LocalCluster ({address})",
              "n_workers": None if scheduler else n_workers}
    if ok:
        lamellae, particles = combined_tables(ok)
        write_csv(out_dir / "batch_lamellae.csv", lamellae)
        write_csv(out_dir / "batch_particles.csv", particles)
    if len(ok) >= 2:
        progress("comparing the lamellae' samples")
        try:
            write_compare(ok, out_dir / "compare")
            result["compare"] = str(out_dir / "compare" / "compare.json")
        except CeimapInputError as exc:
            result["compare_error"] = str(exc)
    result["provenance"] = provenance([Path(p["manifest"]) for p in plan],
                                      {"scheduler": result["scheduler"], "model": model})
    write_text_atomic(out_dir / "batch.json", json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    return result
