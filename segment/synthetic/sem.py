"""SEM rendering of the lamella: secondary-electron-like contrast, FIB curtaining, blur and noise.

NMC: smooth and bright, a per-particle grey level (channelling contrast) and gentle shading; electrolyte:
mid-grey with its pores dark (porous texture); interphase: like the electrolyte, marginally darker (it is
hardly visible in SEM — STXM finds it); voids, cracks and vacuum: dark; bright rims at solid/empty edges
(edge effect). Rendered on the fine grid, blurred by the beam (sigma = half an SEM pixel), sampled at the
SEM pixel centres; then vertical curtaining stripes (stronger below dense particles, along the milling
direction), noise, and quantisation to 8 or 16 bits.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import lfilter

from .. import Class
from .fields import smooth_random_field
from .microstructure import Microstructure
from .spec import LamellaSpec


def fine_to_sem_coords(spec: LamellaSpec, ms: Microstructure, shape_yx: tuple[int, int]):
    """Fine-grid (row, col) coordinates of the SEM pixel centres (1-D arrays for rows and columns)."""
    ny, nx = shape_yx
    rows = (np.arange(ny) * spec.sem_pixel_nm - ms.origin_nm) / ms.pixel_nm
    cols = (np.arange(nx) * spec.sem_pixel_nm - ms.origin_nm) / ms.pixel_nm
    return rows, cols


def render_sem(spec: LamellaSpec, ms: Microstructure, shape_yx: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """SEM image (float32 on the SEM grid, integer grey values of the chosen bit depth).

    Parameters
    ----------
    spec : LamellaSpec
    ms : Microstructure
    shape_yx : (int, int)
        SEM image shape.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (ny, nx) float32 holding integers in [0, 255] or [0, 65535]
    """
    px = ms.pixel_nm
    cls = ms.classes
    img = np.zeros(cls.shape, np.float32)
    texture = smooth_random_field(rng, cls.shape, px, 12.0)
    shade = smooth_random_field(rng, cls.shape, px, 900.0)
    # NMC: per-particle level and a linear shading ramp
    for rec in ms.records:
        box = rec.bbox
        own = ms.particles[box] == rec.particle_id
        yy, xx = np.mgrid[box[0], box[1]]
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((yy - rec.centre_yx[0]) * np.sin(a) + (xx - rec.centre_yx[1]) * np.cos(a)) * px / 3000.0
        level = rng.uniform(0.66, 0.80)
        img[box][own] = (level + 0.05 * ramp + 0.015 * shade[box])[own]
    porous = (cls == Class.ELECTROLYTE) | (cls == Class.INTERPHASE)
    pore = ms.pores > 1.0   # surface pores: the top ~16 % of the porosity field
    base = np.where(cls == Class.INTERPHASE, 0.41, 0.45).astype(np.float32)
    el = base + 0.04 * texture + 0.02 * shade
    el = np.where(pore, 0.20 + 0.03 * texture, el)
    img[porous] = el[porous]
    img[cls == Class.VOID] = 0.08
    img[cls == Class.OUTSIDE] = 0.04
    # edge effect: bright rim on the solid side of solid/empty boundaries
    solid = ((cls == Class.NMC) | porous).astype(np.float32)
    empty_near = ndi.gaussian_filter(1.0 - solid, 12.0 / px)
    img += 0.25 * solid * empty_near
    # beam blur and sampling at SEM pixel centres
    img = ndi.gaussian_filter(img, 0.5 * spec.sem_pixel_nm / px)
    rows, cols = fine_to_sem_coords(spec, ms, shape_yx)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    sem = ndi.map_coordinates(img, [rr, cc], order=1, mode="nearest")
    # curtaining: vertical stripes, stronger below dense NMC (milling from the top)
    ny, nx = shape_yx
    nmc_sem = ndi.map_coordinates((cls == Class.NMC).astype(np.float32), [rr, cc], order=0, mode="nearest")
    alpha = np.exp(-spec.sem_pixel_nm / 1500.0)
    shadow = lfilter([1.0 - alpha], [1.0, -alpha], nmc_sem, axis=0)
    stripes = ndi.gaussian_filter(rng.standard_normal((ny, nx)), (400.0 / spec.sem_pixel_nm, 1.2))
    stripes /= stripes.std() + 1e-12
    sem += 0.035 * stripes * (0.4 + 1.2 * shadow)
    # noise (shot-like + amplifier) and quantisation
    sem += rng.standard_normal(sem.shape) * (0.02 + 0.04 * np.sqrt(np.clip(sem, 0, None)))
    top = 255.0 if spec.sem_bit_depth == 8 else 65535.0
    offset = 0.02 * top
    out = np.clip(np.round(offset + sem * 0.9 * top), 0, top)
    return out.astype(np.float32)
