"""Hand-made lamella scenes of exactly known geometry and values for the stats tests (no generator code).

A scene is a grid of disk-shaped NMC particles in electrolyte. Every particle wears an interphase band of a
known width, except over one angular sector where it faces a void instead. e_g/t_2g is simulated from
intensities: each NMC SEM pixel has t2g = 1 and eg = ratio, each interphase pixel holds a fraction of that Ni
(``interphase_ni``) with a low ratio (``interphase_ratio``) — the contamination that makes an NMC surface band
next to the interphase read low even when the NMC itself is unchanged; the intensities are blurred by the probe
(Gaussian of FWHM ``psf_fwhm_nm``), summed over each STXM pixel's footprint, and the measured ratio is
eg_sum / t2g_sum plus Gaussian noise — so surface pixels mix with their neighbours as in a real map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import erfc

SEM_PIXEL_NM = 10.0
STXM_SCALE = 4                      # SEM pixels per STXM pixel
STXM_PIXEL_NM = SEM_PIXEL_NM * STXM_SCALE
# STXM pixel (x, y) covers SEM pixels 4x .. 4x+3: its centre is SEM 4x + 1.5
NI_MATRIX = np.array([[STXM_SCALE, 0, 1.5], [0, STXM_SCALE, 1.5], [0, 0, 1.0]])


def ring_classes(r_inner, r_outer, cy, cx, shape=(220, 220)):
    """Disk of NMC (radius r_inner, pixels) in an interphase ring (to r_outer) in electrolyte."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(yy - cy, xx - cx)
    classes = np.full(shape, 3, np.uint8)
    classes[r <= r_outer] = 2
    classes[r <= r_inner] = 1
    return classes, (classes == 1).astype(np.uint32)


def lamella_scene(seed=0, *, effect=-0.15, band_px=8, effect_depth_nm=100.0, n_rows=3, n_cols=4, cell_px=160,
                  base_sd=0.1, noise_sd=0.02, psf_fwhm_nm=50.0, void_sector_deg=120.0, band_sd_px=0.0,
                  interphase_ni=0.35, interphase_ratio=1.0):
    """A lamella with known truth.

    Returns
    -------
    dict
        classes, particles (SEM grid), egt2g, egt2g_sigma, egt2g_valid, amplitude_t2g, amplitude_eg (STXM
        grid; heights per unit NMC Ni), truth dict with
        per-particle ``base``, ``radius_px``, band width, ``effect``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = n_rows * cell_px, n_cols * cell_px
    yy, xx = np.mgrid[0:ny, 0:nx]
    classes = np.full((ny, nx), 3, np.uint8)
    particles = np.zeros((ny, nx), np.uint32)
    ratio_sem = np.zeros((ny, nx))
    bases, radii = [], []
    pid = 0
    for i in range(n_rows):
        for j in range(n_cols):
            pid += 1
            cy = (i + 0.5) * cell_px + rng.uniform(-5, 5)
            cx = (j + 0.5) * cell_px + rng.uniform(-5, 5)
            radius = rng.uniform(42, 58)
            band = band_px + (rng.normal(0, band_sd_px) if band_sd_px else 0.0)
            r = np.hypot(yy - cy, xx - cx)
            ang = np.degrees(np.arctan2(yy - cy, xx - cx))
            start = rng.uniform(-180, 180)
            sector = ((ang - start) % 360) < void_sector_deg
            cell = r < cell_px / 2 - 2
            classes[cell & sector & (r > radius) & (r <= radius + 25)] = 4
            classes[cell & ~sector & (r > radius) & (r <= radius + band)] = 2
            disk = r <= radius
            classes[disk] = 1
            particles[disk] = pid
            base = 1.5 + rng.normal(0, base_sd)
            ratio_sem[disk] = base
            bases.append(base)
            radii.append(radius)
    # surface reduction next to the interphase (electrolyte contact), decaying as erfc(depth / depth scale)
    inter = classes == 2
    depth_nm = (ndimage.distance_transform_edt(~inter) - 0.5) * SEM_PIXEL_NM
    nmc = particles > 0
    ratio_sem[nmc] += effect * erfc(np.maximum(depth_nm[nmc], 0.0) / effect_depth_nm)
    ratio_sem[inter] = interphase_ratio
    ni = np.where(nmc, 1.0, np.where(inter, interphase_ni, 0.0))
    sigma_px = psf_fwhm_nm / 2.3548 / SEM_PIXEL_NM
    t2g = ndimage.gaussian_filter(ni, sigma_px)
    eg = ndimage.gaussian_filter(ni * ratio_sem, sigma_px)
    s = STXM_SCALE
    t2g_s = t2g.reshape(ny // s, s, nx // s, s).sum(axis=(1, 3))
    eg_s = eg.reshape(ny // s, s, nx // s, s).sum(axis=(1, 3))
    valid = t2g_s > 0.3 * s * s
    egt2g = np.where(valid, eg_s / np.maximum(t2g_s, 1e-12), np.nan)
    egt2g = egt2g + rng.normal(0, noise_sd, egt2g.shape)
    sigma = np.where(valid, noise_sd, np.nan)
    # fitted peak heights (per unit NMC), with noise of the same relative size as the ratio's, drawn last so
    # that the maps above do not depend on it
    amp_t = t2g_s / (s * s) + rng.normal(0, noise_sd / 2, t2g_s.shape)
    amp_e = eg_s / (s * s) + rng.normal(0, noise_sd / 2, eg_s.shape)
    return {"classes": classes, "particles": particles, "egt2g": egt2g, "egt2g_sigma": sigma,
            "egt2g_valid": valid, "ratio_sem": ratio_sem, "amplitude_t2g": amp_t, "amplitude_eg": amp_e,
            "truth": {"base": np.array(bases), "radius_px": np.array(radii), "band_px": band_px,
                      "effect": effect}}


def ni_map_from_truth(lamella, noise_sd=0.03, seed=0):
    """A measured-like e_g/t_2g map on the Ni-L STXM grid from a generated lamella's SEM-grid truth.

    Ni weights (NMC 1, interphase ``spec.interphase_ni_fraction``) and weight × ratio are blurred by the probe
    convolved with the pixel footprint (Gaussian of sigma_eff), sampled at the STXM pixel centres through
    the truth matrix, divided, and given Gaussian noise. Returns (egt2g, sigma, valid, matrix, stxm_pixel_nm,
    psf_fwhm_nm).
    """
    truth = lamella.truth
    tf = truth["transforms"]["Ni-L"]
    matrix = np.asarray(tf["matrix"], float)
    pix, psf = float(tf["stxm_pixel_nm"]), float(tf["psf_fwhm_nm"])
    classes = truth["classes"]
    sem_px = float(truth["info"]["sem_pixel_nm"])
    ratio = np.nan_to_num(np.asarray(truth["egt2g"], float))
    w = np.where(classes == 1, 1.0, np.where(classes == 2, lamella.spec.interphase_ni_fraction, 0.0))
    sigma_px = np.sqrt((psf / 2.3548) ** 2 + pix ** 2 / 12) / sem_px
    w_b = ndimage.gaussian_filter(w, sigma_px)
    e_b = ndimage.gaussian_filter(w * ratio, sigma_px)
    ny, nx = lamella.stacks["Ni-L"].data.shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    sx = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    sy = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    w_s = ndimage.map_coordinates(w_b, [sy, sx], order=1, cval=0.0)
    e_s = ndimage.map_coordinates(e_b, [sy, sx], order=1, cval=0.0)
    valid = w_s > 0.3
    egt2g = np.where(valid, e_s / np.maximum(w_s, 1e-9), np.nan)
    egt2g = egt2g + np.random.default_rng(seed).normal(0, noise_sd, egt2g.shape)
    return egt2g, np.where(valid, noise_sd, np.nan), valid, matrix, pix, psf
