"""Tests of segment.assign: signatures, naming, STXM-grid chemistry and the SEM-resolution class map."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score

from ceimap.segment.assign import (VOID, Segmentation, classify_stxm, edge_signature, fit_interphase_thickness,
                            interphase_thickness_map, mark_cracks, name_spectrum, od_noise_scale,
                            resolve_thin_rims, segment_lamella, snap_nmc_boundaries, split_empty, stxm_view,
                            to_reference_grid, tolerant_f1, union_grid)
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


# ------------------------------------------------------------------------------------------------------
# signatures and naming on hand-made spectra

def test_edge_signature_measures_resonance_above_pre_edge():
    nmc, inter, ely = ni_spectra(ratio_nmc=(1.8,))
    sig = edge_signature(NI_E, np.stack([nmc[0], inter, ely, np.zeros_like(ely)]), "Ni-L", 0.01)
    res = sig["resonance"]
    # electrolyte and vacuum: smooth background only -> no resonance (within the baseline curvature)
    assert abs(res[2]) < 0.01 and res[3] == 0.0
    # the interphase holds about a third of NMC's Ni
    assert res[0] > 0.3 and 0.25 < res[1] / res[0] < 0.45
    assert sig["absorption"][3] == 0.0 and sig["absorption_snr"][0] > 100


@pytest.mark.parametrize("with_s", [True, False])
def test_name_spectrum_from_signatures(with_s):
    nmc_ni, _, ely_ni = ni_spectra(ratio_nmc=(1.3,))
    nmc_s, _, ely_s = s_spectra()
    noise = {"Ni-L": 0.01, "S-L": 0.04}
    rng = np.random.default_rng(1)

    def spectra(ni, s):
        out = {"Ni-L": (NI_E, ni + rng.normal(0, 0.01, ni.shape))}
        if with_s:
            out["S-L"] = (S_E, s + rng.normal(0, 0.04, s.shape))
        return out

    assert name_spectrum(spectra(nmc_ni[0], nmc_s), noise) == "nmc"
    assert name_spectrum(spectra(ely_ni, ely_s), noise) == "electrolyte"
    assert name_spectrum(spectra(0 * ely_ni, 0 * ely_s), noise) == "void"
    # a thin (20 nm) electrolyte still absorbs clearly
    assert name_spectrum(spectra(0.2 * ely_ni, 0.2 * ely_s), noise) == "electrolyte"


def test_od_noise_scale_recovers_poisson_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:80, :80]
    disc = ndimage.gaussian_filter(((yy - 40) ** 2 + (xx - 40) ** 2 < 25 ** 2) * 1.0, 1.5)
    nmc, _, ely = ni_spectra(ratio_nmc=(1.8,))
    od_true = disc[None] * nmc[0][:, None, None] + (1 - disc)[None] * ely[:, None, None]
    i0 = np.linspace(3000.0, 30000.0, NI_E.size)[:, None, None]
    od = -np.log(rng.poisson(i0 * np.exp(-od_true)) / i0)
    np.testing.assert_allclose(od_noise_scale(od), 1 / np.sqrt(i0[:, 0, 0]), rtol=0.1)
    # cubic-spline drift correction correlates neighbours; the low-rank residual still sees the noise
    shifted = np.stack([ndimage.shift(f, (0.5, 0.5), order=3, mode="nearest") for f in od])
    est = od_noise_scale(shifted)
    assert np.median(est * np.sqrt(i0[:, 0, 0])) > 0.6


def test_split_empty_lamella_edge_versus_pore():
    empty = np.zeros((100, 100), bool)
    empty[:, :10] = True                 # vacuum strip along the left border: 100 px of contact
    empty[0:8, 50:58] = True             # a pore touching the top border over 8 px
    empty[40:50, 40:50] = True           # an interior pore
    out = split_empty(empty, 10.0, lamella_edge_nm=500.0)
    assert out[:, :10].all() and not out[0:8, 50:58].any() and not out[40:50, 40:50].any()
    # a vacuum hint found elsewhere (e.g. on the STXM grid) makes a region outside
    hint = np.zeros_like(empty)
    hint[1:8, 50:58] = True
    assert split_empty(empty, 10.0, lamella_edge_nm=500.0, vacuum=hint)[0:8, 50:58].all()


def test_to_reference_grid_resamples_through_matrices():
    ny, nx = 20, 30
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    ramp = (2.0 * xx + 3.0 * yy)[None]             # linear: bilinear resampling is exact
    m_ref = np.array([[2.0, 0, 5.0], [0, 2.0, 7.0], [0, 0, 1]])
    m_s = np.array([[2.0, 0, 9.0], [0, 2.0, 3.0], [0, 0, 1]])   # S grid shifted by (+2, -2) reference px
    # S pixel (xs, ys) sits at reference pixel (xs + 2, ys - 2): value there is the ramp of that position
    s_data = 2.0 * (xx + 2) + 3.0 * (yy - 2)
    stacks = {"Ni-L": Stack(ramp, np.array([850.0]), 40.0, kind="od", edge="Ni-L"),
              "S-L": Stack(s_data[None], np.array([165.0]), 40.0, kind="od", edge="S-L")}
    regs = {"Ni-L": Registration(m_ref), "S-L": Registration(m_s)}
    ref, cubes = to_reference_grid(stacks, regs)
    assert ref == "Ni-L"
    inside = np.isfinite(cubes["S-L"][0])
    assert inside.sum() > 0.8 * ny * nx and np.isnan(cubes["S-L"][0, :, :1]).all()
    np.testing.assert_allclose(cubes["S-L"][0][inside], ramp[0][inside], atol=1e-9)


def test_union_grid_extends_the_reference_lattice_over_every_field():
    ny, nx = 20, 30
    data = np.arange(ny * nx, dtype=float).reshape(1, ny, nx)
    m_ref = np.array([[2.0, 0, 5.0], [0, 2.0, 7.0], [0, 0, 1]])
    m_s = np.array([[2.0, 0, -15.0], [0, 2.0, 3.0], [0, 0, 1]])   # S field starts 10 reference px left, 2 up
    stacks = {"Ni-L": Stack(data, np.array([850.0]), 40.0, kind="od", edge="Ni-L"),
              "S-L": Stack(np.ones((1, ny, nx)), np.array([165.0]), 40.0, kind="od", edge="S-L")}
    regs = {"Ni-L": Registration(m_ref), "S-L": Registration(m_s)}
    shape, m = union_grid(stacks, regs, "Ni-L")
    assert shape == (ny + 2, nx + 10)
    # same lattice, shifted by whole pixels: the reference data land on it unchanged
    np.testing.assert_allclose(m, m_ref @ np.array([[1, 0, -10], [0, 1, -2], [0, 0, 1.0]]))
    _, cubes = to_reference_grid(stacks, regs, "Ni-L", grid=(shape, m))
    np.testing.assert_allclose(cubes["Ni-L"][0, 2:, 10:], data[0], atol=1e-9)
    assert np.isnan(cubes["Ni-L"][0, :2]).all() and np.isnan(cubes["Ni-L"][0, :, :10]).all()
    assert np.isfinite(cubes["S-L"][0, :ny, :nx]).all() and np.isnan(cubes["S-L"][0, ny:, :]).all()
    # bounded by the SEM image when its shape is given: SEM x >= -0.5 is reference x >= -2.75
    shape_sem, _ = union_grid(stacks, regs, "Ni-L", sem_shape=(100, 100))
    assert shape_sem == (ny + 2, nx + 2)


# ------------------------------------------------------------------------------------------------------
# STXM-grid chemistry on a simulated scene

def _stxm_truth(truth, regs, shape):
    from ceimap.segment.register import labels_to_stxm
    return labels_to_stxm(truth, regs["Ni-L"].matrix, shape)


@pytest.mark.parametrize("with_s", [True, False])
def test_partial_volume_mixing_alone_gives_no_interphase(with_s):
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=0.0, seed=2, with_s=with_s)
    _, cubes = to_reference_grid(stacks, regs)
    chem = classify_stxm(cubes, {e: s.energies_ev for e, s in stacks.items()}, 40.0)
    assert chem["interphase"].sum() == 0
    truth_stxm = _stxm_truth(truth, regs, cubes["Ni-L"].shape[1:])
    inside = truth_stxm > 0
    f1 = f1_score(truth_stxm[inside], chem["classes"][inside], labels=[1, 3, 4], average=None)
    assert f1[0] > 0.95 and f1[1] > 0.95 and f1[2] > 0.6


@pytest.mark.parametrize("with_s", [True, False])
def test_interphase_found_where_spectra_are_not_a_mixture(with_s):
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=4, with_s=with_s)
    _, cubes = to_reference_grid(stacks, regs)
    chem = classify_stxm(cubes, {e: s.energies_ev for e, s in stacks.items()}, 40.0)
    truth_stxm = _stxm_truth(truth, regs, cubes["Ni-L"].shape[1:])
    score = tolerant_f1(chem["classes"] == 2, truth_stxm == 2, 1.0)
    assert score["f1"] > 0.85 and score["precision"] > 0.95
    # both NMC particles (Ni e_g/t_2g 1.8 and 1.3) stay NMC; with Ni-L alone some interphase pixels
    # (reduced Ni in a Ni-poor band) still lean NMC on the STXM grid
    assert f1_score(truth_stxm.ravel() == 1, chem["classes"].ravel() == 1) > (0.95 if with_s else 0.9)


def test_chemistry_where_only_the_s_edge_measured():
    # the Ni-L scan stops short of the second particle; only the (noisy, low-flux) S-L stack sees it
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=4, with_s=True)
    ni = stacks["Ni-L"]
    stacks["Ni-L"] = Stack(ni.data[:, :, :42], ni.energies_ev, ni.pixel_size_nm, kind="od", edge="Ni-L")
    shape, m = union_grid(stacks, regs, "Ni-L")
    assert shape == stacks["S-L"].shape_yx
    _, cubes = to_reference_grid(stacks, regs, "Ni-L", grid=(shape, m))
    chem = classify_stxm(cubes, {e: s.energies_ev for e, s in stacks.items()}, 40.0)
    truth_stxm = _stxm_truth(truth, regs, shape)
    s_only = np.zeros(shape, bool)
    s_only[:, 44:] = True
    inside = s_only & (truth_stxm > 0)
    assert (truth_stxm[inside] == 1).sum() > 50 and (truth_stxm[inside] == 2).sum() > 30
    f1 = f1_score(truth_stxm[inside], chem["classes"][inside], labels=[1, 3], average=None)
    assert f1[0] > 0.9 and f1[1] > 0.9
    score = tolerant_f1((chem["classes"] == 2) & s_only, (truth_stxm == 2) & s_only, 1.0)
    assert score["f1"] > 0.8 and score["precision"] > 0.9


def test_segment_lamella_sem_resolution():
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=5)
    seg = segment_lamella(stacks, regs, sem, n_trees=20)
    assert isinstance(seg, Segmentation)
    assert seg.classes.dtype == np.uint8 and seg.classes.shape == truth.shape
    assert seg.probabilities.shape == (5,) + truth.shape and seg.probabilities.dtype == np.float32
    np.testing.assert_allclose(seg.probabilities.sum(axis=0), 1.0, atol=1e-4)
    # the probabilities are the soft version of the map: their ½ iso-lines are its boundaries
    assert np.mean(np.argmax(seg.probabilities, axis=0) == seg.classes) > 0.999
    inside = truth > 0
    macro = f1_score(truth[inside], seg.classes[inside], labels=[1, 2, 3, 4], average="macro")
    assert macro > 0.85
    assert f1_score(truth.ravel() == 0, seg.classes.ravel() == 0) > 0.95
    assert tolerant_f1(seg.classes == 2, truth == 2, 4.0)["f1"] > 0.85


def test_segment_lamella_with_ni_l_only():
    stacks, regs, sem, truth, _ = make_scene(interphase_nm=90.0, seed=5, with_s=False)
    seg = segment_lamella(stacks, regs, sem, n_trees=20)
    assert seg.details["reference_edge"] == "Ni-L"
    inside = truth > 0
    f1 = f1_score(truth[inside], seg.classes[inside], labels=[1, 3, 4], average=None)
    assert f1[0] > 0.97 and f1[1] > 0.95 and f1[2] > 0.9
    assert tolerant_f1(seg.classes == 2, truth == 2, 4.0)["f1"] > 0.85


def test_split_empty_void_joined_to_outside_through_a_neck():
    empty = np.zeros((120, 120), bool)
    empty[100:, :] = True                                    # lamella edge along the bottom border
    yy, xx = np.mgrid[:120, :120]
    empty |= (yy - 50) ** 2 + (xx - 60) ** 2 <= 20 ** 2      # a void 400 nm across
    empty[70:100, 57:63] = True                              # joined by a 60 nm wide dark stripe
    out = split_empty(empty, 10.0, lamella_edge_nm=500.0, neck_nm=150.0)
    assert out[110, 5] and out[105, 60]
    assert not out[50, 60] and not out[72, 60]


def test_resolve_thin_rims_splits_rim_between_nmc_and_void():
    lab = np.full((20, 40), 3)
    lab[:, :15] = 1
    lab[:, 18:30] = 4                                        # 3-px (30 nm) rim between NMC and a void
    out = resolve_thin_rims(lab, 10.0, max_width_nm=50.0)
    assert set(np.unique(out[:, 15:18])) <= {1, 4}
    assert (out[:, 30:] == 3).all()                          # electrolyte beyond the void untouched
    lab[:, 18:30] = 3
    lab[:, 24:30] = 4                                        # a 90 nm electrolyte layer is resolved: kept
    assert (resolve_thin_rims(lab, 10.0, max_width_nm=50.0)[:, 15:24] == 3).all()


def test_mark_cracks_thin_grey_gap_inside_nmc_is_void():
    lab = np.full((80, 120), 3)
    lab[10:70, 10:110] = 1
    lab[10:70, 59:61] = 3                                     # 20 nm crack read as electrolyte
    sem = np.where(lab == 1, 1.0, 0.5)
    sem[0:5, 0:5] = 0.0                                       # some vacuum in the image
    out = mark_cracks(lab, sem, 10.0, max_width_nm=90.0, gap_nm=60.0)
    assert (out[15:65, 59:61] == VOID).all()
    assert (out[:8, 20:100] == 3).all()


def test_fit_interphase_thickness_recovers_band_through_psf():
    # SEM 10 nm pixels, STXM 40 nm, 50 nm probe; a 90 nm band along a straight NMC surface; the
    # chemistry measures its fraction only where NMC covers less than half the STXM pixel
    sem_px, stxm_px, psf = 10.0, 40.0, 50.0
    shape = (200, 200)
    nmc = np.zeros(shape, bool)
    nmc[:, :80] = True
    band = ~nmc & (np.mgrid[:200, :200][1] < 89)
    matrix = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]])
    stxm_shape = (50, 50)
    sigma = np.hypot(psf / 2.3548, stxm_px / np.sqrt(12))
    f_band = stxm_view(band.astype(float), matrix, stxm_shape, sigma, sem_px)
    f_nmc = stxm_view(nmc.astype(float), matrix, stxm_shape, sigma, sem_px)
    measured = (f_nmc < 0.5) & (f_band > 0.02)
    t = fit_interphase_thickness(nmc, ~nmc, np.where(measured, f_band, 0), measured, matrix, sem_px, stxm_px,
                                 psf, smooth_nm=50.0)
    surface = t[40:160, 79]
    assert abs(np.median(surface) - 90.0) < 9.0


def _area_rendered(inside_fine: np.ndarray, k: int) -> np.ndarray:
    """Area fraction of each coarse pixel covered by a k×-oversampled mask (a pixel sees its whole area)."""
    ny, nx = inside_fine.shape[0] // k, inside_fine.shape[1] // k
    return inside_fine[:ny * k, :nx * k].reshape(ny, k, nx, k).mean(axis=(1, 3))


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.6])
def test_snap_nmc_boundaries_puts_crack_and_pore_edges_at_half_coverage(offset):
    # NMC (bright) with a 4.5-pixel crack and a void pore, rendered with partial-volume pixels at a
    # sub-pixel offset; the first label map has both voids one pixel too wide on each side (the NMC-vs-
    # electrolyte midpoint), as the earlier boundary steps leave them
    k = 10
    yy, xx = np.mgrid[0:80 * k, 0:120 * k] / k
    crack = np.abs(xx - (40.0 + offset)) < 2.25
    pore = np.hypot(yy - 40.0, xx - (90.0 + offset)) < 12.0
    void_cov = _area_rendered(crack | pore, k)
    rng = np.random.default_rng(1)
    sem = 0.2 + 0.8 * (1.0 - void_cov) + rng.normal(0, 0.04, void_cov.shape)
    truth_void = void_cov > 0.5
    label = np.where(ndimage.binary_dilation(truth_void), VOID, 1)
    out = snap_nmc_boundaries(label, sem, 10.0)
    assert np.mean((out == VOID) != truth_void) < 0.002
    width = (out[10:70, 30:50] == VOID).sum(axis=1)
    assert abs(np.median(width) - 4.5) <= 0.5


def test_snap_nmc_boundaries_keeps_sharp_boundaries_in_place():
    lab = np.full((40, 60), 3)
    lab[:, :20] = 1
    lab[:, 40:] = VOID
    sem = np.where(lab == 1, 1.0, np.where(lab == 3, 0.6, 0.1))
    out = snap_nmc_boundaries(lab, sem, 10.0)
    assert np.array_equal(out, lab)


@pytest.mark.parametrize("offset", [0.2, 0.35, 0.8])
def test_snap_nmc_boundaries_against_the_interphase_level(offset):
    # NMC (1.0) | 6-pixel interphase (0.45) | electrolyte (0.6), partial-volume pixels at a sub-pixel
    # offset; the first map put the NMC edge one pixel inside (threshold against the electrolyte level and
    # a blur): the snap moves it to half coverage
    k = 10
    xx = np.mgrid[0:60 * k, 0:80 * k][1] / k
    nmc_cov = _area_rendered(xx < 30.0 + offset, k)
    int_cov = _area_rendered((xx >= 30.0 + offset) & (xx < 36.0 + offset), k)
    rng = np.random.default_rng(2)
    sem = 1.0 * nmc_cov + 0.45 * int_cov + 0.6 * (1 - nmc_cov - int_cov) + rng.normal(0, 0.03, nmc_cov.shape)
    truth_nmc = nmc_cov > 0.5
    label = np.where(ndimage.binary_erosion(truth_nmc, border_value=1), 1, 3)
    out = snap_nmc_boundaries(label, sem, 10.0)
    assert np.mean((out == 1) != truth_nmc) < 0.002


def test_thickness_map_carries_measured_amount_past_the_field_edge():
    # a 50 nm band along a straight surface, measured only for rows < 100: with the field's certainty the
    # thickness stays 50 nm up to the field edge and one smoothing sigma beyond; without it, the unmeasured
    # half reads as "no interphase" and drags the amount down near the edge
    px = 10.0
    nmc = np.zeros((200, 60), bool)
    nmc[:, :20] = True
    frac = np.zeros(nmc.shape)
    frac[:100, 20:25] = 1.0
    known = np.zeros(nmc.shape)
    known[:100] = 1.0
    t_known = interphase_thickness_map(nmc, ~nmc, frac, px, smooth_nm=100.0, certainty=known)
    t_blind = interphase_thickness_map(nmc, ~nmc, frac, px, smooth_nm=100.0)
    assert np.allclose(t_known[:100, 19], 50.0, atol=0.5)
    assert np.allclose(t_known[100:108, 19], 50.0, atol=0.5)        # within 0.8 sigma: carried over
    assert (t_known[125:, 19] == 0).all()                            # beyond the reach: unknown, no band
    assert t_blind[99, 19] < 30.0


# --------------------------------------------------------------------------------------------------
# fast equivalents used for speed (issue 8): they must give what the direct computations give
# --------------------------------------------------------------------------------------------------

def test_open_disk_equals_binary_opening_with_a_disk():
    from skimage.morphology import disk

    from ceimap.segment.assign import _open_disk

    rng = np.random.default_rng(3)
    for trial in range(60):
        ny, nx = rng.integers(4, 70, 2)
        r = int(rng.integers(1, 12))
        mask = ndimage.gaussian_filter(rng.random((ny, nx)), rng.uniform(0.5, 4.0)) > rng.uniform(0.4, 0.6)
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0          # all set / all clear
        assert np.array_equal(_open_disk(mask, r), ndimage.binary_opening(mask, structure=disk(r))), (trial, r)


@pytest.mark.parametrize("shape, sigma", [((120, 90), 11.3), ((40, 33), 9.0), ((12, 15), 9.0), ((50, 60), 0.8)])
def test_gaussian_filter_fft_equals_the_direct_filter(shape, sigma):
    from ceimap.segment.assign import _gaussian_filter_fft

    rng = np.random.default_rng(4)
    image = ndimage.gaussian_filter(rng.random(shape), 2.0) * 50.0 + (rng.random(shape) > 0.7)
    direct = ndimage.gaussian_filter(image, sigma)           # mode "reflect", truncate 4 (kernel wider than
    fast, = _gaussian_filter_fft([image], sigma)             # the image in two cases)
    assert np.max(np.abs(fast - direct)) <= 1e-12 * np.max(np.abs(direct))
