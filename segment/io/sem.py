"""SEM images: TIFF reader that finds the pixel size, and a writer that records it where tools look.

Pixel size, in order of trust: the value the user gives; the vendor's own metadata (FEI/Thermo
``[Scan] PixelWidth`` in metres, Zeiss ``Image Pixel Size``); OME-XML ``PhysicalSizeX`` (+ unit); the TIFF
resolution tags when their unit is physical (centimetre or inch; 72/96/300 dpi defaults of image programs
are recognised by the absurd pixel size they imply and ignored); the ImageJ description ``unit`` with
unitless resolution tags. A file with none of these is refused with a message asking for
``--sem-pixel-nm``.

FEI/Thermo TIFFs append a data bar below the scanned image; its rows (beyond ``ResolutionY`` of the FEI
metadata) are removed with a warning, so the SEM grid is the scanned field only.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from ..errors import CeimapInputError
from ..lamella import SemImage
from ._assemble import PIXEL_ASPECT_TOLERANCE, length_unit_to_nm
from .tiff import open_tiff, single_image

__all__ = ["read_sem", "write_sem_tiff", "resolution_per_cm"]

MAX_SEM_PIXEL_NM = 1e5
"""Pixel sizes above 100 µm are not SEM calibrations (they come from default dpi values) and are ignored."""

_RGB_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709 luminance, as skimage.color.rgb2gray


def resolution_per_cm(pixel_size_nm: float) -> tuple[int, int]:
    """Pixels per centimetre as the TIFF rational (numerator, denominator) closest to the exact value.

    The denominator is as large as 32-bit fields allow with the numerator still fitting (what current tifffile
    does with a float); older tifffile releases (the newest for Python 3.10) round a float to a much coarser
    fraction (7.3 nm read back as 7.29924 nm), so the writers pass the fraction themselves.

    >>> resolution_per_cm(10.0)
    (1000000, 1)
    """
    per_cm = Fraction(1e7 / float(pixel_size_nm))
    f = per_cm.limit_denominator(min(4294967295, int(4294967295 / abs(per_cm))))
    return f.numerator, f.denominator


def write_sem_tiff(path, image, pixel_size_nm: float, *, compress: bool = True) -> None:
    """Write an SEM image as TIFF with its pixel size in the resolution tags and the ImageJ metadata.

    The resolution tags hold pixels per centimetre (``ResolutionUnit`` = centimetre), which every TIFF
    reader understands; the ImageJ description says ``unit=um`` (ImageJ converts centimetre resolution tags
    to µm when the description says ``um``) and ``spacing`` (the pixel size in µm).

    Parameters
    ----------
    path : path-like
    image : ndarray, shape (n_y, n_x)
        uint8 and uint16 are written as given; other types as float32.
    pixel_size_nm : float
        Pixel size in nm (square pixels).
    compress : bool
        zlib compression.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"an SEM image must be 2-D, got shape {img.shape}")
    if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be positive, got {pixel_size_nm}")
    if img.dtype == bool:
        img = img.astype(np.uint8)
    elif img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    px_per_cm = resolution_per_cm(pixel_size_nm)
    tifffile.imwrite(
        path, img, imagej=True, resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
        metadata={"unit": "um", "spacing": float(pixel_size_nm) / 1e3},
        compression="zlib" if compress else None,
    )


def read_sem(path, pixel_size_nm: float | None = None) -> SemImage:
    """Read an SEM image (TIFF, 8/16-bit or float; RGB is converted to grey) and its pixel size.

    Parameters
    ----------
    path : path-like
        The TIFF file.
    pixel_size_nm : float, optional
        Pixel size in nm given by the user; overrides the file.

    Returns
    -------
    SemImage
        ``image`` as float32 in the file's grey scale, ``pixel_size_source`` one of ``"user"``, ``"fei"``,
        ``"zeiss"``, ``"ome"``, ``"tiff-resolution"``, ``"imagej"``.

    Raises
    ------
    CeimapInputError
        Missing or unreadable file, not a single 2-D image, no pixel size anywhere, non-square pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise CeimapInputError("SEM image not found", path=path)
    if pixel_size_nm is not None:
        try:
            pixel_size_nm = float(pixel_size_nm)
        except (TypeError, ValueError):
            raise CeimapInputError(f"SEM pixel size {pixel_size_nm!r} is not a number", path=path) from None
        if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise CeimapInputError(f"SEM pixel size must be a positive number of nm, got {pixel_size_nm}",
                                   path=path)
    with open_tiff(path, "TIFF image") as (tif, n_pages):
        image = _image(tif, n_pages, path)
        found = None if pixel_size_nm is not None else _pixel_size(tif, path)
        height = _fei_image_height(tif)
    if height is not None and 1 < height < image.shape[0]:
        warnings.warn(f"{path}: FEI/Thermo data bar below the image removed ({image.shape[0] - height} rows)",
                      stacklevel=2)
        image = image[:height]
    if pixel_size_nm is not None:
        size, source = pixel_size_nm, "user"
    elif found is None:
        raise CeimapInputError(
            "the SEM pixel size is not in the file (no calibrated TIFF resolution, ImageJ, OME or FEI "
            "metadata); give it with --sem-pixel-nm (or pixel_size_nm in the [sem] table of LAMELLA.toml)",
            path=path)
    else:
        size, source = found
    return SemImage(image=image, pixel_size_nm=float(size), pixel_size_source=source, source=str(path))


def _image(tif: tifffile.TiffFile, n_pages: int, path) -> np.ndarray:
    """The SEM image: the file's first page (the scanned image; later pages may be thumbnails)."""
    page = tif.pages.first
    img = single_image(tif, n_pages, path, "SEM image", bytes_per_value=max(4, np.dtype(page.dtype).itemsize))
    axes = page.axes
    img = np.asarray(img)
    if img.ndim == 3 and axes.endswith("S") and img.shape[-1] in (3, 4):
        rgb = img[..., :3].astype(np.float64)
        if np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]):
            img = img[..., 0]
        else:
            warnings.warn(f"{path}: RGB SEM image converted to grey (BT.709 luminance)", stacklevel=3)
            img = rgb @ _RGB_WEIGHTS
    elif img.ndim == 3 and axes.startswith("S") and img.shape[0] in (3, 4):
        rgb = np.moveaxis(img[:3], 0, -1).astype(np.float64)
        warnings.warn(f"{path}: RGB SEM image converted to grey (BT.709 luminance)", stacklevel=3)
        img = rgb @ _RGB_WEIGHTS
    img = np.squeeze(img) if img.ndim > 2 else img
    if img.ndim != 2:
        raise CeimapInputError(
            f"an SEM image must be one 2-D grey image; this TIFF holds an array of shape {img.shape} "
            f"(axes {axes})", path=path)
    if not (np.issubdtype(img.dtype, np.number) or img.dtype == bool):
        raise CeimapInputError(f"image values are not numbers ({img.dtype})", path=path)
    if min(img.shape) < 2:
        raise CeimapInputError(f"SEM image is too small ({img.shape})", path=path)
    return img.astype(np.float32)


def _check_square(sx, sy, source, path):
    if sy is not None and abs(sx - sy) > PIXEL_ASPECT_TOLERANCE * max(sx, sy):
        raise CeimapInputError(
            f"x and y pixel sizes in the {source} metadata differ ({sx:.4g} nm vs {sy:.4g} nm); ceimap needs "
            "square SEM pixels: resample the image or give --sem-pixel-nm", path=path)
    return sx if sy is None else 0.5 * (sx + sy)


def _plausible(size) -> bool:
    return size is not None and np.isfinite(size) and 0 < size < MAX_SEM_PIXEL_NM


def _pixel_size(tif: tifffile.TiffFile, path) -> tuple[float, str] | None:
    """Pixel size (nm) and its source from the file's metadata, or None."""
    page = tif.pages[0]
    for finder in (_from_fei, _from_zeiss, _from_ome, _from_resolution, _from_imagej):
        try:
            got = finder(tif, page)
        except CeimapInputError:
            raise
        except Exception:  # malformed metadata of one kind must not hide another kind
            got = None
        if got is None:
            continue
        (sx, sy), source = got
        if not _plausible(sx) or (sy is not None and not _plausible(sy)):
            continue
        return _check_square(sx, sy, source, path), source
    return None


def _from_fei(tif, page):
    md = _fei_metadata(tif)
    if not md:
        return None
    for section in ("Scan", "EScan", "Image"):
        sec = md.get(section) or {}
        if "PixelWidth" in sec:
            sx = float(sec["PixelWidth"]) * 1e9
            sy = float(sec["PixelHeight"]) * 1e9 if "PixelHeight" in sec else None
            return (sx, sy), "fei"
    return None


def _fei_metadata(tif) -> dict | None:
    md = tif.fei_metadata if hasattr(tif, "fei_metadata") else None
    if not md:
        for tag in tif.pages[0].tags.values():  # text FEI header in an unknown tag
            if isinstance(tag.value, str) and "[Scan]" in tag.value:
                return _parse_ini(tag.value)
    return md or None


def _fei_image_height(tif) -> int | None:
    """Rows of the scanned image in an FEI/Thermo TIFF (the file adds a data bar below them), or None."""
    try:
        md = _fei_metadata(tif)
        if not md:
            return None
        for section in ("Image", "Scan", "EScan"):
            sec = md.get(section) or {}
            if "ResolutionY" in sec:
                return int(float(sec["ResolutionY"]))
    except Exception:
        return None
    return None


def _parse_ini(text: str) -> dict:
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
        elif "=" in line and section is not None:
            key, value = line.split("=", 1)
            section[key.strip()] = value.strip()
    return out


def _from_zeiss(tif, page):
    md = tif.sem_metadata if hasattr(tif, "sem_metadata") else None
    if not md:
        return None
    value = md.get("ap_image_pixel_size") or md.get("ap_pixel_size")
    if isinstance(value, (tuple, list)) and len(value) >= 3:  # ('Image Pixel Size', 2.5, 'nm')
        factor = length_unit_to_nm(value[2])
        if factor is not None:
            return (float(value[1]) * factor, None), "zeiss"
    return None


def _from_ome(tif, page):
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return None
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None

    def size(axis):
        if f"PhysicalSize{axis}" not in pixels.attrib:
            return None
        factor = length_unit_to_nm(pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm"))
        if factor is None:
            return None
        return float(pixels.attrib[f"PhysicalSize{axis}"]) * factor

    sx = size("X")
    if sx is None:
        return None
    return (sx, size("Y")), "ome"


def _resolution(page):
    tags = page.tags
    if "XResolution" not in tags:
        return None
    def value(name):
        if name not in tags:
            return None
        num, den = tags[name].value
        return num / den if den else None
    rx, ry = value("XResolution"), value("YResolution")
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None  # TIFF default: inch
    return rx, ry, unit


def _from_resolution(tif, page):
    res = _resolution(page)
    if res is None:
        return None
    rx, ry, unit = res
    if unit is None:
        if tif.is_imagej and (tif.imagej_metadata or {}).get("unit"):
            return None  # ImageJ's resolution is per its own unit (see _from_imagej)
        unit = 2  # the TIFF default
    per = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}.get(unit)  # nm per inch / cm / mm / µm
    if per is None or not rx:
        return None
    return (per / rx, per / ry if ry else None), "tiff-resolution"


def _from_imagej(tif, page):
    md = tif.imagej_metadata
    if not md or "unit" not in md:
        return None
    factor = length_unit_to_nm(md["unit"])
    if factor is None:
        return None
    res = _resolution(page)
    if res is not None and res[0] and res[2] in (1, None):
        rx, ry, _ = res
        return (factor / rx, factor / ry if ry else None), "imagej"
    return None
