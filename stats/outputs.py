"""Writing a run's results: every file of CONTRACT.md, atomically, never into an input folder.

A run is written into a hidden temporary folder beside ``OUT`` and moved into place only when every
file is complete, so a failed or interrupted run never leaves a half-written result that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from ceimap.segment.errors import CeimapInputError

RUN_MARKER = "summary.json"


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_folder(out: Path, input_paths: list[Path], *, overwrite: bool) -> None:
    """Refuse an output folder that is non-empty (without ``overwrite``) or that holds any input.

    Raises
    ------
    CeimapInputError
        When ``out`` exists and is not an empty folder and ``overwrite`` is false, when ``out`` is a
        file, or when ``out`` is an input folder or lies inside/above one.
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise CeimapInputError("the output path exists and is not a folder", path=out)
    for path in input_paths:
        folder = Path(path).resolve().parent
        if out == folder or folder in out.parents or out in folder.parents:
            raise CeimapInputError(
                f"the output folder would be inside, or contain, the input folder {folder}; "
                "choose an output folder elsewhere (ceimap never writes into its input folders)",
                path=out,
            )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CeimapInputError(
            "the output folder is not empty; pass --overwrite to replace its contents", path=out
        )


class AtomicFolder:
    """Context manager that builds a folder beside ``target`` and moves it into place on success.

    On an exception the temporary folder is removed and ``target`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with AtomicFolder(root / "run") as tmp:
    ...     _ = (tmp / "a.txt").write_text("done")
    >>> (root / "run" / "a.txt").read_text()
    'done'
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target).resolve()
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def provenance(input_paths: list[Path], parameters: dict, seed: int | None = None) -> dict:
    """Provenance block of ``summary.json``: versions, inputs with SHA-256, parameters, seed."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for package in ("ceimap", "numpy", "scipy", "scikit-image", "scikit-learn", "statsmodels",
                    "pandas", "SimpleITK", "tifffile", "h5py", "diptest"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {
        "version": versions["ceimap"],
        "versions": versions,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [{"path": str(Path(p).resolve()), "sha256": sha256_of(p)} for p in input_paths],
        "parameters": parameters,
        "seed": seed,
    }


TILED_TIFF_PIXELS = 4096 * 4096
"""Images whose planes have more pixels than this are written as tiled TIFFs (512² tiles, compressed and read
tile by tile: a viewer or a later step can read a region of an 8192² map without decoding all of it); smaller
ones as one strip image, as before. Both read back identically with ``tifffile.imread``."""


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write one image (or a stack of planes, one page each) as a zlib-compressed greyscale TIFF (tiled when
    its planes are larger than :data:`TILED_TIFF_PIXELS`)."""
    array = np.asarray(array)
    tiled = array.ndim >= 2 and array.shape[-1] * array.shape[-2] > TILED_TIFF_PIXELS
    tifffile.imwrite(path, array, compression="zlib", photometric="minisblack",
                     **({"tile": (512, 512)} if tiled else {}))


def write_csv(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False, float_format="%.6g")
