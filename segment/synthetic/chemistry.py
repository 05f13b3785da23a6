"""Ni e_g/t_2g ratio of every fine pixel: per-particle bulk values, intraparticle variation, surface reduction.

``ratio = bulk_i + intraparticle_sd * z(x, y) - reduction_i * erfc(depth / depth_i)`` inside particle ``i``,
where ``depth`` is the distance (nm) below that particle's NMC–electrolyte contact (void-, crack-, vacuum-
and particle-contacts do not reduce) and ``z`` a smooth unit Gaussian field; in the interphase
``ratio = interphase_ratio + interphase_ratio_sd * z'``. Everything is clipped to 0.7–2.4.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc

from .. import Class
from .fields import smooth_random_field
from .microstructure import Microstructure
from .spec import LamellaSpec

RATIO_RANGE = (0.7, 2.4)


def particle_parameters(spec: LamellaSpec, n_particles: int, rng: np.random.Generator) -> list[dict]:
    """Per-particle chemistry: bulk ratio (and its group), surface reduction and its depth scale.

    Groups of ``spec.bulk_ratio_groups`` receive particle counts in proportion to their weights (at least
    one each when there are enough particles), assigned in random order.
    """
    weights = np.array([g[0] for g in spec.bulk_ratio_groups], float)
    counts = np.floor(weights / weights.sum() * n_particles).astype(int)
    for k in np.argsort(-(weights / weights.sum() * n_particles - counts))[: n_particles - counts.sum()]:
        counts[k] += 1
    groups = rng.permutation(np.repeat(np.arange(len(weights)), counts))
    out = []
    for g in groups:
        _, mean, sd = spec.bulk_ratio_groups[g]
        bulk = float(np.clip(mean + sd * rng.standard_normal(), RATIO_RANGE[0] + 0.2, RATIO_RANGE[1] - 0.1))
        red = float(max(spec.surface_reduction_mean + spec.surface_reduction_sd * rng.standard_normal(), 0.0))
        if spec.surface_reduction_mean == 0.0:
            red = 0.0
        depth = float(rng.uniform(*spec.surface_reduction_depth_nm))
        out.append({"group": int(g), "bulk": bulk, "reduction": red, "reduction_depth_nm": depth})
    return out


def ratio_map(spec: LamellaSpec, ms: Microstructure, params: list[dict], rng: np.random.Generator) -> np.ndarray:
    """e_g/t_2g amplitude ratio on the fine grid (float32; NaN where there is no Ni)."""
    shape = ms.classes.shape
    z = smooth_random_field(rng, shape, ms.pixel_nm, spec.intraparticle_corr_nm)
    zi = smooth_random_field(rng, shape, ms.pixel_nm, 200.0)
    ratio = np.full(shape, np.nan, np.float32)
    for rec, par in zip(ms.records, params):
        box = rec.bbox
        own = ms.particles[box] == rec.particle_id
        depth = ms.depth_electrolyte_nm[box][own]
        red = par["reduction"] * erfc(depth / par["reduction_depth_nm"]) if par["reduction"] > 0 else 0.0
        ratio[box][own] = par["bulk"] + spec.intraparticle_ratio_sd * z[box][own] - red
    inter = ms.classes == Class.INTERPHASE
    ratio[inter] = spec.interphase_ratio + spec.interphase_ratio_sd * zi[inter]
    nmc_or_int = (ms.classes == Class.NMC) | inter
    ratio[nmc_or_int] = np.clip(ratio[nmc_or_int], *RATIO_RANGE)
    return ratio
