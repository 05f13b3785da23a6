"""Reading a run folder for the report: its files, and the values the report takes from ``summary.json``.

:func:`load_run` reads the files that ``ceimap run`` wrote; the helpers below read ``summary.json`` by the keys
of its schema (:mod:`ceimap.stats.summary`) and ``registration.json`` by the keys
:func:`ceimap.stats.run.registration_record` writes. A missing or unreadable file is ``None``; a missing
value is ``None`` too, and the report says "not available" in its place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .summary import Provenance, Regions, SEdge, Summary, Thickness


def _read_optional(path: Path, read):
    """``read(path)``, or None when the file is absent or unreadable (a damaged file is left out of the report;
    :class:`ceimap.segment.errors.CeimapInputError` is a ``ValueError``)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except (OSError, ValueError):
        return None


def _load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_json(path: Path):
    return _read_optional(path, _load_json)


def _read_csv(path: Path):
    import pandas as pd

    return _read_optional(path, pd.read_csv)


def _read_tiff(path: Path):
    from ceimap.segment.io.tiff import read_tiff_image

    return _read_optional(path, read_tiff_image)


def load_run(out_dir) -> dict:
    """Read the files of a run folder that the report uses.

    Parameters
    ----------
    out_dir : str or path-like
        A folder written by ``ceimap run``.

    Returns
    -------
    dict
        Keys ``classes``, ``particles_map``, ``egt2g``, ``sem`` (arrays or None), ``registration``,
        ``summary``, ``s_edge`` (dicts or None), ``particles``, ``thickness``, ``pixels``,
        ``class_spectra`` (DataFrames or None) and ``files`` (name to Path of every file found).
    """
    out = Path(out_dir)
    names = {
        "classes": "classes.tif", "particles_map": "particles.tif", "egt2g": "egt2g.tif", "sem": "sem.tif",
        "registration": "registration.json", "summary": "summary.json", "s_edge": "s_edge.json",
        "particles": "particles.csv", "thickness": "thickness.csv", "pixels": "pixels.csv",
        "class_spectra": "class_spectra.csv", "components": "components.csv", "abundances": "abundances.tif",
    }
    run = {"files": {}}
    for key, name in names.items():
        path = out / name
        if path.is_file():
            run["files"][name] = path
        if name.endswith(".tif"):
            run[key] = _read_tiff(path)
        elif name.endswith(".json"):
            run[key] = _read_json(path)
        else:
            run[key] = _read_csv(path)
    if run["summary"] is None:
        run["summary"] = {}
    return run


def _num(value) -> float | None:
    """A finite float from a JSON value, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _get(d, *keys, default=None):
    """First present key of ``keys`` in dict ``d`` (None-safe)."""
    if not isinstance(d, dict):
        return default
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _find_key(d, keys):
    """Depth-first search of nested dicts for the first of ``keys``."""
    if not isinstance(d, dict):
        return None
    for k in keys:
        if k in d and not isinstance(d[k], dict):
            return d[k]
    for v in d.values():
        if isinstance(v, dict):
            r = _find_key(v, keys)
            if r is not None:
                return r
    return None


def _provenance(summary: dict) -> dict:
    prov = _get(summary, Summary.PROVENANCE, default={})
    return prov if isinstance(prov, dict) else {}


def _parameters(summary: dict) -> dict:
    p = _get(_provenance(summary), Provenance.PARAMETERS, default={})
    return p if isinstance(p, dict) else {}


def _versions(summary: dict) -> dict:
    """Package versions of the provenance, ceimap first."""
    prov = _provenance(summary)
    v = _get(prov, Provenance.VERSIONS, default={})
    out = {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else {}
    ver = _get(prov, Provenance.VERSION)
    if ver is not None and "ceimap" not in out:
        out = {"ceimap": ver, **out}
    return out


def _inputs(summary: dict) -> list[dict]:
    """The provenance's input files, each ``{path, sha256}``."""
    raw = _get(_provenance(summary), Provenance.INPUTS, default=[])
    return [v for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []


def _s_edge_regions(s_edge: dict):
    """(region, edge fit) pairs of an ``s_edge.json``: electrolyte and interphase, when fitted."""
    for region in (SEdge.ELECTROLYTE, SEdge.INTERPHASE):
        entry = s_edge.get(region) if isinstance(s_edge, dict) else None
        if isinstance(entry, dict):
            yield region, entry


def _sem_pixel_nm(run) -> float | None:
    return _num(_get(run["summary"], "sem_pixel_nm"))


def _resolution_nm(run) -> float | None:
    """The STXM resolution to compare thickness with: the summary's, else the largest STXM pixel size."""
    s = run["summary"]
    r = _num(_get(_get(s, Summary.THICKNESS, default={}), Thickness.RESOLUTION_NM))
    if r is None:
        r = _num(_get(_get(s, Summary.REGIONS, default={}), Regions.RESOLUTION_NM))
    if r is not None:
        return r
    sizes = []
    for entry in (run["registration"] or {}).values() if isinstance(run["registration"], dict) else []:
        v = _num(_get(entry, "stxm_pixel_nm")) if isinstance(entry, dict) else None
        if v is not None:
            sizes.append(v)
    return max(sizes) if sizes else None
