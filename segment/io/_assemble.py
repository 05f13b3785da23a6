"""Checks and conversions shared by every STXM stack reader: one place for the rules readers apply.

Each format reader extracts raw arrays (frames, energies, axis coordinates, dwell, monitor) and hands them
to :func:`assemble_stack`, which validates them against the physics and returns a :class:`Stack`.
"""

from __future__ import annotations

import os

import numpy as np

from ..edges import EDGES, edge_from_energies
from ..errors import CeimapInputError
from ..stack import Stack

PIXEL_ASPECT_TOLERANCE = 0.01
"""Largest relative difference between the x and y pixel steps accepted (square pixels are assumed)."""

OD_MAX = 8.0
"""Optical densities above this are not measurable in STXM (no photons pass), see :func:`guess_kind`."""

MIN_STXM_ENERGY_EV = 30.0
"""Lowest photon energy an STXM stack can be recorded at (soft X-rays); below it the energies are not in eV."""

FALLBACK_MEMORY_BYTES = 64 * 2**30
"""Memory assumed when the machine does not say how much it has (see :func:`memory_limit_bytes`)."""


def memory_limit_bytes() -> int:
    """Physical memory of this machine in bytes (:data:`FALLBACK_MEMORY_BYTES` when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY_BYTES


def _bytes_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024.0
    return f"{n:.3g} EiB"  # pragma: no cover


def check_array_size(shape, path, what: str = "image data", bytes_per_value: int = 8) -> None:
    """Refuse, before anything is allocated, an array too large for this machine's memory.

    A header (TIFF tags, HDF5 dataspace, ``.dat`` or ``.hdr`` text) can claim any size; a stack is held as
    float64 (``bytes_per_value`` 8) while it is processed. The limit is the machine's physical memory.

    Raises
    ------
    CeimapInputError
        With the shape and the memory it would need, e.g. for a header claiming 10⁶ × 10⁶ pixels.
    """
    dims = [int(d) for d in shape]
    n_values = 1
    for d in dims:
        n_values *= max(d, 0)
    need = n_values * int(bytes_per_value)
    limit = memory_limit_bytes()
    if need > limit:
        raise CeimapInputError(
            f"{what} of shape {' × '.join(str(d) for d in dims)} would need about {_bytes_text(need)} of memory "
            f"as {8 * int(bytes_per_value)}-bit values, more than this machine has ({_bytes_text(limit)}): "
            "refused (a corrupt header, or crop / bin the data first)", path=path)


_LENGTH_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "micrometers": 1e3, "micrometres": 1e3, "mum": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "a": 0.1, "å": 0.1, "angstrom": 0.1, "ångström": 0.1,
    "pm": 1e-3,
    "inch": 2.54e7, "in": 2.54e7,
}


def length_unit_to_nm(unit, default: float | None = None) -> float | None:
    """Factor converting a length in ``unit`` to nm, or ``default`` when the unit is empty or unknown.

    Accepts str or bytes (UTF-8 or Latin-1, so both encodings of "µm" work), in any case.
    """
    if isinstance(unit, (bytes, np.bytes_)):
        try:
            unit = bytes(unit).decode("utf-8")
        except UnicodeDecodeError:
            unit = bytes(unit).decode("latin-1")
    if unit is None:
        return default
    u = str(unit).strip().lower().replace("\u00b5", "µ").replace("\u03bc", "µ")
    if u.startswith("\\u00b5"):
        u = "µ" + u[6:]
    return _LENGTH_TO_NM.get(u, default)


def axis_step_nm(coords, to_nm: float) -> float | None:
    """Mean pixel step (nm, positive) of a 1-D axis of stage coordinates, or None with fewer than 2 points."""
    c = np.asarray(coords, dtype=float).ravel()
    if c.size < 2:
        return None
    # The mean step over the whole span: robust to positions rounded in the file (0.0271, 0.0272, …).
    return float(abs(c[-1] - c[0]) / (c.size - 1) * to_nm)


def guess_kind(data: np.ndarray) -> str:
    """Whether stack values look like optical density or transmitted counts, from the values alone.

    Used only when the file does not say. The rule: counts are non-negative photon (or detector) counts
    and are integers, or large; optical densities are small non-integral numbers (OD above ~8 is not
    measurable, and at least some values are fractional). So the data are called ``"od"`` when they are
    floating point, fewer than half of the finite values are integers, the largest finite absolute value
    is below :data:`OD_MAX` and the median absolute value is below 3; otherwise ``"counts"``.

    Parameters
    ----------
    data : ndarray
        The stack values as stored in the file.

    Returns
    -------
    {"counts", "od"}
    """
    if not np.issubdtype(data.dtype, np.floating):
        return "counts"
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return "counts"
    integral_fraction = float(np.mean(finite == np.round(finite)))
    if integral_fraction >= 0.5:
        return "counts"
    if float(np.max(np.abs(finite))) >= OD_MAX or float(np.median(np.abs(finite))) >= 3.0:
        return "counts"
    return "od"


def assemble_stack(
    data,
    energies_ev,
    *,
    path,
    x_coords=None,
    y_coords=None,
    coords_to_nm: float = 1e3,
    pixel_size_nm: float | None = None,
    kind: str | None = None,
    edge: str | None = None,
    dwell_ms=None,
    monitor=None,
    monitor_kind: str | None = None,
    metadata: dict | None = None,
) -> Stack:
    """Validate raw arrays read from a file and build a :class:`Stack`.

    Parameters
    ----------
    data : array_like, shape (n_energy, n_y, n_x)
        Frames in file order.
    energies_ev : array_like, shape (n_energy,)
        Energy of each frame in file order (eV). Frames are sorted to increasing energy; duplicated
        energies are refused.
    path : path-like
        The file, named in every error message.
    x_coords, y_coords : array_like, optional
        Stage coordinates of the columns and rows (in the unit given by ``coords_to_nm``). They give the
        pixel size and the origin. An axis whose coordinates decrease is flipped so that coordinates
        increase with the index (recorded in ``metadata["flipped_axes"]``).
    coords_to_nm : float
        Factor from the coordinate unit to nm (1000 for µm).
    pixel_size_nm : float, optional
        Pixel size when the file gives it directly instead of coordinates.
    kind : {"counts", "od"}, optional
        What the data are, when the file says; else guessed with :func:`guess_kind`.
    edge : str, optional
        Edge name; else :func:`segment.edges.edge_from_energies`.
    dwell_ms : array_like, optional
        Dwell per pixel of each frame in ms (scalar or per frame).
    monitor : array_like, optional
        Monitor values broadcastable to ``data`` (frames in file order).
    monitor_kind : {"i0", "ring_current"}, optional
    metadata : dict, optional

    Returns
    -------
    Stack

    Raises
    ------
    CeimapInputError
        Data not 3-D or not numbers; energies not matching the frames, not finite, not positive, below
        :data:`MIN_STXM_ENERGY_EV` (keV written as eV is named as such) or duplicated; NaN or infinite image
        values; a counts frame with no count above 0 (beam off, failed frame); axis positions not matching
        the image, not finite, not changing, or not square; a given edge contradicted by the energies.
    """
    metadata = dict(metadata or {})
    data = np.asarray(data)
    if data.ndim != 3 or min(data.shape) < 1:
        raise CeimapInputError(
            f"image data must have shape (n_energy, n_y, n_x), found shape {data.shape}", path=path)
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise CeimapInputError(f"image data are not numbers (dtype {data.dtype})", path=path)
    n_e, ny, nx = data.shape
    try:
        energies = np.asarray(energies_ev, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise CeimapInputError(f"energies are not numbers ({exc})", path=path) from None
    if energies.size != n_e:
        raise CeimapInputError(
            f"{energies.size} energies listed for {n_e} image frame(s)", path=path)
    if not np.all(np.isfinite(energies)):
        raise CeimapInputError("energies contain NaN or infinite values", path=path)
    if np.any(energies <= 0):
        raise CeimapInputError(f"energies must be positive eV, found {energies.min():g}", path=path)
    if energies.max() < MIN_STXM_ENERGY_EV:
        as_kev = edge_from_energies(energies * 1e3)
        hint = (f": they look like keV (×1000 they span the {as_kev} edge); write them in eV"
                if as_kev is not None else "")
        raise CeimapInputError(
            f"energies {energies.min():g}–{energies.max():g} are below {MIN_STXM_ENERGY_EV:g} eV, not soft X-ray "
            f"photon energies in eV{hint}", path=path)
    bad = ~np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else None
    if bad is not None and bad.any():
        k, y, x = (int(i) for i in np.argwhere(bad)[0])
        raise CeimapInputError(
            f"{int(bad.sum())} image value(s) are NaN or infinite (the first in frame {k} at {energies[k]:g} eV, "
            f"row {y}, column {x}): a failed or aborted acquisition? Crop the frames or pixels out first",
            path=path)

    if kind is None:
        kind = guess_kind(data)
        metadata.setdefault("kind_source", "guessed from values")
    else:
        metadata.setdefault("kind_source", "file")
    if kind not in ("counts", "od"):
        raise CeimapInputError(f"unknown data kind {kind!r} (expected 'counts' or 'od')", path=path)

    if kind == "counts":
        per_frame = data.reshape(n_e, -1)
        empty = np.nonzero(np.all(per_frame <= 0, axis=1))[0]
        if empty.size:
            where = ", ".join(f"{energies[k]:g} eV" for k in empty[:5]) + ("…" if empty.size > 5 else "")
            raise CeimapInputError(
                f"{empty.size} of {n_e} frame(s) hold no counts (every value ≤ 0: {where}); the beam was off or "
                "the frame failed: remove those frames", path=path)

    values = data.astype(np.float64)

    # Pixel size and origin from the axis coordinates.
    origin_x_nm = origin_y_nm = 0.0
    flipped = []
    if x_coords is not None or y_coords is not None:
        steps = {}
        for name, coords, n in (("x", x_coords, nx), ("y", y_coords, ny)):
            if coords is None:
                continue
            c = np.asarray(coords, dtype=float).ravel()
            if c.size != n:
                raise CeimapInputError(
                    f"sample_{name} has {c.size} positions for {n} image {'columns' if name == 'x' else 'rows'}",
                    path=path)
            if not np.all(np.isfinite(c)):
                raise CeimapInputError(f"sample_{name} positions contain NaN", path=path)
            if c.size >= 2 and np.median(np.diff(c)) < 0:
                c = c[::-1]
                values = values[:, :, ::-1] if name == "x" else values[:, ::-1, :]
                flipped.append(name)
            steps[name] = axis_step_nm(c, coords_to_nm)
            if name == "x":
                origin_x_nm = float(c[0] * coords_to_nm)
            else:
                origin_y_nm = float(c[0] * coords_to_nm)
        sx, sy = steps.get("x"), steps.get("y")
        if sx is not None and sy is not None:
            if sx <= 0 or sy <= 0:
                raise CeimapInputError(
                    f"pixel step is zero (x {sx:g} nm, y {sy:g} nm): positions do not change", path=path)
            if abs(sx - sy) > PIXEL_ASPECT_TOLERANCE * max(sx, sy):
                raise CeimapInputError(
                    f"x and y pixel sizes differ ({sx:.4g} nm vs {sy:.4g} nm, more than "
                    f"{PIXEL_ASPECT_TOLERANCE:.0%}); ceimap needs square pixels: resample the stack first",
                    path=path)
            pixel_size_nm = 0.5 * (sx + sy)
        elif sx is not None or sy is not None:
            pixel_size_nm = sx if sx is not None else sy
    if flipped:
        metadata["flipped_axes"] = flipped
    if pixel_size_nm is None or not np.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        raise CeimapInputError(
            "cannot determine the pixel size (no usable sample_x/sample_y positions)", path=path)

    if dwell_ms is not None:
        dwell = np.asarray(dwell_ms, dtype=float).ravel()
        if dwell.size == 1:
            dwell = np.full(n_e, float(dwell[0]))
        elif dwell.size != n_e:
            raise CeimapInputError(f"{dwell.size} dwell times listed for {n_e} frames", path=path)
    else:
        dwell = None

    mon = None
    if monitor is not None:
        mon = np.asarray(monitor, dtype=float)
        if mon.ndim == 0:
            mon = mon.reshape(1, 1, 1)
        elif mon.ndim == 1:
            mon = mon.reshape(-1, 1, 1)
        elif mon.ndim == 2:
            mon = mon[np.newaxis]
        try:
            np.broadcast_shapes(mon.shape, data.shape)
        except ValueError:
            raise CeimapInputError(
                f"monitor of shape {mon.shape} does not match the image data {data.shape}", path=path) from None
        if "x" in flipped and mon.shape[2] > 1:
            mon = mon[:, :, ::-1]
        if "y" in flipped and mon.shape[1] > 1:
            mon = mon[:, ::-1, :]
        # A monitor that is constant within every frame is kept as one value per frame.
        if mon.shape[1:] != (1, 1):
            flat = mon.reshape(mon.shape[0], -1)
            if np.all(flat == flat[:, :1]):
                mon = flat[:, :1].reshape(mon.shape[0], 1, 1)
        if mon.shape[0] == 1 and n_e > 1:
            mon = np.broadcast_to(mon, (n_e,) + mon.shape[1:]).copy()

    # Energies strictly increasing: sort frames, refuse duplicates.
    order = np.argsort(energies, kind="stable")
    if np.any(order != np.arange(n_e)):
        metadata["frames_sorted_by_energy"] = True
        energies = energies[order]
        values = values[order]
        if dwell is not None:
            dwell = dwell[order]
        if mon is not None:
            mon = mon[order]
    dup = np.nonzero(np.diff(energies) <= 0)[0]
    if dup.size:
        raise CeimapInputError(
            f"energy {energies[dup[0]]:g} eV appears more than once; energies must be distinct", path=path)

    guessed = edge_from_energies(energies)
    if edge is None:
        edge = guessed
        metadata.setdefault("edge_source", "energies" if edge is not None else "unknown")
    else:
        if edge in EDGES and guessed is not None and guessed != edge and n_e > 1:
            raise CeimapInputError(
                f"given as the {edge} edge, but its energies ({energies[0]:g}–{energies[-1]:g} eV) span the "
                f"{guessed} edge (files swapped?)", path=path)
        metadata.setdefault("edge_source", "given")

    return Stack(
        data=np.ascontiguousarray(values),
        energies_ev=energies,
        pixel_size_nm=float(pixel_size_nm),
        kind=kind,
        edge=edge,
        origin_x_nm=origin_x_nm,
        origin_y_nm=origin_y_nm,
        dwell_ms=dwell,
        monitor=mon,
        monitor_kind=monitor_kind if mon is not None else None,
        source=str(path),
        metadata=metadata,
    )
