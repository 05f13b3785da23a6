"""napari writer: a Labels layer of class codes → a uint8 class-map TIFF (annotations or classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ceimap.segment import Class

from ._layers import CLASS_NAMES


def write_classes(path: str, data, meta: dict) -> list[str]:
    """Write a class-code Labels layer as a uint8 TIFF that ``ceimap train --annotations`` reads.

    Parameters
    ----------
    path : str
        Output ``.tif``/``.tiff``.
    data : array_like, shape (n_y, n_x)
        Class codes: 0 (outside / not annotated), 1 NMC, 2 interphase, 3 electrolyte, 4 void.
    meta : dict
        Layer attributes from napari; ``scale`` (nm per pixel, as set by the ceimap readers) is stored as
        the TIFF's pixel size when it is not the default 1.

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    CeimapInputError
        Not a 2-D integer image, or values outside 0–4.
    """
    from ceimap.segment.errors import CeimapInputError
    from ceimap.segment.io import write_sem_tiff

    img = np.asarray(data)
    if img.ndim != 2:
        raise CeimapInputError(f"a class map must be 2-D, the layer has shape {img.shape}", path=path)
    if not (np.issubdtype(img.dtype, np.integer) or img.dtype == bool):
        raise CeimapInputError(f"class codes must be integers, the layer holds {img.dtype}", path=path)
    bad = (img < 0) | (img > max(Class))
    if np.any(bad):
        values = ", ".join(str(v) for v in np.unique(img[bad])[:5].tolist())
        raise CeimapInputError(
            f"class codes must be 0–{int(max(Class))} ("
            + ", ".join(f"{int(c)} {name}" for c, name in CLASS_NAMES.items()) + f"); the layer holds {values}",
            path=path)
    img = img.astype(np.uint8)
    scale = (meta or {}).get("scale")
    pixel_nm = None
    if scale is not None and len(scale) >= 2:
        sy, sx = float(scale[-2]), float(scale[-1])
        if abs(sy - sx) <= 1e-6 * max(sy, sx) and sx > 0 and sx != 1.0:
            pixel_nm = sx
    out = Path(path)
    if pixel_nm is not None:
        write_sem_tiff(out, img, pixel_nm)
    else:
        import tifffile

        tifffile.imwrite(out, img, compression="zlib")
    return [str(out)]
