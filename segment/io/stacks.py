"""``read_stack``: one entry point for every STXM stack format, chosen by content and extension."""

from __future__ import annotations

from pathlib import Path

from ..errors import CeimapInputError
from ..stack import Stack
from .nxstxm import is_hdf5, read_nxstxm

__all__ = ["read_stack", "STACK_FORMATS"]

STACK_FORMATS = {
    "NXstxm (HDF5)": (".hdf5", ".h5", ".nxs", ".stxm", ".hdf"),
    "aXis2000 .ncb + .dat": (".ncb",),
    "ALS .hdr + .xim": (".hdr",),
    "multipage TIFF + energy list (NAME.txt or NAME.energies.txt)": (".tif", ".tiff"),
}
"""Formats :func:`read_stack` understands, with their extensions."""


def read_stack(path, edge: str | None = None, **kwargs) -> Stack:
    """Read an STXM image stack from any supported format.

    The format is recognised by content first (an HDF5 signature means NeXus NXstxm, whatever the
    extension) and then by extension: ``.hdf5/.h5/.nxs/.stxm/.hdf`` NXstxm, ``.ncb`` (or its ``.dat``)
    aXis2000, ``.hdr`` (or one of its ``.xim`` frames) ALS, ``.tif/.tiff`` multipage TIFF with a sidecar
    energy list.

    Parameters
    ----------
    path : path-like
        The stack file.
    edge : str, optional
        Edge name (``"Ni-L"``, ``"S-L"`` …); default: guessed from the energies
        (:func:`segment.edges.edge_from_energies`), None when no known edge fits.
    **kwargs
        Format-specific options: ``entry``, ``detector`` (NXstxm); ``channel`` (ALS); ``kind``
        (``"counts"`` or ``"od"``, all formats) to override what the data are.

    Returns
    -------
    Stack
        ``data`` float64 (n_energy, n_y, n_x) with strictly increasing ``energies_ev``.

    Raises
    ------
    CeimapInputError
        Unknown format, missing companion files, or any problem in the file (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise CeimapInputError("STXM stack file not found", path=path)
    if path.is_dir():
        raise CeimapInputError("is a folder; give the stack file itself", path=path)
    ext = path.suffix.lower()
    if is_hdf5(path):
        return read_nxstxm(path, edge, **_only(kwargs, "entry", "detector", "kind"))
    if ext in STACK_FORMATS["NXstxm (HDF5)"]:
        with open(path, "rb") as fh:
            if fh.read(4) == b"\x0e\x03\x13\x01":
                raise CeimapInputError("is an HDF4 file, not HDF5 NeXus; convert it to HDF5 (e.g. with h4toh5) "
                                       "or export the stack from aXis2000 as .ncb", path=path)
        raise CeimapInputError("has an HDF5 extension but is not an HDF5 file (truncated or corrupt?)", path=path)
    if ext in (".ncb", ".dat"):
        from .axis2000 import read_ncb
        return read_ncb(path, edge, **_only(kwargs, "kind"))
    if ext in (".hdr", ".xim"):
        from .als import read_als
        return read_als(path, edge, **_only(kwargs, "channel", "kind"))
    if ext in (".tif", ".tiff"):
        from .tiffstack import read_tiff_stack
        return read_tiff_stack(path, edge, **_only(kwargs, "kind", "pixel_size_nm"))
    known = "; ".join(f"{name} ({', '.join(exts)})" for name, exts in STACK_FORMATS.items())
    raise CeimapInputError(f"unknown STXM stack format '{ext or path.name}'; ceimap reads: {known}", path=path)


def _only(kwargs: dict, *names: str) -> dict:
    unknown = set(kwargs) - set(names)
    if unknown:
        raise TypeError(f"option(s) {sorted(unknown)} do not apply to this format (accepted: {list(names)})")
    return kwargs
