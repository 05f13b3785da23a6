"""STXM forward model: fine-grid optical density → transmitted counts of one energy stack.

For each energy frame ``k``:

1. OD on the fine grid (Beer–Lambert, linear over phases): ``OD = sum_m map_m(x, y) * basis_m(E_k)``, where the
   maps carry lamella thickness (units of 100 nm), solid fraction and Ni chemistry;
2. transmission ``exp(-OD)`` on the fine grid, averaged over 2 × 2 fine-pixel blocks (the beam integrates
   intensity, so the average is taken after the exponential);
3. blurred by the Gaussian zone-plate spot (FWHM ``psf_fwhm_nm``; the block's own box blur is subtracted
   from the Gaussian's variance);
4. sampled with cubic splines at the STXM pixel centres, mapped to the SEM frame by the stack's similarity
   transform (STXM px → SEM px: scale = true STXM pixel / SEM pixel, rotation, offset) after the frame's drift;
5. counts ``~ Poisson(I0(E_k) * ring(k) / ring(0) * transmission)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, sparse

from .spec import EdgeSpec, LamellaSpec

BLOCK = 2
"""Fine pixels per imaging-grid pixel along each axis."""

FRAME_OVERHEAD_S = 2.0
"""Dead time between energy frames (motor moves), used for the ring-current decay."""


@dataclass(frozen=True)
class StackGeometry:
    """Where one stack's pixels are on the sample.

    Attributes
    ----------
    matrix : ndarray (3, 3)
        STXM pixel (x, y, 1) → SEM pixel (x, y, 1) for the reference frame (frame 0).
    shape_yx : (int, int)
    drift_px : ndarray (n_energy, 2)
        (dy, dx) displacement of the sample image in frame k relative to frame 0, STXM pixels.
    true_pixel_nm : float
        Physical STXM pixel size (nominal × (1 + scale_error)).
    """

    matrix: np.ndarray
    shape_yx: tuple[int, int]
    drift_px: np.ndarray
    true_pixel_nm: float


def stack_geometry(spec: LamellaSpec, es: EdgeSpec, rng: np.random.Generator) -> StackGeometry:
    """Similarity transform STXM → SEM and the per-frame drift of one stack."""
    true_px = es.stxm_pixel_nm * (1.0 + es.scale_error)
    nx = int(round(es.field_fraction * spec.field_width_nm / es.stxm_pixel_nm))
    ny = int(round(es.field_fraction * spec.field_height_nm / es.stxm_pixel_nm))
    s = true_px / spec.sem_pixel_nm
    th = np.deg2rad(es.rotation_deg)
    rot = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    nx_sem, ny_sem = sem_shape(spec)[1], sem_shape(spec)[0]
    c_sem = np.array([(nx_sem - 1) / 2.0, (ny_sem - 1) / 2.0]) + np.array(es.offset_nm) / spec.sem_pixel_nm
    c_stxm = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = c_sem - rot @ c_stxm
    drift = drift_walk(len(es.energies_ev), es.drift_total_px, rng)
    return StackGeometry(matrix=m, shape_yx=(ny, nx), drift_px=drift, true_pixel_nm=true_px)


def sem_shape(spec: LamellaSpec) -> tuple[int, int]:
    """(rows, columns) of the SEM image."""
    return (int(round(spec.field_height_nm / spec.sem_pixel_nm)), int(round(spec.field_width_nm / spec.sem_pixel_nm)))


def drift_walk(n_frames: int, total_px: float, rng: np.random.Generator) -> np.ndarray:
    """Sample drift: a random walk plus frame jitter, zero at frame 0, largest excursion ``total_px``.

    Returns
    -------
    ndarray (n_frames, 2)
        (dy, dx) in STXM pixels.
    """
    steps = rng.standard_normal((n_frames, 2)) * 0.12
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0) + rng.standard_normal((n_frames, 2)) * 0.06
    walk -= walk[0]
    peak = np.hypot(walk[:, 0], walk[:, 1]).max()
    return walk * (total_px / peak) if peak > 0 else walk


def i0_spectrum(es: EdgeSpec, rng: np.random.Generator) -> np.ndarray:
    """Incident counts per pixel per dwell at each energy (at the first frame's ring current).

    A smooth beamline shape (grating efficiency and undulator/bending-magnet curvature), a weak absorption
    dip at the Ni L3 edge from Ni-coated optics (Ni-L only) and 0.5 % frame-to-frame beam jitter.
    """
    e = np.asarray(es.energies_ev, float)
    u = (e - e.mean()) / (np.ptp(e) / 2.0)
    shape = 1.0 - rng.uniform(0.1, 0.25) * u**2 + rng.uniform(-0.12, 0.12) * u
    if es.edge == "Ni-L":
        shape *= 1.0 - 0.025 * np.exp(-0.5 * ((e - 853.0) / 0.9) ** 2)
    else:
        shape *= 1.0 + rng.uniform(0.15, 0.35) * (e - e[0]) / np.ptp(e)
    shape /= shape.max()
    jitter = 1.0 + 0.005 * rng.standard_normal(len(e))
    return es.i0_counts * shape * jitter


def ring_current(es: EdgeSpec, n_pixels: int) -> np.ndarray:
    """Storage-ring current (mA) at each frame: exponential decay with the beam lifetime."""
    frame_s = n_pixels * es.dwell_ms / 1000.0 + FRAME_OVERHEAD_S
    t = np.arange(len(es.energies_ev)) * frame_s
    return es.ring_current_ma * np.exp(-t / (es.ring_lifetime_h * 3600.0))


def stxm_sample_points(geom: StackGeometry, spec: LamellaSpec, origin_nm: float, fine_px_nm: float):
    """Imaging-grid (row, col) coordinates of the STXM pixel centres of the reference frame, (2, ny*nx)."""
    ny, nx = geom.shape_yx
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    sem = geom.matrix @ pts
    x_nm, y_nm = sem[0] * spec.sem_pixel_nm, sem[1] * spec.sem_pixel_nm
    to_block = lambda v: ((v - origin_nm) / fine_px_nm - (BLOCK - 1) / 2.0) / BLOCK   # noqa: E731
    return np.stack([to_block(y_nm), to_block(x_nm)])


def drift_in_imaging_grid(geom: StackGeometry, spec: LamellaSpec, fine_px_nm: float) -> np.ndarray:
    """Per-frame displacement (rows, cols) of the sampled points on the imaging grid caused by the drift.

    STXM pixel (x, y) of frame k sees the sample point of reference pixel (x - dx_k, y - dy_k), i.e. the
    SEM point ``M (x, y, 1) - A (dx_k, dy_k)`` with ``A`` the linear part of the matrix.
    """
    a = geom.matrix[:2, :2]
    d_sem = -(a @ geom.drift_px[:, ::-1].T).T          # (n, 2) as (x, y) in SEM px
    d_block = d_sem * spec.sem_pixel_nm / (BLOCK * fine_px_nm)
    return d_block[:, ::-1]                             # (row, col)


def cubic_sampling_matrix(coords: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """Sparse matrix of Keys cubic-convolution weights sampling an image of ``shape`` at ``coords``."""
    ny, nx = shape
    r, c = coords
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    rows, cols, vals = [], [], []
    idx = np.arange(r.size)

    def keys(d):
        d = np.abs(d)
        return np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))

    for oy in (-1, 0, 1, 2):
        wy = keys(r - (r0 + oy))
        iy = np.clip(r0 + oy, 0, ny - 1)
        for ox in (-1, 0, 1, 2):
            wx = keys(c - (c0 + ox))
            ix = np.clip(c0 + ox, 0, nx - 1)
            rows.append(idx)
            cols.append(iy * nx + ix)
            vals.append(wy * wx)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(r.size, ny * nx))


def transmission_frames(maps: np.ndarray, basis: np.ndarray, chunk: int = 8, tol_od: float = 0.1):
    """Yield block-averaged transmission images ``mean over 2 x 2 fine pixels of exp(-OD)``, one per energy.

    Where the four fine pixels of a block have nearly the same OD at every energy — each map's range in
    the block times the largest value of its basis spectrum below ``tol_od`` — the mean of the exponential
    equals the exponential of the mean OD to better than ``tol_od**2 / 8`` relative (0.13 %); only the
    other blocks (phase boundaries) are computed pixel by pixel.

    Parameters
    ----------
    maps : ndarray (n_maps, ny, nx) float32
        Fine-grid coefficient maps (ny, nx multiples of ``BLOCK``).
    basis : ndarray (n_energy, n_maps)
        Basis spectra: OD(E_k) = basis[k] @ maps.
    """
    n_maps, ny, nx = maps.shape
    sub = [maps[:, i::BLOCK, j::BLOCK] for i in range(BLOCK) for j in range(BLOCK)]
    mean = sum(sub) / float(len(sub))
    stacked = np.stack(sub)
    od_range = (stacked.max(axis=0) - stacked.min(axis=0)) * np.abs(basis).max(axis=0)[:, None, None]
    hetero = np.flatnonzero(od_range.max(axis=0) > tol_od)
    del stacked, od_range
    nb = mean.shape[1] * mean.shape[2]
    flat_mean = mean.reshape(n_maps, nb)
    fine_h = np.stack([s_.reshape(n_maps, nb)[:, hetero] for s_ in sub], axis=1).reshape(n_maps, -1)
    b = basis.astype(np.float32)
    for k0 in range(0, basis.shape[0], chunk):
        bb = b[k0:k0 + chunk]
        t = bb @ flat_mean
        np.negative(t, out=t)
        np.exp(t, out=t)
        th = bb @ fine_h
        np.negative(th, out=th)
        np.exp(th, out=th)
        t[:, hetero] = th.reshape(len(bb), len(sub), -1).mean(axis=1)
        for frame in t:
            yield frame.reshape(mean.shape[1], mean.shape[2])


def simulate_counts(maps: np.ndarray, basis: np.ndarray, geom: StackGeometry, es: EdgeSpec, spec: LamellaSpec,
                    origin_nm: float, fine_px_nm: float, i0: np.ndarray, ring: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Transmitted counts (n_energy, ny, nx) of one stack (float64 holding integers).

    The PSF blur and the frame's drift are applied together in Fourier space (exact sub-pixel shift, so
    no frame is smoothed more than another by interpolation); the shifted image is then sampled at the
    reference frame's STXM pixel centres by one fixed cubic-convolution matrix.
    """
    sigma_nm = es.psf_fwhm_nm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    box_var = (BLOCK * fine_px_nm) ** 2 / 12.0
    sigma_block = np.sqrt(max(sigma_nm**2 - box_var, 1e-6)) / (BLOCK * fine_px_nm)
    ny, nx = geom.shape_yx
    coords = stxm_sample_points(geom, spec, origin_nm, fine_px_nm)
    shifts = drift_in_imaging_grid(geom, spec, fine_px_nm)
    # crop the maps to the scanned area plus the PSF and drift reach (the FFT's wrap-around stays outside)
    reach = 4.0 * sigma_block + np.abs(shifts).max() + 4.0
    lo = np.floor(coords.min(axis=1) - reach).astype(int)
    hi = np.ceil(coords.max(axis=1) + reach).astype(int) + 1
    size = [fft.next_fast_len(int(h - l), real=True) for l, h in zip(lo, hi)]
    full_b = (maps.shape[1] // BLOCK, maps.shape[2] // BLOCK)
    before = [max(-int(l), 0) for l in lo]
    after = [max(int(l) + n - f, 0) for l, n, f in zip(lo, size, full_b)]
    if any(before) or any(after):   # the scan reaches the grid's edge: extend the edge values (vacuum)
        maps = np.pad(maps, [(0, 0)] + [(b * BLOCK, a * BLOCK) for b, a in zip(before, after)], mode="edge")
        lo = [int(l) + b for l, b in zip(lo, before)]
    maps = maps[:, lo[0] * BLOCK:(lo[0] + size[0]) * BLOCK, lo[1] * BLOCK:(lo[1] + size[1]) * BLOCK]
    coords = coords - np.array(lo, float)[:, None] + np.array(before, float)[:, None]
    shape_b = (size[0], size[1])
    sampler = cubic_sampling_matrix(coords, shape_b)
    fy = np.fft.fftfreq(shape_b[0])
    fx = np.fft.rfftfreq(shape_b[1])
    gy = np.exp(-2.0 * np.pi**2 * sigma_block**2 * fy**2)
    gx = np.exp(-2.0 * np.pi**2 * sigma_block**2 * fx**2)
    out = np.empty((basis.shape[0], ny, nx))
    # one noise stream per frame: the counts of a frame depend only on that frame's expected counts
    frame_seeds = rng.integers(0, 2**63 - 1, size=basis.shape[0])
    for k, frame in enumerate(transmission_frames(maps, basis)):
        # blur and sample f at (p + shift): g(p) = f(p + shift)  <=>  G = F exp(+2 pi i freq . shift);
        # both factors are separable in (row, col)
        py = (gy * np.exp(2j * np.pi * fy * shifts[k, 0])).astype(np.complex64)
        px_ = (gx * np.exp(2j * np.pi * fx * shifts[k, 1])).astype(np.complex64)
        spec_f = fft.rfft2(frame, workers=-1)
        spec_f *= py[:, None]
        spec_f *= px_[None, :]
        blurred = fft.irfft2(spec_f, s=shape_b, workers=-1)
        t = (sampler @ blurred.ravel()).reshape(ny, nx)
        np.clip(t, 0.0, 1.0, out=t)
        out[k] = np.random.default_rng(frame_seeds[k]).poisson(i0[k] * ring[k] / ring[0] * t)
    return out
