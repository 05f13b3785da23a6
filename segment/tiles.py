"""Large SEM images: the trained pixel classifier run tile by tile, with bounded memory.

An SEM mosaic of 8192² pixels has 67 M pixels; its full feature stack (~60 float32 features) would take
16 GB and its class-probability stack 1.3 GB. Here the image is processed in bands of ``tile_px`` rows, each
band in ``tile_px``-wide tiles whose features are computed with the filter bank's halo
(:func:`ceimap.segment.features.iter_feature_tiles`, equal to the untiled features), so memory is bounded by one
band (plus the per-pixel outputs kept whole: uint8 classes and float32 entropy). The probability stack is
never held: it is reduced to classes and entropy band by band and, when asked for, streamed into a tiled
TIFF (:func:`write_tiled_tiff`) while the next band is computed.

Only the public classifier API is used (``PixelClassifier.predict_proba_tile``, ``classes``, ``spec``; :func:`ceimap.segment.features.spectral_maps`,
:func:`ceimap.segment.features.iter_feature_tiles`, :func:`ceimap.segment.classifier.entropy_map`), each tile as
:meth:`PixelClassifier.predict` treats it, so the result equals ``predict(..., tile_px=tile_px)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["LARGE_SEM_PIXELS", "TIFF_TILE_PX", "is_large", "TiledPrediction", "iter_probability_bands",
           "classify_tiled", "iter_tiff_tiles", "write_tiled_tiff"]

LARGE_SEM_PIXELS = 4096 * 4096
"""SEM images with more pixels than this are classified by :func:`classify_tiled` in the pipeline (the
probability stack of a 4096² image alone is 336 MB; below it the whole-image path keeps the probabilities for
the probability-based thickness measurement)."""

TIFF_TILE_PX = 512
"""Side of the TIFF tiles of the chunked outputs (a multiple of 16, as TIFF requires)."""


def is_large(shape_yx) -> bool:
    """True when an SEM image of this shape is classified tile by tile (:data:`LARGE_SEM_PIXELS`)."""
    return int(np.prod(shape_yx)) > LARGE_SEM_PIXELS


@dataclass(frozen=True)
class TiledPrediction:
    """What :func:`classify_tiled` keeps of a prediction.

    Attributes
    ----------
    classes : ndarray of uint8, SEM shape
        Most probable class code (1–4).
    entropy : ndarray of float32, SEM shape
        Normalised entropy of the trained classes' probabilities (as :meth:`PixelClassifier.predict`).
    probabilities_path : str or None
        The tiled TIFF the probabilities were streamed to, shape (ny, nx, 4) float32, planes = codes 1–4.
    n_tiles : int
        Feature tiles computed.
    """

    classes: np.ndarray
    entropy: np.ndarray
    probabilities_path: str | None
    n_tiles: int


def iter_probability_bands(classifier, sem_image: np.ndarray, pixel_size_nm: float, od_stacks: dict,
                           registrations: dict, *, egt2g=None, s_edge=None,
                           tile_px: int = 1024) -> Iterator[tuple[int, int, np.ndarray]]:
    """Class probabilities of the SEM image, one band of ``tile_px`` rows at a time.

    Parameters
    ----------
    classifier : PixelClassifier
    sem_image : ndarray (ny, nx)
    pixel_size_nm : float
    od_stacks, registrations : dict by edge
    egt2g, s_edge : optional
        Precomputed spectral maps.
    tile_px : int
        Band height and tile width.

    Yields
    ------
    y0, y1 : int
        Rows of the band.
    probabilities : ndarray of float32, shape (4, y1 − y0, nx)
        Probabilities of class codes 1–4 (as ``PixelClassifier.predict(..., tile_px=tile_px)[1][1:]``).
    """
    from .features import iter_feature_tiles, spectral_maps

    spec = classifier.spec
    maps = spectral_maps(od_stacks, spec, egt2g=egt2g, s_edge=s_edge)
    matrices = {e: np.asarray(registrations[e].matrix, float) for e in spec.edges}
    ny, nx = np.shape(sem_image)
    band = None
    for (ys, xs), tile in iter_feature_tiles(sem_image, pixel_size_nm, spec, maps, matrices, tile_px=tile_px):
        h = tile.shape[0]
        if band is None:
            band = np.zeros((4, h, nx), np.float32)
        # what PixelClassifier.predict does with each tile
        band[:, :, xs] = np.moveaxis(classifier.predict_proba_tile(tile, origin=(ys.start, xs.start)), -1, 0)
        del tile
        if xs.stop == nx:                      # iter_feature_tiles goes row of tiles by row of tiles
            yield ys.start, ys.stop, band
            band = None


def iter_tiff_tiles(bands, nx: int, n_channels: int, dtype, tile_px: int = TIFF_TILE_PX):
    """Re-cut horizontal bands into TIFF tiles in row-major order (what ``tifffile`` expects).

    Parameters
    ----------
    bands : iterable of (y0, y1, ndarray (y1 − y0, nx, n_channels))
        Consecutive bands covering the image from row 0.
    nx, n_channels : int
    dtype : numpy dtype
    tile_px : int

    Yields
    ------
    ndarray, shape (tile_px, tile_px, n_channels)
        Zero-padded at the right and bottom edges.
    """
    buf = np.zeros((0, nx, n_channels), dtype)
    for _, _, band in bands:
        buf = np.concatenate([buf, np.asarray(band, dtype).reshape(band.shape[0], nx, n_channels)])
        while buf.shape[0] >= tile_px:
            yield from _row_of_tiles(buf[:tile_px], nx, tile_px)
            buf = buf[tile_px:]
    if buf.shape[0]:
        yield from _row_of_tiles(buf, nx, tile_px)


def _row_of_tiles(rows: np.ndarray, nx: int, tile_px: int):
    for x0 in range(0, nx, tile_px):
        t = rows[:, x0:x0 + tile_px]
        if t.shape[:2] != (tile_px, tile_px):
            t = np.pad(t, ((0, tile_px - t.shape[0]), (0, tile_px - t.shape[1]), (0, 0)))
        yield t


def write_tiled_tiff(path, bands, shape_yx, n_channels: int = 1, dtype=np.float32,
                     tile_px: int = TIFF_TILE_PX) -> None:
    """Write an image given as consecutive row bands into a zlib-compressed tiled TIFF, band by band.

    Only one band and one row of TIFF tiles are in memory at a time. The file reads back with
    ``tifffile.imread`` as an array of shape ``shape_yx`` (``n_channels == 1``) or
    ``shape_yx + (n_channels,)``.
    """
    import tifffile

    ny, nx = shape_yx
    shape = (ny, nx) if n_channels == 1 else (ny, nx, n_channels)
    tiles = iter_tiff_tiles(bands, nx, n_channels, np.dtype(dtype), tile_px)
    if n_channels == 1:
        tiles = (t[..., 0] for t in tiles)
    tifffile.imwrite(path, data=tiles, shape=shape, dtype=np.dtype(dtype), tile=(tile_px, tile_px),
                     compression="zlib", photometric="minisblack",
                     **({"planarconfig": "contig"} if n_channels > 1 else {}))


def classify_tiled(classifier, sem_image: np.ndarray, pixel_size_nm: float, od_stacks: dict,
                   registrations: dict, *, egt2g=None, s_edge=None, tile_px: int = 1024,
                   probabilities_path=None) -> TiledPrediction:
    """Classify a (large) SEM image tile by tile without holding its probability stack.

    Parameters
    ----------
    classifier, sem_image, pixel_size_nm, od_stacks, registrations, egt2g, s_edge, tile_px
        As for :func:`iter_probability_bands` (memory ∝ ``tile_px · nx``).
    probabilities_path : path, optional
        When given, the probabilities are streamed into this tiled TIFF, shape (ny, nx, 4) float32.

    Returns
    -------
    TiledPrediction
    """
    from .classifier import entropy_map

    ny, nx = np.shape(sem_image)
    classes = np.zeros((ny, nx), np.uint8)
    entropy = np.zeros((ny, nx), np.float32)
    trained = [int(c) - 1 for c in classifier.classes]
    count = {"tiles": 0}

    def bands():
        for y0, y1, p in iter_probability_bands(classifier, sem_image, pixel_size_nm, od_stacks, registrations,
                                                egt2g=egt2g, s_edge=s_edge, tile_px=tile_px):
            classes[y0:y1] = np.argmax(p, axis=0) + 1
            entropy[y0:y1] = entropy_map(p[trained], axis=0)
            count["tiles"] += -(-nx // tile_px)
            yield y0, y1, np.moveaxis(p, 0, -1)

    if probabilities_path is None:
        for _ in bands():
            pass
    else:
        write_tiled_tiff(probabilities_path, bands(), (ny, nx), n_channels=4, dtype=np.float32)
    return TiledPrediction(classes=classes, entropy=entropy,
                           probabilities_path=None if probabilities_path is None else str(probabilities_path),
                           n_tiles=count["tiles"])
