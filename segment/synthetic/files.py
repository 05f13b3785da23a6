"""Writing a synthetic lamella to a folder, loading its truth back, and regenerating the example datasets.

Folder layout (``datasets/<name>/``)::

    lamella.toml        manifest (read by segment.io.read_lamella)
    sem.tif             SEM image, 8- or 16-bit, pixel size in the TIFF tags
    ni_l.hdf5, s_l.hdf5 NXstxm transmitted counts with the ring current as NXmonitor ``control``
    annotations.tif     sparse scribbles, uint8 on the SEM grid (0 = not annotated)
    truth/              classes.tif, particles.tif, egt2g.tif, particles.csv, thickness.csv, spectra.csv,
                        transforms.json, truth.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import tomli_w

from ..errors import CeimapInputError
from ..io.jsonfile import write_json
from .generate import SyntheticLamella, make_lamella

EXAMPLES: dict[str, int] = {"charged": 1101, "cycled_4p25v": 2202, "cycled_4p7v": 3307}
"""The example lamellae shipped in ``datasets/``: condition name → seed."""

TRUTH_FILES = ("classes.tif", "particles.tif", "egt2g.tif", "particles.csv", "thickness.csv", "spectra.csv",
               "transforms.json", "truth.json")


def _write_json(path: Path, obj) -> None:
    write_json(path, obj, indent=1)


def _sem_integers(synth: SyntheticLamella) -> np.ndarray:
    dtype = np.uint8 if synth.spec.sem_bit_depth == 8 else np.uint16
    return synth.sem.image.astype(dtype)


def write_lamella(synth: SyntheticLamella, out_dir) -> Path:
    """Write a synthetic lamella (inputs, manifest and truth) into ``out_dir`` (created; files replaced).

    Parameters
    ----------
    synth : SyntheticLamella
    out_dir : path-like

    Returns
    -------
    Path
        The manifest ``out_dir/lamella.toml``.
    """
    from ..io import write_nxstxm, write_sem_tiff

    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    spec = synth.spec
    write_sem_tiff(out / "sem.tif", _sem_integers(synth), spec.sem_pixel_nm)
    write_sem_tiff(out / "annotations.tif", synth.annotations.astype(np.uint8), spec.sem_pixel_nm)
    stxm_tables = []
    for es in spec.edges:
        write_nxstxm(out / es.file_name, synth.stacks[es.edge], title=f"{spec.name or spec.condition} {es.edge}")
        stxm_tables.append({"edge": es.edge, "path": es.file_name})
    info = synth.truth["info"]
    top = {
        "name": info["name"],
        "sample": info["sample"],
        "annotations": "annotations.tif",
        "description": (f"synthetic lamella ({info['generator']} {info['generator_version']}, condition "
                        f"{spec.condition}, seed {spec.seed}{', null' if spec.null else ''}); truth in truth/"),
    }
    text = tomli_w.dumps(top) + "\n[sem]\n" + tomli_w.dumps(
        {"path": "sem.tif", "pixel_size_nm": float(spec.sem_pixel_nm)})
    for table in stxm_tables:
        text += "\n[[stxm]]\n" + tomli_w.dumps(table)
    (out / "lamella.toml").write_text(text)
    t = synth.truth
    kw = dict(compression="zlib")
    tifffile.imwrite(out / "truth" / "classes.tif", t["classes"].astype(np.uint8), **kw)
    tifffile.imwrite(out / "truth" / "particles.tif", t["particles"].astype(np.uint32), **kw)
    tifffile.imwrite(out / "truth" / "egt2g.tif", t["egt2g"].astype(np.float32), **kw)
    t["particle_table"].to_csv(out / "truth" / "particles.csv", index=False, float_format="%.6f")
    t["thickness"].to_csv(out / "truth" / "thickness.csv", index=False, float_format="%.3f")
    t["spectra"].to_csv(out / "truth" / "spectra.csv", index=False, float_format="%.6f")
    _write_json(out / "truth" / "transforms.json", t["transforms"])
    _write_json(out / "truth" / "truth.json", info)
    return out / "lamella.toml"


def load_truth(lamella_dir) -> dict:
    """Load the truth of a synthetic lamella folder.

    Parameters
    ----------
    lamella_dir : path-like
        A folder written by :func:`write_lamella` (e.g. ``datasets/cycled_4p25v``).

    Returns
    -------
    dict
        ``classes`` (uint8), ``particles`` (uint32) and ``egt2g`` (float32, NaN without Ni) on the SEM grid;
        ``particle_table`` (DataFrame of particles.csv); ``thickness`` (DataFrame of thickness.csv);
        ``spectra`` (DataFrame of spectra.csv: ``edge, energy_ev, nmc, interphase, electrolyte``, OD per 100 nm
        of each dense phase);
        ``transforms`` ({edge: {``matrix`` (3, 3) array, ``drift_px`` (n, 2) array, ``stxm_pixel_nm``,
        ``true_stxm_pixel_nm``, ``psf_fwhm_nm`` …}}); ``info`` (truth.json) — whose keys (``condition``,
        ``seed``, ``s_edge_ev``, ``interphase_thickness_nm``, ``class_fractions``, ``null`` …) are also
        copied to the top level.

    Raises
    ------
    CeimapInputError
        When the folder has no complete ``truth/``.
    """
    d = Path(lamella_dir) / "truth"
    missing = [f for f in TRUTH_FILES if not (d / f).is_file()]
    if missing:
        raise CeimapInputError(f"no complete synthetic truth here (missing {', '.join(missing)})", path=d)
    info = json.loads((d / "truth.json").read_text())
    transforms = json.loads((d / "transforms.json").read_text())
    for tr in transforms.values():
        tr["matrix"] = np.asarray(tr["matrix"], float)
        tr["drift_px"] = np.asarray(tr["drift_px"], float).reshape(-1, 2)
    out = dict(info)
    out.update({
        "classes": tifffile.imread(d / "classes.tif").astype(np.uint8),
        "particles": tifffile.imread(d / "particles.tif").astype(np.uint32),
        "egt2g": tifffile.imread(d / "egt2g.tif").astype(np.float32),
        "particle_table": pd.read_csv(d / "particles.csv"),
        "thickness": pd.read_csv(d / "thickness.csv"),
        "spectra": pd.read_csv(d / "spectra.csv"),
        "transforms": transforms,
        "info": info,
    })
    return out


def make_datasets(out_dir, names=None) -> list[Path]:
    """Regenerate the example lamellae of :data:`EXAMPLES` into ``out_dir/<name>/``.

    Parameters
    ----------
    out_dir : path-like
        Usually the repository's ``datasets/`` folder (its README.md is not touched).
    names : iterable of str, optional
        A subset of :data:`EXAMPLES` (default all).

    Returns
    -------
    list of Path
        The manifests written.
    """
    out = Path(out_dir)
    manifests = []
    for name in (names or EXAMPLES):
        synth = make_lamella(name, seed=EXAMPLES[name])
        manifests.append(write_lamella(synth, out / name))
    return manifests
