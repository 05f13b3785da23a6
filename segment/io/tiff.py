"""Opening TIFF files within bounds the file itself sets.

tifffile follows a file's chain of image file directories (IFDs, one per page) wherever it points and logs
every problem it meets; on a corrupted chain that points back to an earlier page it walks the same pages
without end, logging each time (a 1.7 kB file, ``shared/badfiles/sem_page_loop.tif``, made a reader run for
ever and fill memory with log records). So before tifffile reads anything, :func:`tiff_page_offsets` walks
the chain itself: every IFD inside the file, none visited twice, at most as many as the file has room for.
:func:`open_tiff` then opens the file with tifffile's log messages gathered into one warning (or into the
error when the file is refused), and :func:`check_page_data` checks a page's claimed size against the bytes
the file stores for it before any array is allocated.

TIFF layout used here (TIFF 6.0, BigTIFF): an 8-byte header (``II`` or ``MM``, 42, offset of the first
IFD) or a 16-byte BigTIFF header (``II``/``MM``, 43, 8, 0, 8-byte offset); an IFD is a tag count (2 or 8
bytes), that many 12- or 20-byte entries, and the offset of the next IFD (4 or 8 bytes; 0 ends the chain).
"""

from __future__ import annotations

import logging
import struct
import threading
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import CeimapInputError
from ._assemble import check_array_size

__all__ = ["tiff_page_offsets", "open_tiff", "check_page_data", "single_image", "read_tiff_image",
           "library_messages"]

MAX_TAGS_PER_IFD = 4096
"""More tags than this in one IFD is corruption (tifffile's own limit; real files have a few dozen)."""

MAX_EXPANSION = {
    1: 1.0,  # no compression: stored bytes are the values
    32773: 64.0,  # PackBits: a 2-byte run codes at most 128 bytes
    8: 1032.0,  # Deflate (zlib): its largest possible expansion
    32946: 1032.0,  # Deflate, old code
    50013: 1032.0,  # Deflate with predictor (PixTiff)
    5: 1400.0,  # LZW: codes of at least 9 bits, strings growing by one byte per code, table reset at 4096
}
"""Largest factor by which each TIFF compression can expand its stored bytes (by TIFF compression code)."""

LAYOUT_TAGS = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression",
               262: "PhotometricInterpretation", 273: "StripOffsets", 277: "SamplesPerPixel",
               278: "RowsPerStrip", 279: "StripByteCounts", 284: "PlanarConfiguration", 317: "Predictor",
               322: "TileWidth", 323: "TileLength", 324: "TileOffsets", 325: "TileByteCounts",
               338: "ExtraSamples", 339: "SampleFormat"}
"""The tags that say how a page's image is stored: a page with one of them corrupted cannot be decoded."""

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
               18: 8}
"""Bytes per value of each TIFF field type (TIFF 6.0 types 1–13, BigTIFF 16–18)."""

OTHER_CODEC_EXPANSION = 1e5
"""Bound for compressions without a known limit (JPEG, LZMA, Zstandard …): generous, still finite."""


def _refuse(problem: str, path, what: str) -> CeimapInputError:
    return CeimapInputError(f"not a readable {what}: {problem}", path=path)


def tiff_page_offsets(path, what: str = "TIFF") -> tuple[list[int], str | None]:
    """Walk the IFD chain of a TIFF file with bounds: offsets of its pages, and what ended the chain early.

    Every IFD must lie inside the file and none may be visited twice, so the walk takes at most as many steps
    as the file has room for IFDs. The tags saying how each page's image is stored (:data:`LAYOUT_TAGS`)
    must have a valid field type and their values must lie inside the file. A chain that loops, or a first
    IFD that is missing, truncated, holds an impossible number of tags or corrupted layout tags, is
    corruption: the file is refused. A later IFD with such a problem ends the
    chain there (as tifffile does), and the problem is returned so that the caller can say so.

    Parameters
    ----------
    path : path-like
        The TIFF file.
    what : str
        What the file is, for messages.

    Returns
    -------
    offsets : list of int
        Byte offset of each page's IFD, in chain order (at least one).
    problem : str or None
        Why the chain ended before a zero offset, or None when it ended normally.

    Raises
    ------
    CeimapInputError
        Not a TIFF (no ``II``/``MM`` header with version 42 or 43), a loop in the IFD chain, or an unreadable
        first IFD.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        fh = open(path, "rb")
    except OSError as exc:
        raise CeimapInputError(f"cannot open: {exc.strerror or exc}", path=path) from None
    with fh:
        head = fh.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise _refuse("no TIFF header (the file does not start with II or MM)", path, what)
        order = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 42:
            count_fmt, entry_size, offset_fmt, header_size = "H", 12, "I", 8
            first = struct.unpack(order + "I", head[4:8])[0]
        elif version == 43 and len(head) == 16:
            if struct.unpack(order + "HH", head[4:8]) != (8, 0):
                raise _refuse("BigTIFF header with an offset size other than 8 bytes", path, what)
            count_fmt, entry_size, offset_fmt, header_size = "Q", 20, "Q", 16
            first = struct.unpack(order + "Q", head[8:16])[0]
        else:
            raise _refuse(f"unknown TIFF version {version} (expected 42, or 43 for BigTIFF)", path, what)
        count_size = struct.calcsize(count_fmt)
        offset_size = struct.calcsize(offset_fmt)

        offsets: list[int] = []
        seen: set[int] = set()
        offset = first
        while offset != 0:
            page = len(offsets)
            problem = None
            if offset in seen:
                raise _refuse(f"its chain of image directories loops back to page {offsets.index(offset)} "
                              f"(offset {offset}) after page {page - 1}: a corrupted file", path, what)
            if offset < header_size or offset + count_size + offset_size > size:
                problem = f"page {page} starts at offset {offset}, outside the {size}-byte file"
            else:
                fh.seek(offset)
                n_tags = struct.unpack(order + count_fmt, fh.read(count_size))[0]
                end = offset + count_size + n_tags * entry_size + offset_size
                if n_tags == 0 or n_tags > MAX_TAGS_PER_IFD:
                    problem = f"page {page} (offset {offset}) claims {n_tags} tags"
                elif end > size:
                    problem = f"page {page} (offset {offset}) with {n_tags} tags runs past the end of the file"
            if problem is None:
                fh.seek(offset + count_size)
                problem = _layout_problem(fh.read(n_tags * entry_size), order, entry_size, offset_size, size)
                if problem is not None:
                    problem = f"page {page} (offset {offset}): {problem}"
            if problem is not None:
                if not offsets:
                    raise _refuse(problem + " (truncated or corrupted file)", path, what)
                return offsets, problem
            offsets.append(offset)
            seen.add(offset)
            fh.seek(end - offset_size)
            offset = struct.unpack(order + offset_fmt, fh.read(offset_size))[0]
    if not offsets:
        raise _refuse("the header points to no image directory (offset 0)", path, what)
    return offsets, None


def _layout_problem(entries: bytes, order: str, entry_size: int, value_size: int, file_size: int) -> str | None:
    """What is wrong with the layout tags (:data:`LAYOUT_TAGS`) among an IFD's entries, or None."""
    count_fmt = "I" if entry_size == 12 else "Q"
    for i in range(0, len(entries) - entry_size + 1, entry_size):
        code, kind = struct.unpack(order + "HH", entries[i: i + 4])
        if code not in LAYOUT_TAGS:
            continue
        name = f"tag {code} ({LAYOUT_TAGS[code]})"
        if kind not in _TYPE_SIZES:
            return f"{name} has the invalid field type {kind}"
        count = struct.unpack(order + count_fmt, entries[i + 4: i + 4 + (entry_size - 4 - value_size)])[0]
        n_bytes = count * _TYPE_SIZES[kind]
        if count == 0 or n_bytes > file_size:
            return f"{name} claims {count} values"
        if n_bytes > value_size:
            where = struct.unpack(order + count_fmt, entries[i + entry_size - value_size: i + entry_size])[0]
            if where + n_bytes > file_size:
                return f"{name} has its values at bytes {where}–{where + n_bytes}, beyond the end of the file"
    return None


class _Gather(logging.Handler):
    """A log handler that keeps the first few messages and counts the rest."""

    KEEP = 3

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record):
        self.count += 1
        if len(self.first) < self.KEEP:
            try:
                text = record.getMessage()
            except Exception:  # a malformed record must not break the read
                text = str(record.msg)
            self.first.append(" ".join(text.split())[:200])

    def summary(self) -> str:
        if not self.count:
            return ""
        more = f" and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        return f"{'; '.join(self.first)}{more}"


_LOG_LOCK = threading.RLock()


@contextmanager
def library_messages(*logger_names: str):
    """Gather what libraries log while a file is read, instead of letting it reach the console or a test log.

    A corrupted file can make a library log one message per step, millions of them; they are kept out of the
    root logger (``propagate`` off while the block runs) and counted, the first few kept.

    Parameters
    ----------
    *logger_names : str
        The libraries' loggers, e.g. ``"tifffile"``.

    Yields
    ------
    handler
        ``handler.count`` messages logged, ``handler.summary()`` the first few and how many more.
    """
    handler = _Gather()
    with _LOG_LOCK:
        loggers = [logging.getLogger(name) for name in logger_names]
        saved = [(lg.propagate, lg.level) for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
            if lg.level == logging.NOTSET or lg.level > logging.WARNING:
                lg.setLevel(logging.WARNING)
        try:
            yield handler
        finally:
            for lg, (propagate, level) in zip(loggers, saved):
                lg.removeHandler(handler)
                lg.propagate = propagate
                lg.setLevel(level)


@contextmanager
def open_tiff(path, what: str = "TIFF"):
    """Open a TIFF with tifffile once its IFD chain has been checked (:func:`tiff_page_offsets`).

    Any exception raised while the file is open (by tifffile or by the caller's block) other than
    :class:`CeimapInputError` becomes one: ``"<path>: not a readable <what> (<error>)"``. What tifffile logs
    meanwhile is gathered (:func:`library_messages`): added to the error when the file is refused, or given
    as one warning when it is read.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for messages (``"SEM image"``, ``"TIFF stack"`` …).

    Yields
    ------
    tif : tifffile.TiffFile
    n_pages : int
        Pages in the checked chain; tifffile will find no more than these.
    """
    import tifffile

    path = Path(path)
    offsets, problem = tiff_page_offsets(path, what)
    with library_messages("tifffile") as log:
        try:
            with tifffile.TiffFile(path) as tif:
                yield tif, len(offsets)
        except CeimapInputError as exc:
            if log.count and "tifffile:" not in exc.problem:
                raise CeimapInputError(f"{exc.problem} (tifffile: {log.summary()})", path=exc.path) from None
            raise
        except Exception as exc:  # tifffile raises many types on corrupted input
            detail = f"; tifffile: {log.summary()}" if log.count else ""
            raise CeimapInputError(f"not a readable {what} ({type(exc).__name__}: {exc}{detail})",
                                   path=path) from None
    if problem is not None or log.count:
        said = "; ".join(s for s in (problem, log.summary()) if s)
        warnings.warn(f"{path}: read, but the TIFF has problems ({said})", stacklevel=3)


def check_page_data(page, path, what: str, bytes_per_value: int = 8, shape=None) -> None:
    """Check the size an image claims against the bytes the file stores for it, before reading it.

    A page can expand to at most its stored strips or tiles: their bytes when uncompressed, times the
    compression's largest possible expansion (:data:`MAX_EXPANSION`) otherwise; the stored bytes must lie
    inside the file. An array of several pages (``shape``) can expand to at most the whole file times that
    factor. First :func:`segment.io._assemble.check_array_size` checks the machine's memory.

    Parameters
    ----------
    page : tifffile.TiffPage
        The (first) page.
    path : path-like
    what : str
        For messages.
    bytes_per_value : int
        Bytes per value of the array the caller will make (for the memory check).
    shape : tuple of int, optional
        Shape of the array the caller will read (e.g. a series of pages); default the page's own.

    Raises
    ------
    CeimapInputError
        An image that claims more values than the stored data can hold, or data beyond the end of the file.
    """
    page_shape = tuple(int(s) for s in page.shape)
    shape = page_shape if shape is None else tuple(int(s) for s in shape)
    n_values = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if n_values == 0:
        raise CeimapInputError(f"{what} has no pixels (shape {shape})", path=path)
    check_array_size(shape, path, what, bytes_per_value=bytes_per_value)
    file_size = Path(path).stat().st_size
    stored = 0
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if count and (offset < 0 or offset + count > file_size):
            raise CeimapInputError(
                f"{what}: image data at bytes {offset}–{offset + count} lie beyond the end of the "
                f"{file_size}-byte file (truncated file?)", path=path)
        stored += int(count)
    if shape != page_shape:
        stored = file_size if stored else 0
    compression = int(page.compression)
    factor = MAX_EXPANSION.get(compression, OTHER_CODEC_EXPANSION)
    need = n_values * max(int(page.bitspersample), 1) / 8.0
    if stored == 0 or need > stored * factor:
        how = "uncompressed" if compression == 1 else f"compression {compression}, at most ×{factor:g}"
        raise CeimapInputError(
            f"{what} claims {' × '.join(str(s) for s in shape)} values ({need:.0f} bytes) but the file stores "
            f"{stored} bytes of image data for it ({how}): a corrupted header or a truncated file", path=path)


def image_count(tif, n_pages: int) -> int:
    """How many full-size images a TIFF holds: from its ImageJ or OME metadata, else from its second page.

    Later pages that are thumbnails or reduced resolutions of the first do not count. Only the first two
    pages are parsed.

    Parameters
    ----------
    tif : tifffile.TiffFile
    n_pages : int
        Pages in the file's checked IFD chain (:func:`tiff_page_offsets`).
    """
    page = tif.pages.first
    if tif.is_imagej:
        try:
            return max(int((tif.imagej_metadata or {}).get("images", 1)), 1)
        except (TypeError, ValueError):
            return 1
    if tif.is_ome and tif.ome_metadata:
        root = ET.fromstring(tif.ome_metadata)
        pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
        if pixels is not None:
            try:
                channels = 1 if "S" in page.axes else int(pixels.get("SizeC", 1))
                return max(int(pixels.get("SizeZ", 1)) * int(pixels.get("SizeT", 1)) * channels, 1)
            except (TypeError, ValueError):
                return 1
    if n_pages > 1:
        second = tif.pages[1]
        if second.shape == page.shape and not (second.is_reduced or second.is_subsampled):
            return n_pages
    return 1


def single_image(tif, n_pages: int, path, what: str, bytes_per_value: int = 8) -> np.ndarray:
    """The one image of a TIFF that must hold one (an SEM image, annotations): its first page, as stored.

    Parameters
    ----------
    tif : tifffile.TiffFile
        Opened with :func:`open_tiff`.
    n_pages : int
        From :func:`open_tiff`.
    path : path-like
    what : str
        For messages.
    bytes_per_value : int
        For the memory check (:func:`check_page_data`).

    Raises
    ------
    CeimapInputError
        A stack of same-sized images, or a page whose claimed size its stored data cannot hold.
    """
    page = tif.pages.first
    n_images = image_count(tif, n_pages)
    if n_images > 1:
        raise CeimapInputError(
            f"{what} must be one 2-D image; this TIFF holds {n_images} images of "
            f"{' × '.join(str(s) for s in page.shape)} values (a stack or a time series?): save the one image "
            "alone", path=path)
    check_page_data(page, path, what, bytes_per_value=bytes_per_value)
    try:
        return np.asarray(page.asarray())
    except Exception as exc:
        raise CeimapInputError(f"image data cannot be read (truncated file?): {exc}", path=path) from None


def read_tiff_image(path, what: str = "TIFF image") -> np.ndarray:
    """Read a TIFF's image, or its stack of same-sized images, within the bounds above.

    For the files ceimap writes itself (``classes.tif``, ``abundances.tif`` …) and other plain TIFFs.

    Parameters
    ----------
    path : path-like
    what : str
        For messages.

    Returns
    -------
    ndarray
        As stored: the first page's dtype, shape ``(n_y, n_x[, samples])``, or ``(n_images, …)`` for a stack.

    Raises
    ------
    CeimapInputError
        Missing, corrupted or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise CeimapInputError(f"{what} not found", path=path)
    with open_tiff(path, what) as (tif, n_pages):
        page = tif.pages.first
        itemsize = np.dtype(page.dtype).itemsize
        n_images = image_count(tif, n_pages)
        if n_images == 1:
            return single_image(tif, n_pages, path, what, bytes_per_value=itemsize)
        shape = (n_images,) + tuple(page.shape)
        check_page_data(page, path, what, bytes_per_value=itemsize, shape=shape)
        series = tif.series[0]
        if int(np.prod(series.shape)) == int(np.prod(shape)):  # ImageJ, OME, shaped: the file's own stack
            return np.asarray(series.asarray())
        if n_images > n_pages:
            raise CeimapInputError(f"{what}: its metadata claim {n_images} images in {n_pages} pages", path=path)
        return np.stack([tif.pages[i].asarray() for i in range(n_images)])
