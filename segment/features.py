"""Per-pixel features for the supervised pixel classifier, on the SEM grid.

Two families, declared by a versioned :class:`FeatureSpec` that is stored with every model:

**SEM filter bank** (ilastik's standard set; the default, :data:`DEFAULT_SEM_FILTERS` at
:data:`DEFAULT_SEM_SCALES_NM`, keeps the families that carry information). The SEM image is first
normalised by its own robust percentiles (``(I − p_low) / (p_high − p_low)``), so brightness and contrast
settings of another session do not change what a feature means. At each scale σ (given in nm and
converted with the pixel size, so a model trained at 9 nm pixels measures the same physical
neighbourhoods at 12 nm pixels): Gaussian smoothing, gradient magnitude, scale-normalised Laplacian of
Gaussian (σ² ∇²G, the blob/DoG detector), the two scale-normalised Hessian eigenvalues (ridges, valleys),
the two structure-tensor eigenvalues (inner scale σ/2, integration σ: edge strength and coherence) and the
local standard deviation (texture: the porous electrolyte against smooth NMC). Plus the normalised
intensity itself. Smoothing is an exact Gaussian below 4 pixels and three boxes of the same variance above;
derivatives are central differences of the smoothed image. Scales of 2 pixels and more are computed on a
pyramid of block means (σ ≈ 1–2 pixels of their block grid) and interpolated back
(:func:`sem_filter_bank`): every scale but the finest costs a fraction of a full-resolution one.

**Spectral features** from the STXM stacks, computed on each edge's native grid and warped onto the SEM
grid through the registration (bilinear at each SEM pixel's STXM coordinates, as
:func:`ceimap.segment.register.warp_to_sem`; :func:`spectral_sources`), at the native resolution and
smoothed over a neighbourhood given in nm. They are physical quantities normalised so that they mean the
same on another lamella (other thickness, I0, beam time), never per-lamella decomposition scores whose
basis changes from lamella to lamella:

- ``ni_l3`` — Ni L3 resonance (OD above the extrapolated pre-edge baseline,
  :func:`ceimap.segment.signatures.edge_signature`) divided by its 99th percentile over the field: ≈ 1 in bulk NMC,
  0 without Ni, whatever the lamella thickness;
- ``ni_absorption`` — mean OD of the Ni-L stack (all matter absorbs there), same normalisation;
- ``egt2g`` — the Ni L3 e_g/t_2g ratio (:func:`ceimap.segment.spectra.egt2g_map`, intrinsic, 0 where invalid),
  with ``egt2g_valid``; unlike the Ni resonance it is not changed by partial-volume mixing of NMC with
  Ni-free electrolyte;
- ``s_jump`` — S L-edge resonance divided by its 99th percentile (≈ 1 in bulk electrolyte);
- ``s_shift_ev`` — S 2p₃/₂ position (:func:`ceimap.segment.spectra.s_edge_map`) minus the lamella's median
  position, so energy-calibration offsets between beam times cancel (0 where invalid), with
  ``s_valid``. Invalid pixels are NaN while warping and smoothing (they never dilute their neighbours'
  values) and 0 on the SEM grid;
- ``stxm_field`` — 1 inside the field every edge measured, 0 outside.

Everything is float32 and computed in tiles with a halo wide enough for the largest filter
(:func:`iter_feature_tiles`, :func:`feature_tile`), so tiled and untiled features agree to float rounding and
an 8192² SEM image never needs its whole feature stack in memory. A classifier needs the features only where
it evaluates its forest (a lattice, then pixels near class changes) and only the columns its trees split on:
:func:`tile_sampler` filters the full-resolution scales of a tile once and computes everything else at the
requested pixels only, with the same values as :func:`feature_tile`, bit for bit.

Version 2 of the spec (:data:`FEATURE_SPEC_VERSION`) changed the default filters and scales and added the
pyramid: version-1 model files are refused.

One module past 800 lines, on purpose: the whole-image features (:func:`feature_image`), the tile features
(:func:`feature_tile`) and the sampled features (:func:`tile_sampler`) must stay equal bit for bit (tested), so
the filters, the pyramid and the spectral resampling they share live beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage

__all__ = [
    "FEATURE_SPEC_VERSION",
    "FeatureSpec",
    "normalise_sem",
    "sem_filter_bank",
    "spectral_maps",
    "iter_feature_tiles",
    "sem_pyramid",
    "tile_slices",
    "feature_tile",
    "feature_image",
    "features_at",
    "spectral_sources",
    "tile_sampler",
]

FEATURE_SPEC_VERSION = 2
"""Bumped whenever a feature's definition changes: a model with another version is refused."""

SEM_FILTERS = ("gaussian", "gradient", "log", "hessian", "structure", "stdev")
SPECTRAL_BY_EDGE = {
    "Ni-L": ("ni_l3", "ni_absorption", "egt2g", "egt2g_valid"),
    "S-L": ("s_jump", "s_shift_ev", "s_valid"),
}
DEFAULT_SEM_FILTERS = ("gaussian", "hessian", "structure")
"""The default filters, chosen by ablation across lamellae: each family removed in turn (training on the
4.25 V strokes, 25 trees, scoring 150 000 truth pixels of each of the three example lamellae), the mean
macro F1 stayed at 0.926–0.927 without the gradient magnitude, the LoG or the local standard deviation
(0.925 with all), and fell without the smoothing, the Hessian or the structure tensor (0.906, 0.919,
0.917). Three families instead of six: 39 features instead of 62."""
DEFAULT_SEM_SCALES_NM = (10.0, 20.0, 40.0, 80.0, 160.0)
"""Octaves from about one SEM pixel to about four STXM pixels. Version 1 went on to 320 nm: with the three
filter families above, whole-image macro F1 with and without it were within the spread between forest seeds
(0.896/0.880/0.962 with, 0.896/0.868/0.961 without, seed 1; 0.893/0.862/0.960 with, 0.889/0.873/0.957 without,
seed 2), and its halo was the largest cost of tiling."""
_TRUNCATE = 4.0
_MIN_SIGMA_PX = 0.5
_BOX_FROM_PX = 4.0
_PYRAMID_MIN_PX = 1.0
"""Smallest σ (pixels of its block grid) a pyramid scale is computed at. At 1, the 20–160 nm scales at 9 nm
pixels run on 2×2 … 16×16 blocks; Gaussian features stay at correlation 0.99 with the pixel-by-pixel filter,
Hessian 0.91, structure tensor 0.7 (at 2: 0.99 / 0.99 / 0.97, and twice the cost); the macro F1 of the example
lamellae did not move (0.913 / 0.882 / 0.962 against 0.914 / 0.881 / 0.964 without the pyramid): the
classifier learns the feature as defined, identically in training and prediction."""


@dataclass(frozen=True)
class FeatureSpec:
    """The declared feature set (stored in every model file).

    Attributes
    ----------
    version : int
        :data:`FEATURE_SPEC_VERSION` of the code that defined it.
    sem_scales_nm : tuple of float
        Scales σ of the SEM filter bank, in nm.
    sem_filters : tuple of str
        Filters applied at every scale (subset of ``gaussian, gradient, log, hessian, structure, stdev``).
    sem_percentiles : (float, float)
        Percentiles of the SEM grey values mapped to 0 and 1.
    edges : tuple of str
        Edges whose spectral features are used (``"Ni-L"``, ``"S-L"``).
    spectral_scales_nm : tuple of float
        Smoothing of the spectral maps on their STXM grid before warping (0 = native).
    interphase_features : tuple of str
        Features that tell interphase from electrolyte (see :mod:`ceimap.segment.classifier`): by default the
        S L-edge shift (and where it could be measured), the interphase's chemical signature, which
        partial-volume mixing of NMC and electrolyte at STXM resolution cannot mimic (the Ni signal and the
        SEM neighbourhood can). Empty (all spectral features are used) when the S-L edge is not among
        ``edges``.
    """

    version: int = FEATURE_SPEC_VERSION
    sem_scales_nm: tuple = DEFAULT_SEM_SCALES_NM
    sem_filters: tuple = DEFAULT_SEM_FILTERS
    sem_percentiles: tuple = (1.0, 99.0)
    edges: tuple = ("Ni-L", "S-L")
    spectral_scales_nm: tuple = (0.0, 150.0)
    interphase_features: tuple | None = None

    def __post_init__(self):
        if self.interphase_features is None:
            chosen = ("s_shift_ev", "s_valid") if "S-L" in self.edges else ()
            object.__setattr__(self, "interphase_features", tuple(
                name for name in self.names if any(name == c or name.startswith(c + "_") for c in chosen)))
        for name in ("sem_scales_nm", "sem_filters", "sem_percentiles", "edges", "spectral_scales_nm",
                     "interphase_features"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = set(self.sem_filters) - set(SEM_FILTERS)
        if unknown:
            raise ValueError(f"unknown SEM filters {sorted(unknown)}")
        unknown = set(self.edges) - set(SPECTRAL_BY_EDGE)
        if unknown:
            raise ValueError(f"no spectral features defined for edges {sorted(unknown)}")
        unknown = set(self.interphase_features) - set(self.names)
        if unknown:
            raise ValueError(f"interphase features {sorted(unknown)} are not among the features")

    @property
    def names(self) -> list[str]:
        """Column names of the feature matrix, in order."""
        names = ["sem_intensity"]
        for s in self.sem_scales_nm:
            for f in self.sem_filters:
                if f in ("hessian", "structure"):
                    names += [f"sem_{f}1_{s:g}nm", f"sem_{f}2_{s:g}nm"]
                else:
                    names.append(f"sem_{f}_{s:g}nm")
        for edge in self.edges:
            for feat in SPECTRAL_BY_EDGE[edge]:
                scales = (0.0,) if feat.endswith("_valid") else self.spectral_scales_nm
                names += [feat if s == 0 else f"{feat}_{s:g}nm" for s in scales]
        names.append("stxm_field")
        return names

    def to_dict(self) -> dict:
        """Plain JSON-able dict (with the feature names, for the record)."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["names"] = self.names
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        """Inverse of :meth:`to_dict` (``names`` is recomputed, and must agree when given)."""
        keys = ("version", "sem_scales_nm", "sem_filters", "sem_percentiles", "edges", "spectral_scales_nm",
                "interphase_features")
        spec = cls(**{k: d[k] for k in keys if k in d})
        if "names" in d and list(d["names"]) != spec.names:
            raise ValueError("feature names do not match the feature spec")
        return spec


def normalise_sem(image: np.ndarray, percentiles=(1.0, 99.0)) -> tuple[np.ndarray, tuple[float, float]]:
    """Map the SEM grey values so that the given percentiles go to 0 and 1 (float32).

    Percentiles are taken on a regular subsample of at most ~4 million pixels (exact for small images).

    Returns
    -------
    normalised : ndarray of float32
    levels : (float, float)
        The grey values mapped to 0 and 1.
    """
    image = np.asarray(image)
    step = max(1, int(np.sqrt(image.size / 4e6)))
    sample = image[::step, ::step].astype(np.float64)
    lo, hi = np.percentile(sample[np.isfinite(sample)], percentiles)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    out = (np.asarray(image, dtype=np.float32) - np.float32(lo)) * np.float32(scale)
    return out, (float(lo), float(hi))


def _sigma_px(scale_nm: float, pixel_size_nm: float) -> float:
    return max(_MIN_SIGMA_PX, float(scale_nm) / float(pixel_size_nm))


def _box_widths(sigma: float) -> tuple[int, int, int]:
    """Odd widths of three boxes whose successive application has a variance closest to σ².

    One box of width w has variance (w² − 1)/12; three mixed from two consecutive odd widths match σ²
    within ~10 % from σ = 4 pixels on.
    """
    target = sigma * sigma
    lo = int(np.sqrt(4.0 * target + 1.0))
    lo = lo - 1 if lo % 2 == 0 else lo
    lo = max(lo, 1)
    hi = lo + 2
    best = min(range(4), key=lambda k: abs(k * (hi * hi - 1) / 12 + (3 - k) * (lo * lo - 1) / 12 - target))
    return tuple([hi] * best + [lo] * (3 - best))


def _radius(sigma: float) -> int:
    """Support half-width of :func:`_smooth` at ``sigma``."""
    if sigma < _BOX_FROM_PX:
        return int(_TRUNCATE * sigma + 0.5)
    return sum(w // 2 for w in _box_widths(sigma))


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing: exact kernel below ``_BOX_FROM_PX`` pixels, three box passes above.

    Three successive boxes of the same total variance approximate a Gaussian (central limit) and cost
    the same at any scale, which keeps the large (hundreds of nm) scales affordable on 8192² images.
    """
    if sigma < _BOX_FROM_PX:
        return ndimage.gaussian_filter(image, sigma, truncate=_TRUNCATE)
    out = image
    for w in _box_widths(sigma):
        out = ndimage.uniform_filter(out, w)
    return out


def _memo_smooth():
    """:func:`_smooth` memoised per image object and σ (octave-spaced scales: the structure tensor's inner scale
    σ/2 is the previous scale's smoothing). The cache lives as long as the returned function."""
    smoothed = {}

    def smooth(image, sigma):
        key = (id(image), round(float(sigma), 6))
        if key not in smoothed:
            smoothed[key] = _smooth(image, sigma)
        return smoothed[key]

    return smooth


def _decimation(sigma: float) -> int:
    """Block size d (a power of 2) of the grid a scale σ (pixels) is computed on: σ/d ≥ ``_PYRAMID_MIN_PX``."""
    d = 1
    while sigma / (2 * d) >= _PYRAMID_MIN_PX:
        d *= 2
    return d


def sem_halo_px(spec: FeatureSpec, pixel_size_nm: float) -> int:
    """Margin (pixels) a tile needs so that its full-resolution filters equal those of the whole image.

    Only the scales computed on the pixels count: the pyramid's scales (:func:`sem_pyramid`) are computed
    once on the whole image and interpolated into each tile.
    """
    halo = 0
    for scale in spec.sem_scales_nm:
        s = _sigma_px(scale, pixel_size_nm)
        if _decimation(s) == 1:
            # structure tensor: derivative of the inner smoothing, then the outer smoothing
            halo = max(halo, _radius(s) + _radius(max(_MIN_SIGMA_PX, 0.5 * s)) + 2)
    return halo


def sem_pyramid(normalised: np.ndarray, pixel_size_nm: float, spec: FeatureSpec, *, columns=None,
                n_threads: int = 1) -> dict:
    """The scales computed on block means, for the whole image: {scale index: (block size d, features)}.

    ``features`` has shape (⌈ny/d⌉, ⌈nx/d⌉, n_filter_outputs), values at the block centres; blocks are
    anchored at the image origin. :func:`sem_filter_bank` interpolates them into any tile. ``columns``
    (feature columns, as :func:`tile_sampler`'s): the filters none of whose outputs is among them are
    skipped (their outputs are 0; such a pyramid is only for a sampler given the same columns). The scales
    are independent: ``n_threads`` compute them in parallel (the filters release the GIL).
    """
    img = np.asarray(normalised, dtype=np.float32)
    n_per = _n_outputs(spec.sem_filters)
    wanted = None if columns is None else {int(c) for c in columns}
    jobs = []
    for i, scale in enumerate(spec.sem_scales_nm):
        s = _sigma_px(scale, pixel_size_nm)
        d = _decimation(s)
        need = [j for j in range(n_per) if wanted is None or 1 + i * n_per + j in wanted]
        if d > 1 and need:
            jobs.append((i, s, d, need))

    def one(job):
        i, s, d, need = job
        return i, (d, _scale_filters(_block_mean(img, d), _coarse_sigma(s, d), spec.sem_filters, _memo_smooth(),
                                     need))

    if n_threads > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            return dict(pool.map(one, jobs))        # largest grid (finest pyramid scale) first
    return dict(one(job) for job in jobs)


def _coarse_sigma(sigma: float, d: int) -> float:
    """σ on the grid of d × d block means (the block mean already has variance (d² − 1)/12 pixels²)."""
    if d == 1:
        return sigma
    return float(np.sqrt(max(sigma * sigma - (d * d - 1) / 12.0, 0.25 * d * d))) / d


def _block_mean(img: np.ndarray, d: int) -> np.ndarray:
    ny, nx = img.shape
    py, px = -ny % d, -nx % d
    if py or px:
        img = np.pad(img, ((0, py), (0, px)), mode="edge")
    return img.reshape(img.shape[0] // d, d, img.shape[1] // d, d).mean(axis=(1, 3), dtype=np.float32)


def _upsample(coarse: np.ndarray, d: int, shape, origin=(0, 0), out=None) -> np.ndarray:
    """Bilinear interpolation of block-centred values (ncy, ncx, n) onto pixels (ny, nx, n).

    The blocks are anchored at the image origin; the output's first pixel is the image's ``origin``.
    """
    y0, y1, ty = _upsample_axis(np.arange(int(origin[0]), int(origin[0]) + shape[0]), d, coarse.shape[0])
    x0, x1, tx = _upsample_axis(np.arange(int(origin[1]), int(origin[1]) + shape[1]), d, coarse.shape[1])
    rows = coarse[y0] * (1 - ty)[:, None, None] + coarse[y1] * ty[:, None, None]
    if out is None:
        out = np.empty(tuple(shape) + coarse.shape[2:], np.float32)
    np.multiply(rows[:, x0], (1 - tx)[None, :, None], out=out)
    out += rows[:, x1] * tx[None, :, None]
    return out


def _eig2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger, smaller) of the symmetric 2×2 fields [[a, b], [b, c]]."""
    half_tr = 0.5 * (a + c)
    root = np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return half_tr + root, half_tr - root


def _n_outputs(filters) -> int:
    return sum(2 if f in ("hessian", "structure") else 1 for f in filters)


def _scale_filters(img: np.ndarray, s: float, filters, smooth, needed=None) -> np.ndarray:
    """The filters of one scale σ = ``s`` (pixels of ``img``), shape (ny, nx, n_outputs), float32.

    ``needed``: indices of the outputs wanted (default all); a filter none of whose outputs is wanted is
    skipped and its outputs are 0.
    """
    n_out = _n_outputs(filters)
    needed = set(range(n_out)) if needed is None else set(needed)
    out = (np.empty if len(needed) == n_out else np.zeros)(img.shape + (n_out,), np.float32)
    g = smooth(img, s)
    gy, gx = np.gradient(g)
    k = 0
    cache = {}
    for f in filters:
        if not needed & set(range(k, k + (2 if f in ("hessian", "structure") else 1))):
            k += 2 if f in ("hessian", "structure") else 1
            continue
        if f == "gaussian":
            out[..., k] = g
        elif f == "gradient":
            out[..., k] = np.hypot(gx, gy) * s
        elif f in ("log", "hessian"):
            if "h" not in cache:
                gyy, gyx = np.gradient(gy)
                gxy, gxx = np.gradient(gx)
                cache["h"] = (gxx, 0.5 * (gxy + gyx), gyy)
            gxx, gxy, gyy = cache["h"]
            if f == "log":
                out[..., k] = (gxx + gyy) * (s * s)
            else:
                e1, e2 = _eig2(gxx, gxy, gyy)
                out[..., k], out[..., k + 1] = e1 * (s * s), e2 * (s * s)
                k += 1
        elif f == "structure":
            iy, ix = np.gradient(smooth(img, max(_MIN_SIGMA_PX, 0.5 * s)))
            e1, e2 = _eig2(_smooth(ix * ix, s), _smooth(ix * iy, s), _smooth(iy * iy, s))
            out[..., k], out[..., k + 1] = e1 * (s * s), e2 * (s * s)
            k += 1
        elif f == "stdev":
            var = _smooth(img * img, s) - g * g
            out[..., k] = np.sqrt(np.maximum(var, 0.0))
        k += 1
    return out


def sem_filter_bank(normalised: np.ndarray, pixel_size_nm: float, spec: FeatureSpec, *,
                    pyramid: dict | None = None, origin=(0, 0), crop=None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """The SEM filter bank of ``spec`` on a (normalised) image, shape (ny, nx, n_sem_features), float32.

    At each scale σ the image is smoothed once (:func:`_smooth`) and its derivatives are central
    differences of the smoothed image (gradient magnitude, Hessian, LoG = trace of the Hessian, all
    scale-normalised by σ and σ²); the structure tensor smooths products of the derivatives of the image
    smoothed at σ/2; the local standard deviation is ``sqrt(G_σ(I²) − G_σ(I)²)``.

    **Pyramid.** A scale of σ ≥ 2 × ``_PYRAMID_MIN_PX`` pixels is band-limited: it is computed on the grid of
    d × d block means (d the largest power of 2 leaving σ/d ≥ ``_PYRAMID_MIN_PX``; the smoothing there is
    reduced by the block's own variance) and interpolated bilinearly back to the pixels
    (:func:`sem_pyramid`). Those scales then cost a fraction of a full-resolution one, and tiles need a
    halo for the finest scales only. The values are those of that definition, not of the filter on every
    pixel: Gaussian features correlate at 0.99 with the pixel-by-pixel filter, Hessian eigenvalues at 0.91,
    structure-tensor eigenvalues at 0.7 (block means hold less sub-block gradient energy) — the same
    definition is used in training and prediction, and the macro F1 did not change (see ``_PYRAMID_MIN_PX``).

    Parameters
    ----------
    normalised : ndarray, shape (ny, nx)
        SEM image from :func:`normalise_sem` (or a tile of it with its halo).
    pixel_size_nm : float
    spec : FeatureSpec
    pyramid : dict, optional
        :func:`sem_pyramid` of the whole image when ``normalised`` is a tile; computed from ``normalised``
        when omitted (the whole image).
    origin : (int, int)
        Image coordinates of ``normalised``'s first pixel.
    crop : (slice, slice), optional
        Part of ``normalised`` to return (the tile without its halo).
    out : ndarray of float32, optional
        Where to write the result (e.g. the first columns of a tile's whole feature array).

    Returns
    -------
    ndarray of float32
        Columns in the order of ``spec.names`` (the ``sem_*`` ones).
    """
    img = np.asarray(normalised, dtype=np.float32)
    if pyramid is None:
        pyramid = sem_pyramid(img, pixel_size_nm, spec)
    crop = crop or (slice(0, img.shape[0]), slice(0, img.shape[1]))
    cy, cx = (slice(*c.indices(n)[:2]) for c, n in zip(crop, img.shape))
    shape = (cy.stop - cy.start, cx.stop - cx.start)
    n_per = _n_outputs(spec.sem_filters)
    if out is None:
        out = np.empty(shape + (1 + n_per * len(spec.sem_scales_nm),), np.float32)
    out[..., 0] = img[cy, cx]
    smooth = _memo_smooth()

    for i, scale in enumerate(spec.sem_scales_nm):
        cols = slice(1 + i * n_per, 1 + (i + 1) * n_per)
        if i in pyramid:
            d, coarse = pyramid[i]
            # contiguous result, then one strided copy (arithmetic into the strided view is 3× slower)
            out[..., cols] = _upsample(coarse, d, shape, (origin[0] + cy.start, origin[1] + cx.start))
        else:
            out[..., cols] = _scale_filters(img, _sigma_px(scale, pixel_size_nm), spec.sem_filters, smooth)[cy, cx]
    return out


def _relative(values: np.ndarray, q: float = 99.0) -> np.ndarray:
    finite = values[np.isfinite(values)]
    ref = np.percentile(finite, q) if finite.size else 0.0
    return values / ref if ref > 0 else np.zeros_like(values)


def _smooth_nan(image: np.ndarray, sigma_px: float, region: np.ndarray) -> np.ndarray:
    """NaN-aware Gaussian smoothing (normalised convolution) inside ``region``.

    Invalid (NaN) pixels get the weighted mean of their valid neighbours, so the smoothed map reaches
    pixels whose own fit failed; NaN where no valid pixel is near (weight below 1 %) and outside ``region``.
    """
    finite = np.isfinite(image)
    num = ndimage.gaussian_filter(np.where(finite, image, 0.0), sigma_px, mode="nearest")
    den = ndimage.gaussian_filter(finite.astype(float), sigma_px, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[(den < 0.01) | ~region] = np.nan
    return out


def spectral_maps(od_stacks: dict, spec: FeatureSpec, *, egt2g=None, s_edge=None) -> dict:
    """The spectral feature maps on each edge's native STXM grid.

    Parameters
    ----------
    od_stacks : dict of str to Stack
        Aligned OD stacks by edge; every edge of ``spec.edges`` must be present.
    spec : FeatureSpec
    egt2g : EgT2gMap, optional
        Precomputed :func:`ceimap.segment.spectra.egt2g_map` of the Ni-L stack (computed when omitted).
    s_edge : SEdgeMap, optional
        Precomputed :func:`ceimap.segment.spectra.s_edge_map` of the S-L stack (computed when omitted).

    Returns
    -------
    dict of str to (ndarray (ny, nx) float64, str)
        Feature name → (map on the edge's grid, NaN outside its measured region, edge name), in the order
        of ``spec.names``.
    """
    from .signatures import edge_signature
    from .spectra import egt2g_map, s_edge_map

    maps = {}
    for edge in spec.edges:
        od = od_stacks[edge]
        data = np.asarray(od.data, dtype=float)
        valid = od.metadata.get("valid_region") if isinstance(od.metadata, dict) else None
        region = (np.asarray(valid, bool) if valid is not None and np.shape(valid) == data.shape[1:]
                  else np.ones(data.shape[1:], bool))
        sig = edge_signature(od.energies_ev, np.moveaxis(data, 0, -1), edge)
        base = {}
        if edge == "Ni-L":
            if egt2g is None:
                egt2g = egt2g_map(od)
            ok = np.asarray(egt2g.valid, bool) & np.isfinite(egt2g.ratio)
            base["ni_l3"] = _relative(np.where(region, sig["resonance"], np.nan))
            base["ni_absorption"] = _relative(np.where(region, sig["absorption"], np.nan))
            base["egt2g"] = np.where(region & ok, egt2g.ratio, np.nan)
            base["egt2g_valid"] = np.where(region, ok.astype(float), np.nan)
        elif edge == "S-L":
            if s_edge is None:
                s_edge = s_edge_map(od)
            ok = np.asarray(s_edge.valid, bool) & np.isfinite(s_edge.position_ev)
            ref = float(np.median(s_edge.position_ev[ok])) if ok.any() else 0.0
            base["s_jump"] = _relative(np.where(region, sig["resonance"], np.nan))
            base["s_shift_ev"] = np.where(region & ok, s_edge.position_ev - ref, np.nan)
            base["s_valid"] = np.where(region, ok.astype(float), np.nan)
        for feat in SPECTRAL_BY_EDGE[edge]:
            scales = (0.0,) if feat.endswith("_valid") else spec.spectral_scales_nm
            for s in scales:
                name = feat if s == 0 else f"{feat}_{s:g}nm"
                m = base[feat] if s == 0 else _smooth_nan(base[feat], float(s) / float(od.pixel_size_nm), region)
                maps[name] = (m, edge)
    return maps


def _tile_matrix(matrix: np.ndarray, y0: int, x0: int) -> np.ndarray:
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    return shift @ np.asarray(matrix, dtype=float)


def iter_feature_tiles(sem_image: np.ndarray, pixel_size_nm: float, spec: FeatureSpec, maps: dict,
                       matrices: dict, *, tile_px: int = 1024,
                       mask: np.ndarray | None = None) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """Feature tiles covering the SEM image (identical to computing the whole image at once).

    Each tile is filtered with a halo as wide as the largest filter's support, so its values equal
    those of the untiled computation; memory is bounded by the tile, not by the image.

    Parameters
    ----------
    sem_image : ndarray, shape (ny, nx)
        The raw SEM image (normalised here, with percentiles of the whole image).
    pixel_size_nm : float
        SEM pixel size.
    spec : FeatureSpec
    maps : dict
        :func:`spectral_maps` output.
    matrices : dict of str to ndarray (3, 3)
        Registration matrix (STXM pixel → SEM pixel) of each edge.
    tile_px : int
        Tile side.
    mask : ndarray of bool, optional
        Only tiles holding a True pixel are computed (sparse annotations on a large image cost little).

    Yields
    ------
    (slice, slice), ndarray of float32, shape (tile_ny, tile_nx, n_features)
    """
    norm, _ = normalise_sem(sem_image, spec.sem_percentiles)
    pyramid, sources = sem_pyramid(norm, pixel_size_nm, spec), spectral_sources(maps)
    for slices in tile_slices(norm.shape, tile_px, mask):
        yield slices, feature_tile(norm, slices, pixel_size_nm, spec, maps, matrices, pyramid=pyramid,
                                   sources=sources)


def tile_slices(shape, tile_px: int, mask: np.ndarray | None = None) -> list:
    """The (row, column) slices of the tiles of :func:`iter_feature_tiles`, in row-major order."""
    ny, nx = int(shape[0]), int(shape[1])
    out = []
    for y0 in range(0, ny, tile_px):
        for x0 in range(0, nx, tile_px):
            y1, x1 = min(ny, y0 + tile_px), min(nx, x0 + tile_px)
            if mask is None or mask[y0:y1, x0:x1].any():
                out.append((slice(y0, y1), slice(x0, x1)))
    return out


def feature_tile(normalised: np.ndarray, slices: tuple, pixel_size_nm: float, spec: FeatureSpec, maps: dict,
                 matrices: dict, *, pyramid: dict | None = None, sources: dict | None = None) -> np.ndarray:
    """Features of one tile of the normalised SEM image (equal to the untiled values).

    The full-resolution scales are filtered on the tile with a halo (:func:`sem_halo_px`), the coarse ones
    interpolated from ``pyramid`` (:func:`sem_pyramid` of the whole image; computed when omitted — pass it,
    and ``sources`` (:func:`spectral_sources`), when computing many tiles). Independent of other tiles, so
    tiles can be computed in parallel threads (NumPy and SciPy's filters release the GIL).
    """
    if pyramid is None:
        pyramid = sem_pyramid(normalised, pixel_size_nm, spec)
    ys, xs = slices
    ny, nx = normalised.shape
    halo = sem_halo_px(spec, pixel_size_nm)
    y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
    ya, xa = max(0, y0 - halo), max(0, x0 - halo)
    yb, xb = min(ny, y1 + halo), min(nx, x1 + halo)
    n_sem = 1 + _n_outputs(spec.sem_filters) * len(spec.sem_scales_nm)
    out = np.zeros((y1 - y0, x1 - x0, n_sem + len(maps) + 1), np.float32)
    sem_filter_bank(normalised[ya:yb, xa:xb], pixel_size_nm, spec, pyramid=pyramid, origin=(ya, xa),
                    crop=(slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)), out=out[..., :n_sem])
    _add_spectral(out, n_sem, maps, matrices, y0, x0, sources)
    return out


def spectral_sources(maps: dict) -> dict:
    """Per edge, the spectral maps prepared for resampling onto SEM pixels (:func:`tile_sampler`, :func:`feature_tile`).

    Returns {edge: (column indices among the maps, NaN-filled maps (k, ny, nx) float64, NaN masks (k, ny, nx))};
    NaNs are filled with the nearest finite value (as :func:`ceimap.segment.register.warp_to_sem` does), once per image
    instead of once per tile, and flagged so that they never bleed into their neighbours.
    """
    from .register import _fill_nan_nearest

    names = list(maps)
    out = {}
    for edge in dict.fromkeys(edge for _, edge in maps.values()):
        cols = [i for i, name in enumerate(names) if maps[name][1] == edge]
        frames = [_fill_nan_nearest(np.asarray(maps[names[i]][0], dtype=float)) for i in cols]
        filled = np.stack([f for f, _ in frames])
        nans = np.stack([np.zeros(f.shape, bool) if m is None else m for f, m in frames])
        out[edge] = (cols, filled, nans)
    return out


def _bilinear(stack: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of every map of ``stack`` (k, ny, nx) at points (row ``sy``, column ``sx``),
    edge values held beyond the outer pixel centres (``scipy.ndimage.map_coordinates`` order 1, mode
    "nearest", the interpolation :func:`ceimap.segment.register.warp_to_sem` uses); shape (k, n)."""
    from scipy import ndimage

    coords = np.stack([np.asarray(sy, float), np.asarray(sx, float)])
    return np.stack([ndimage.map_coordinates(m, coords, order=1, mode="nearest") for m in stack]) if len(stack) \
        else np.zeros((0, coords.shape[1]))


def _spectral_into(out: np.ndarray, yy: np.ndarray, xx: np.ndarray, n_sem: int, boxes: dict) -> None:
    """Write the spectral columns (0 where unknown) and the STXM-field flag of tile pixels (``yy``, ``xx``) into
    the rows ``out`` (n, n_features); ``boxes`` from :func:`_spectral_boxes`.

    Each SEM pixel takes the bilinear interpolation of the STXM map at the STXM coordinates of its centre;
    a pixel whose nearest STXM pixel has no value (NaN) gets none (0), as does a pixel outside the STXM
    pixel squares. ``stxm_field`` is 1 where every edge's ``*_valid`` maps have a value (the measured
    region of each edge).
    """
    n = yy.size
    in_field = np.ones(n, bool)
    for edge, entry in boxes.items():
        if entry is None:
            in_field[:] = False
            continue
        (bys, bxs), inv, columns, filled, nans, valid_rows, write = entry
        h, w = filled.shape[1:]
        inside = (yy >= bys.start) & (yy < bys.stop) & (xx >= bxs.start) & (xx < bxs.stop)
        rows = np.flatnonzero(inside)
        py = (yy[rows] - bys.start).astype(float)
        px = (xx[rows] - bxs.start).astype(float)
        sx = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]
        sy = inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
        unknown = (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)
        values = _bilinear(filled, sy, sx)
        iy = np.clip(np.floor(sy + 0.5).astype(np.intp), 0, h - 1)
        ix = np.clip(np.floor(sx + 0.5).astype(np.intp), 0, w - 1)
        missing = nans[:, iy * w + ix] | unknown[None]
        field = np.zeros(n, bool)
        field[rows] = ~np.any(missing[valid_rows], axis=0)
        in_field &= field
        values[missing] = 0.0
        for j in write:
            out[rows, n_sem + columns[j]] = values[j]
    out[:, -1] = in_field


def _spectral_boxes(sources: dict, maps: dict, matrices: dict, y0: int, x0: int, shape,
                    wanted_maps=None) -> dict:
    """Per edge, what :func:`_spectral_into` needs for one tile, or None when the STXM field misses the tile:
    the tile's bounding box of the field, the inverse of its SEM→STXM matrix, and the maps to resample (those
    wanted, default all, and the ``*_valid`` ones, which define the field)."""
    names = list(maps)
    boxes = {}
    for edge, (cols, filled, nans) in sources.items():
        matrix = _tile_matrix(matrices[edge], y0, x0)
        box = _field_box(matrix, filled.shape[1:], shape)
        if box is None:
            boxes[edge] = None
            continue
        keep = [k for k, i in enumerate(cols)
                if wanted_maps is None or i in wanted_maps or names[i].endswith("_valid")]
        columns = [cols[k] for k in keep]
        boxes[edge] = (box, np.linalg.inv(_tile_matrix(matrix, box[0].start, box[1].start)), columns,
                       np.ascontiguousarray(filled[keep]), np.ascontiguousarray(nans[keep]).reshape(len(keep), -1),
                       [j for j, i in enumerate(columns) if names[i].endswith("_valid")],
                       [j for j, i in enumerate(columns) if wanted_maps is None or i in wanted_maps])
    return boxes


def tile_sampler(normalised: np.ndarray, slices: tuple, pixel_size_nm: float, spec: FeatureSpec, maps: dict,
                 matrices: dict, *, pyramid: dict | None = None, sources: dict | None = None,
                 columns=None):
    """Features of chosen pixels of one tile, computed for those pixels only.

    The full-resolution scales are filtered on the whole tile (with its halo, as :func:`feature_tile`); the
    pyramid scales are interpolated and the spectral maps resampled at the requested pixels only. The values
    equal :func:`feature_tile`'s at those pixels, bit for bit (same arithmetic, element by element): a
    classifier evaluated on a lattice of the tile and near class changes
    (:meth:`ceimap.segment.classifier.PixelClassifier.predict`) then pays for the features of those pixels only.

    Parameters
    ----------
    normalised, slices, pixel_size_nm, spec, maps, matrices, pyramid
        As :func:`feature_tile`.
    sources : dict, optional
        :func:`spectral_sources` of ``maps`` (computed when omitted: pass it when sampling many tiles).
    columns : iterable of int, optional
        Feature columns wanted (default all); the others are returned as 0. A classifier passes the
        columns its trees split on.

    Returns
    -------
    callable
        ``at(yy, xx)`` with tile-local row and column indices (int arrays of equal length) returning the
        feature rows, shape (n, n_features), float32.
    """
    if pyramid is None:
        pyramid = sem_pyramid(normalised, pixel_size_nm, spec)
    if sources is None:
        sources = spectral_sources(maps)
    n_feat = len(spec.names)
    wanted = set(range(n_feat)) if columns is None else {int(c) for c in columns}
    ys, xs = slices
    ny, nx = normalised.shape
    y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
    n_per = _n_outputs(spec.sem_filters)
    n_sem = 1 + n_per * len(spec.sem_scales_nm)
    intensity = normalised[y0:y1, x0:x1]
    # full-resolution scales: filtered on the tile and its halo (only the outputs wanted)
    full, halo = {}, sem_halo_px(spec, pixel_size_nm)
    smooth = _memo_smooth()

    ya, xa = max(0, y0 - halo), max(0, x0 - halo)
    yb, xb = min(ny, y1 + halo), min(nx, x1 + halo)
    img = np.asarray(normalised[ya:yb, xa:xb], dtype=np.float32)
    for i, scale in enumerate(spec.sem_scales_nm):
        need = [j for j in range(n_per) if 1 + i * n_per + j in wanted]
        if i in pyramid or not need:
            continue
        f = _scale_filters(img, _sigma_px(scale, pixel_size_nm), spec.sem_filters, smooth, need)
        full[i] = (f.reshape(-1, n_per), np.array([j not in need for j in range(n_per)]))  # row-major rows
    del smooth                                      # the smoothed tiles are not needed any more
    coarse_rows = {i: (d, c.reshape(-1, n_per), c.shape[:2],
                       np.array([1 + i * n_per + j not in wanted for j in range(n_per)]))
                   for i, (d, c) in pyramid.items() if any(1 + i * n_per + j in wanted for j in range(n_per))}
    boxes = _spectral_boxes(sources, maps, matrices, y0, x0, (y1 - y0, x1 - x0),
                            {c - n_sem for c in wanted if n_sem <= c < n_feat - 1})

    def at(yy, xx):
        yy, xx = np.asarray(yy, np.intp), np.asarray(xx, np.intp)
        n = yy.size
        out = np.zeros((n, n_feat), np.float32)
        if 0 in wanted:
            out[:, 0] = intensity[yy, xx]
        if full:
            flat = (yy + (y0 - ya)) * (xb - xa) + (xx + (x0 - xa))
            for i, (f, unwanted) in full.items():
                val = f.take(flat, axis=0)
                val[:, unwanted] = 0.0
                out[:, 1 + i * n_per:1 + (i + 1) * n_per] = val
        axes = {}
        for i, (d, c, (ncy, ncx), unwanted) in coarse_rows.items():
            if d not in axes:
                cy0, cy1, ty = _upsample_axis(yy + y0, d, ncy)
                cx0, cx1, tx = _upsample_axis(xx + x0, d, ncx)
                axes[d] = (cy0 * ncx, cy1 * ncx, cx0, cx1, ty[:, None], tx[:, None])
            ry0, ry1, cx0, cx1, ty, tx = axes[d]
            r0 = c.take(ry0 + cx0, axis=0) * (1 - ty) + c.take(ry1 + cx0, axis=0) * ty
            r1 = c.take(ry0 + cx1, axis=0) * (1 - ty) + c.take(ry1 + cx1, axis=0) * ty
            val = r0 * (1 - tx)
            val += r1 * tx
            val[:, unwanted] = 0.0
            out[:, 1 + i * n_per:1 + (i + 1) * n_per] = val
        _spectral_into(out, yy, xx, n_sem, boxes)
        return out

    return at


def _upsample_axis(u_px: np.ndarray, d: int, nc: int):
    """:func:`_upsample`'s interpolation indices and weights at image coordinates ``u_px`` (same arithmetic)."""
    u = (u_px - 0.5 * (d - 1)) / d
    i0 = np.clip(np.floor(u).astype(int), 0, max(nc - 2, 0))
    t = np.clip(u - i0, 0.0, 1.0).astype(np.float32) if nc > 1 else np.zeros(u.shape, np.float32)
    return i0, np.minimum(i0 + 1, nc - 1), t


def _field_box(matrix: np.ndarray, stxm_shape, tile_shape) -> tuple[slice, slice] | None:
    """The part of a tile (pixel slices) that the STXM field covers, or None."""
    h, w = stxm_shape
    corners = np.array([[-0.5, -0.5, 1.0], [w - 0.5, -0.5, 1.0], [-0.5, h - 0.5, 1.0], [w - 0.5, h - 0.5, 1.0]]).T
    xy = (np.asarray(matrix, float) @ corners)[:2]
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in xy.min(axis=1))
    x1 = min(tile_shape[1], int(np.ceil(xy[0].max())) + 2)
    y1 = min(tile_shape[0], int(np.ceil(xy[1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def _add_spectral(out: np.ndarray, n_sem: int, maps: dict, matrices: dict, y0: int, x0: int,
                  sources: dict | None = None) -> None:
    """Write the spectral columns and the STXM-field flag of a tile's feature array (zeros outside)."""
    if sources is None:
        sources = spectral_sources(maps)
    h, w = out.shape[:2]
    yy, xx = np.divmod(np.arange(h * w), w)
    flat = out.reshape(h * w, out.shape[2])
    _spectral_into(flat, yy, xx, n_sem, _spectral_boxes(sources, maps, matrices, y0, x0, (h, w)))


def feature_image(sem_image: np.ndarray, pixel_size_nm: float, spec: FeatureSpec, maps: dict,
                  matrices: dict, *, tile_px: int = 1024) -> np.ndarray:
    """All features of every SEM pixel, shape (ny, nx, n_features), float32 (small images only)."""
    ny, nx = np.shape(sem_image)
    out = np.empty((ny, nx, len(spec.names)), np.float32)
    for (ys, xs), tile in iter_feature_tiles(sem_image, pixel_size_nm, spec, maps, matrices, tile_px=tile_px):
        out[ys, xs] = tile
    return out


def features_at(mask: np.ndarray, sem_image: np.ndarray, pixel_size_nm: float, spec: FeatureSpec,
                maps: dict, matrices: dict, *, tile_px: int = 1024) -> np.ndarray:
    """Features of the pixels where ``mask`` is True, in row-major order, shape (n, n_features), float32.

    Equal to the pixels' rows of :func:`feature_image`; computed at those pixels only (:func:`tile_sampler`),
    tile by tile.
    """
    mask = np.asarray(mask, bool)
    yy, xx = np.nonzero(mask)
    out = np.empty((yy.size, len(spec.names)), np.float32)
    if not yy.size:
        return out
    norm, _ = normalise_sem(sem_image, spec.sem_percentiles)
    pyramid, sources = sem_pyramid(norm, pixel_size_nm, spec), spectral_sources(maps)
    for ys, xs in tile_slices(norm.shape, tile_px, mask):
        sel = np.flatnonzero((yy >= ys.start) & (yy < ys.stop) & (xx >= xs.start) & (xx < xs.stop))
        at = tile_sampler(norm, (ys, xs), pixel_size_nm, spec, maps, matrices, pyramid=pyramid, sources=sources)
        out[sel] = at(yy[sel] - ys.start, xx[sel] - xs.start)
    return out
