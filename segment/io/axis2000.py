"""aXis2000 ``.ncb`` + ``.dat`` image stacks.

The ``.dat`` text file describes the ``.ncb`` binary: line 1 ``nX nY scale``; line 2 ``x_start x_stop``
and line 3 ``y_start y_stop`` (µm, first and last pixel centre); line 4 ``nE``; then ``nE`` energies (eV);
then optionally ``nE`` lines ``name energy dwell`` (dwell in ms). The ``.ncb`` holds ``nX·nY·nE``
little-endian values, x fastest, then y, then energy: float32 when ``scale < 0``, else int16 holding
``value × scale``. A start greater than the stop means the axis runs backwards (the frames are flipped so
coordinates increase with the index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CeimapInputError
from ..stack import Stack
from ._assemble import assemble_stack, check_array_size

__all__ = ["read_ncb"]


def _numbers(line: str, count: int, what: str, dat: Path, lineno: int) -> list[float]:
    parts = line.replace(",", " ").split()
    if len(parts) < count:
        raise CeimapInputError(f"line {lineno} ({what}) needs {count} number(s), found {line.strip()!r}", path=dat)
    try:
        return [float(p) for p in parts[:count]]
    except ValueError:
        raise CeimapInputError(f"line {lineno} ({what}) is not numeric: {line.strip()!r}", path=dat) from None


def read_ncb(path, edge: str | None = None, *, kind: str | None = None) -> Stack:
    """Read an aXis2000 ``.ncb`` stack with its ``.dat`` description.

    Parameters
    ----------
    path : path-like
        The ``.ncb`` file (or its ``.dat``; the other is found beside it with the same stem).
    edge : str, optional
        Edge name; else guessed from the energies.
    kind : {"counts", "od"}, optional
        What the values are; else guessed (:func:`segment.io._assemble.guess_kind`), since the format
        does not say.

    Returns
    -------
    Stack
        ``metadata["companions"]`` lists the ``.dat`` file.
    """
    path = Path(path)
    ncb = path.with_suffix(".ncb")
    dat = path.with_suffix(".dat")
    if not ncb.is_file():
        raise CeimapInputError(f"aXis2000 binary {ncb.name} not found beside its description", path=ncb)
    if not dat.is_file():
        raise CeimapInputError(f"aXis2000 description {dat.name} (needed to read the .ncb) not found", path=ncb)
    try:
        lines = [ln for ln in dat.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as exc:
        raise CeimapInputError(f"cannot read: {exc}", path=dat) from None
    if len(lines) < 4:
        raise CeimapInputError(f"too short for an aXis2000 .dat ({len(lines)} non-empty lines)", path=dat)
    nx_f, ny_f, scale = _numbers(lines[0], 3, "nX nY scale", dat, 1)
    x0, x1 = _numbers(lines[1], 2, "x start, x stop", dat, 2)
    y0, y1 = _numbers(lines[2], 2, "y start, y stop", dat, 3)
    (ne_f,) = _numbers(lines[3], 1, "number of energies", dat, 4)
    if min(nx_f, ny_f, ne_f) < 1 or not all(float(v).is_integer() for v in (nx_f, ny_f, ne_f)):
        raise CeimapInputError(f"image size nX={nx_f:g} nY={ny_f:g} nE={ne_f:g} must be positive integers",
                               path=dat)
    nx, ny, ne = int(nx_f), int(ny_f), int(ne_f)
    if scale == 0:
        raise CeimapInputError("scale (line 1) is 0: cannot decode the int16 values", path=dat)
    if len(lines) < 4 + ne:
        raise CeimapInputError(f"lists {len(lines) - 4} energies but says there are {ne}", path=dat)
    energies = [_numbers(lines[4 + i], 1, "energy", dat, 5 + i)[0] for i in range(ne)]
    dwell = None
    tail = lines[4 + ne: 4 + 2 * ne]
    if len(tail) == ne:
        try:
            dwell = [float(t.split()[2]) for t in tail]
        except (IndexError, ValueError):
            dwell = None

    check_array_size((ne, ny, nx), dat, "the stack its line 1 and 4 describe")
    dtype = np.dtype("<f4") if scale < 0 else np.dtype("<i2")
    expected = nx * ny * ne * dtype.itemsize
    actual = ncb.stat().st_size
    if actual != expected:
        raise CeimapInputError(
            f"has {actual} bytes but its .dat describes {nx}×{ny}×{ne} {dtype.name} values = {expected} bytes "
            "(truncated file, or a .dat that belongs to another stack)", path=ncb)
    raw = np.fromfile(ncb, dtype=dtype).reshape(ne, ny, nx)
    data = raw.astype(np.float64) if scale < 0 else raw.astype(np.float64) / scale
    if nx < 2 or ny < 2:
        raise CeimapInputError(f"image is {nx}×{ny} pixels: at least 2×2 needed to know the pixel size", path=dat)
    x = np.linspace(x0, x1, nx)
    y = np.linspace(y0, y1, ny)
    metadata = {"format": "aXis2000 ncb", "scale": scale, "companions": [str(dat)]}
    return assemble_stack(data, energies, path=ncb, x_coords=x, y_coords=y, coords_to_nm=1e3, kind=kind,
                          edge=edge, dwell_ms=dwell, metadata=metadata)
