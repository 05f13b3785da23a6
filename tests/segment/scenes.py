"""Hand-made Ni-L and S-L spectra and a simulated lamella with truth, shared by the tests of the unsupervised path."""

import numpy as np
from scipy import ndimage

from ceimap.segment.lamella import SemImage
from ceimap.segment.register import Registration
from ceimap.segment.stack import Stack

NI_E = np.round(np.concatenate([np.arange(845.0, 848.0, 1.0), np.arange(848.0, 856.01, 0.25),
                                np.arange(857.0, 875.01, 1.0)]), 3)


S_E = np.round(np.concatenate([np.arange(158.0, 162.0, 0.5), np.arange(162.0, 167.01, 0.2),
                               np.arange(167.5, 180.01, 0.5)]), 3)


def _g(e, c, s):
    return np.exp(-0.5 * ((e - c) / s) ** 2)


def _step(e, c, w):
    return 0.5 + np.arctan((e - c) / w) / np.pi


def ni_spectra(ratio_nmc=(1.8, 1.3), ratio_interphase=1.0, ni_fraction=0.35):
    """Hand-made Ni L-edge spectra (OD per 100 nm): NMC at given e_g/t_2g ratios, interphase, electrolyte."""
    e = NI_E
    cont = 0.22 * _step(e, 851.0, 0.45) + 0.11 * _step(e, 868.3, 0.6) + 0.3 * _g(e, 867.7, 0.8)
    slope = (e / 850.0) ** -2.6

    def peaks(r):
        return 1.25 / (1 + r) * _g(e, 850.0, 0.5) + 1.25 * r / (1 + r) * _g(e, 852.0, 0.62)

    nmc = [0.32 * slope + cont + peaks(r) for r in ratio_nmc]
    inter = 0.14 * slope + ni_fraction * (cont + peaks(ratio_interphase))
    ely = 0.15 * slope
    return nmc, inter, ely


def s_spectra(shift_ev=0.2):
    e = S_E

    def sulfide(e0):
        return (0.42 * _step(e, e0 + 0.6, 0.5) + 0.5 * _g(e, e0, 0.32) + 0.32 * _g(e, e0 + 1.2, 0.32)
                + 0.22 * _g(e, e0 + 3.6, 0.9) + 0.28 * _g(e, e0 + 7.5, 1.8))
    bg = 0.32 * (e / 160.0) ** -2.5
    nmc = 1.25 * (e / 160.0) ** -2.2
    ely = bg + sulfide(163.9)
    inter = 0.85 * (bg + sulfide(163.9 + shift_ev)) + 0.22 * _g(e, 172.0, 1.1) + 0.06 * nmc
    return nmc, inter, ely


def make_scene(interphase_nm=0.0, seed=0, with_s=True, i0_ni=8000.0, i0_s=800.0):
    """A 3 × 3 µm lamella: two NMC particles (different Ni valence) in electrolyte, a pore, a vacuum strip.

    Truth on a 10 nm SEM grid; STXM at 40 nm pixels with a 50 nm PSF, Poisson counts, a small rotation
    between the STXM and SEM frames.
    """
    rng = np.random.default_rng(seed)
    sem_px, stxm_px, n = 10.0, 40.0, 300
    yy, xx = np.mgrid[:n, :n].astype(float)
    truth = np.full((n, n), 3, np.uint8)
    particles = np.zeros((n, n), np.int32)
    p1 = (yy - 150) ** 2 + (xx - 120) ** 2 < 70 ** 2
    p2 = ((yy - 110) / 35.0) ** 2 + ((xx - 235) / 45.0) ** 2 < 1
    particles[p1], particles[p2] = 1, 2
    truth[particles > 0] = 1
    pore = (yy - 245) ** 2 + (xx - 220) ** 2 < 22 ** 2
    truth[pore] = 4
    crescent = ((yy - 150) ** 2 + (xx - 120) ** 2 < 80 ** 2) & ~p1 & (yy > 190)
    truth[crescent] = 4
    outside = xx < 25 + 5 * np.sin(yy / 40.0)
    truth[outside] = 0
    particles[outside] = 0
    if interphase_nm > 0:
        d_nmc = ndimage.distance_transform_edt(truth != 1) * sem_px
        truth[(truth == 3) & (d_nmc <= interphase_nm)] = 2
    # maps of phase amount (thickness 100 nm units) on the SEM grid
    pores = ndimage.gaussian_filter(rng.standard_normal((n, n)), 1.0)
    density = np.where(pores > np.quantile(pores, 0.8), 0.5, 1.0)
    amount = {"nmc1": (particles == 1) * 1.0, "nmc2": (particles == 2) * 1.0,
              "inter": (truth == 2) * density, "ely": (truth == 3) * density}
    # STXM frame: rotated 2 degrees, scale 4 SEM px per STXM px
    th = np.deg2rad(2.0)
    m = np.array([[4 * np.cos(th), -4 * np.sin(th), 8.0], [4 * np.sin(th), 4 * np.cos(th), 4.0], [0, 0, 1]])
    ns = 70
    sy, sx = np.mgrid[:ns, :ns].astype(float)
    px_sem = m[0, 0] * sx + m[0, 1] * sy + m[0, 2]
    py_sem = m[1, 0] * sx + m[1, 1] * sy + m[1, 2]
    psf_sigma = 50.0 / 2.355 / sem_px
    sampled = {k: ndimage.map_coordinates(ndimage.gaussian_filter(v, psf_sigma), [py_sem, px_sem], order=1)
               for k, v in amount.items()}
    nmc_ni, inter_ni, ely_ni = ni_spectra()
    nmc_s, inter_s, ely_s = s_spectra()
    stacks, regs = {}, {}
    edges = [("Ni-L", NI_E, [nmc_ni[0], nmc_ni[1], inter_ni, ely_ni], i0_ni)]
    if with_s:
        edges.append(("S-L", S_E, [nmc_s, nmc_s, inter_s, ely_s], i0_s))
    for edge, e, (a, b, c, d), i0 in edges:
        od = (sampled["nmc1"][None] * a[:, None, None] + sampled["nmc2"][None] * b[:, None, None]
              + sampled["inter"][None] * c[:, None, None] + sampled["ely"][None] * d[:, None, None])
        counts = rng.poisson(i0 * np.exp(-od))
        od_meas = -np.log(np.maximum(counts, 0.5) / i0)
        stacks[edge] = Stack(data=od_meas, energies_ev=e, pixel_size_nm=stxm_px, kind="od", edge=edge)
        regs[edge] = Registration(matrix=m, quality=1.0, method="truth")
    sem = np.where(truth == 1, 0.72, np.where(truth == 0, 0.04, np.where(truth == 4, 0.08, 0.45)))
    sem = np.where((truth >= 2) & (truth <= 3) & (density < 1), 0.2, sem)
    sem = ndimage.gaussian_filter(sem, 0.7) + rng.normal(0, 0.03, sem.shape)
    return stacks, regs, SemImage(image=(sem * 255).astype(np.float32), pixel_size_nm=sem_px), truth, particles
