"""Multipage TIFF stacks with a sidecar energy list (``NAME.energies.txt`` or ``NAME.txt``, one eV a line).

The pixel size comes from the ``pixel_size_nm`` argument or the TIFF's own calibration (resolution tags,
ImageJ or OME metadata, as for SEM images). :func:`write_tiff_stack` writes float32 pages with the pixel
size in the resolution tags, ImageJ slice labels with the energies, and the sidecar list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ..errors import CeimapInputError
from ..stack import Stack
from ._assemble import assemble_stack
from .sem import resolution_per_cm
from .tiff import check_page_data, image_count, open_tiff

__all__ = ["read_tiff_stack", "write_tiff_stack", "energy_sidecar"]


def energy_sidecar(path) -> Path | None:
    """The energy list belonging to a TIFF stack: ``NAME.energies.txt``, else ``NAME.txt``, else None."""
    path = Path(path)
    stems = [path.with_suffix("")]
    if stems[0].suffix.lower() == ".ome":
        stems.append(stems[0].with_suffix(""))
    for stem in stems:
        for suffix in (".energies.txt", ".txt"):
            candidate = stem.with_name(stem.name + suffix)
            if candidate.is_file():
                return candidate
    return None


def _read_energies(sidecar: Path) -> np.ndarray:
    values = []
    try:
        text = sidecar.read_text(errors="replace")
    except OSError as exc:
        raise CeimapInputError(f"cannot read the energy list: {exc}", path=sidecar) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        first = line.replace(",", " ").split()[0]
        try:
            values.append(float(first))
        except ValueError:
            raise CeimapInputError(f"line {lineno} is not an energy in eV: {line!r}", path=sidecar) from None
    if not values:
        raise CeimapInputError("the energy list is empty", path=sidecar)
    return np.array(values)


def read_tiff_stack(path, edge: str | None = None, *, kind: str | None = None,
                    pixel_size_nm: float | None = None) -> Stack:
    """Read a multipage TIFF stack and its sidecar energy list.

    Parameters
    ----------
    path : path-like
        The TIFF (one page per energy, or one 3-D series).
    edge : str, optional
        Edge name; else guessed from the energies.
    kind : {"counts", "od"}, optional
        What the values are; default from the ImageJ ``Info`` line ``kind=…`` written by
        :func:`write_tiff_stack`, else guessed from the values.
    pixel_size_nm : float, optional
        Pixel size; default from the TIFF's calibration.

    Returns
    -------
    Stack
        ``metadata["companions"]`` names the energy list.
    """
    from .sem import _pixel_size  # the same calibration rules as SEM images

    path = Path(path)
    if not path.is_file():
        raise CeimapInputError("TIFF stack not found", path=path)
    sidecar = energy_sidecar(path)
    if sidecar is None:
        stem = path.with_suffix("").name
        raise CeimapInputError(
            f"no energy list beside the TIFF stack: expected {stem}.energies.txt or {stem}.txt "
            "(one energy in eV per line)", path=path)
    energies = _read_energies(sidecar)
    with open_tiff(path, "TIFF stack") as (tif, n_pages):
        n_images = image_count(tif, n_pages)
        if n_images not in (1, energies.size):
            raise CeimapInputError(
                f"has {n_images} frame(s) but {sidecar.name} lists {energies.size} energies", path=path)
        if not tif.series:
            raise CeimapInputError("TIFF holds no image", path=path)
        series = tif.series[0]
        check_page_data(tif.pages.first, path, "TIFF stack", shape=series.shape)
        data = series.asarray()
        found = None if pixel_size_nm is not None else _pixel_size(tif, path)
        info = (tif.imagej_metadata or {}).get("Info", "") if tif.is_imagej else ""
    data = np.asarray(data)
    if data.ndim == 3 and series.axes.endswith("S"):  # frames stored as colour samples of one page
        data = np.moveaxis(data, -1, 0)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise CeimapInputError(
            f"expected one grey image per energy, found an array of shape {data.shape} (axes {series.axes})",
            path=path)
    if data.shape[0] != energies.size:
        raise CeimapInputError(
            f"has {data.shape[0]} frame(s) but {sidecar.name} lists {energies.size} energies", path=path)
    if pixel_size_nm is None:
        if found is None:
            raise CeimapInputError(
                "the pixel size is not in the TIFF (no resolution tags, ImageJ or OME calibration); "
                "give it with pixel_size_nm", path=path)
        pixel_size_nm = found[0]
    if kind is None:
        for line in str(info).splitlines():
            if line.strip().startswith("kind="):
                kind = line.split("=", 1)[1].strip() or None
    metadata = {"format": "TIFF stack", "companions": [str(sidecar)]}
    return assemble_stack(data, energies, path=path, pixel_size_nm=float(pixel_size_nm), kind=kind,
                          edge=edge, metadata=metadata)


def write_tiff_stack(path, stack: Stack) -> Path:
    """Write a stack as a multipage float32 TIFF and its energy list ``NAME.energies.txt``.

    The pixel size goes in the resolution tags (pixels per centimetre) with ImageJ ``unit=um``, each page
    gets the ImageJ slice label ``"<energy> eV"``, and the ImageJ ``Info`` holds ``kind=`` and ``edge=``.

    Parameters
    ----------
    path : path-like
        The TIFF to write.
    stack : Stack

    Returns
    -------
    Path
        The energy list written beside the TIFF.
    """
    path = Path(path)
    data = np.asarray(stack.data, dtype=np.float32)
    px_per_cm = resolution_per_cm(stack.pixel_size_nm)
    energies = np.asarray(stack.energies_ev, dtype=float)
    info = f"kind={stack.kind}\nedge={stack.edge or ''}\n"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
        metadata={"axes": "ZYX", "unit": "um", "Labels": [f"{e:.4f} eV" for e in energies], "Info": info},
        compression="zlib")
    sidecar = path.with_suffix("").with_name(path.with_suffix("").name + ".energies.txt")
    sidecar.write_text("".join(f"{e:.6f}\n" for e in energies))
    return sidecar
