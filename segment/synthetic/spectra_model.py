"""Absorption spectra of the phases (optical density per 100 nm of dense material) at the Ni and S L-edges.

Ni L-edge (NMC), in the paper's energy calibration::

    mu_NMC(E) = b_NMC (E / 850 eV)^-2.6                                  non-resonant background
              + h3 [1/2 + arctan((E - 851.0) / 0.45) / pi]              L3 edge step
              + h2 [1/2 + arctan((E - 868.3) / 0.60) / pi]              L2 edge step (h2 = h3 / 2)
              + A_t2g G(E; 850.0, 0.50) + A_eg G(E; 852.0, 0.62)        L3 t2g and e_g peaks
              + L2 peaks G(E; 867.7, 0.80), G(E; 869.6, 0.90)

with ``G(E; E0, s) = exp(-(E - E0)^2 / (2 s^2))`` (unit peak height). The e_g/t_2g ratio of a pixel is
defined as the amplitude ratio ``r = A_eg / A_t2g`` of the two L3 Gaussians (peak heights above the
background and the step). The total L3 peak amplitude ``A_t2g + A_eg = S_L3`` is fixed per Ni content, so
``A_t2g = S_L3 / (1 + r)`` and ``A_eg = S_L3 r / (1 + r)``. The interphase holds reduced Ni at a fraction of
NMC's Ni content in a sulfide matrix; the electrolyte has no Ni (a smooth background only).

S L-edge: the argyrodite electrolyte has the S²⁻ L3 peak at ``E_S`` (163.9 eV) with its spin–orbit partner
1.2 eV higher, an arctan edge step 0.6 eV above ``E_S``, and broad features near 167.5 and 171.4 eV. The
interphase has the same spectrum shifted by ``s_shift_ev`` (+0.2 eV → 164.1 eV), 15 % less sulfide and added
S⁰/SOₓ intensity at 172 eV. NMC absorbs smoothly (no S), relatively strongly at these low energies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NI_T2G_EV = 850.0
NI_EG_EV = 852.0


def gaussian(e: np.ndarray, centre_ev: float, sigma_ev: float) -> np.ndarray:
    """Unit-height Gaussian."""
    return np.exp(-0.5 * ((np.asarray(e, float) - centre_ev) / sigma_ev) ** 2)


def arctan_step(e: np.ndarray, centre_ev: float, width_ev: float) -> np.ndarray:
    """Edge step from 0 to 1 centred at ``centre_ev``."""
    return 0.5 + np.arctan((np.asarray(e, float) - centre_ev) / width_ev) / np.pi


@dataclass(frozen=True)
class SpectraModel:
    """Constants of the phase spectra (OD per 100 nm of dense phase); recorded in truth.json."""

    ni_t2g_ev: float = NI_T2G_EV
    ni_eg_ev: float = NI_EG_EV
    ni_t2g_sigma_ev: float = 0.50
    ni_eg_sigma_ev: float = 0.62
    ni_l3_peak_sum: float = 1.25          # A_t2g + A_eg for NMC
    ni_l3_step: float = 0.22
    ni_l3_step_ev: float = 851.0
    ni_l3_step_width_ev: float = 0.45
    ni_l2_step_ev: float = 868.3
    ni_l2_step_width_ev: float = 0.60
    nmc_background_ni: float = 0.32
    electrolyte_background_ni: float = 0.15
    interphase_background_ni: float = 0.14
    nmc_s_edge: float = 1.25              # NMC OD at 160 eV (smooth)
    electrolyte_s_background: float = 0.32
    electrolyte_s_step: float = 0.42
    s_l3_peak: float = 0.50
    s_l2_peak: float = 0.32
    s_peak_sigma_ev: float = 0.32
    s_spin_orbit_ev: float = 1.2
    interphase_sulfide_fraction: float = 0.85
    interphase_s0_sox_peak: float = 0.22
    interphase_s0_sox_ev: float = 172.0

    def as_dict(self) -> dict:
        return asdict(self)


def ni_basis(energies_ev: np.ndarray, model: SpectraModel, interphase_ni_fraction: float) -> dict:
    """Basis spectra at the Ni L-edge: OD = sum over maps × these.

    Returns
    -------
    dict of ndarray (n_energy,)
        ``nmc``: NMC without the two L3 peaks; ``interphase``: interphase without its L3 peaks;
        ``electrolyte``; ``t2g`` and ``eg``: the unit-height L3 Gaussians (weights A_t2g, A_eg per map).
    """
    e = np.asarray(energies_ev, float)
    p = model
    ni_cont = (p.ni_l3_step * arctan_step(e, p.ni_l3_step_ev, p.ni_l3_step_width_ev)
               + 0.5 * p.ni_l3_step * arctan_step(e, p.ni_l2_step_ev, p.ni_l2_step_width_ev)
               + 0.22 * gaussian(e, 867.7, 0.80) + 0.16 * gaussian(e, 869.6, 0.90))
    slope = (e / 850.0) ** -2.6
    return {
        "nmc": p.nmc_background_ni * slope + ni_cont,
        "interphase": p.interphase_background_ni * slope + interphase_ni_fraction * ni_cont,
        "electrolyte": p.electrolyte_background_ni * slope,
        "t2g": gaussian(e, p.ni_t2g_ev, p.ni_t2g_sigma_ev),
        "eg": gaussian(e, p.ni_eg_ev, p.ni_eg_sigma_ev),
    }


def l3_amplitudes(ratio: np.ndarray, peak_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """(A_t2g, A_eg) for e_g/t_2g amplitude ratio ``ratio`` and total L3 peak height ``peak_sum``."""
    ratio = np.asarray(ratio)
    return peak_sum / (1.0 + ratio), peak_sum * ratio / (1.0 + ratio)


def sulfide_spectrum(e: np.ndarray, edge_ev: float, model: SpectraModel) -> np.ndarray:
    """Resonant S L-edge of argyrodite S²⁻ with its L3 peak at ``edge_ev`` (no background)."""
    p = model
    return (p.electrolyte_s_step * arctan_step(e, edge_ev + 0.6, 0.5)
            + p.s_l3_peak * gaussian(e, edge_ev, p.s_peak_sigma_ev)
            + p.s_l2_peak * gaussian(e, edge_ev + p.s_spin_orbit_ev, p.s_peak_sigma_ev)
            + 0.22 * gaussian(e, edge_ev + 3.6, 0.9) + 0.28 * gaussian(e, edge_ev + 7.5, 1.8))


def s_basis(energies_ev: np.ndarray, model: SpectraModel, s_edge_electrolyte_ev: float, s_shift_ev: float,
            interphase_ni_fraction: float) -> dict:
    """Phase spectra at the S L-edge (OD per 100 nm of dense phase): ``nmc``, ``interphase``, ``electrolyte``."""
    e = np.asarray(energies_ev, float)
    p = model
    nmc = p.nmc_s_edge * (e / 160.0) ** -2.2
    bg = p.electrolyte_s_background * (e / 160.0) ** -2.5
    el = bg + sulfide_spectrum(e, s_edge_electrolyte_ev, p)
    inter = (p.interphase_sulfide_fraction * (bg + sulfide_spectrum(e, s_edge_electrolyte_ev + s_shift_ev, p))
             + p.interphase_s0_sox_peak * gaussian(e, p.interphase_s0_sox_ev, 1.1)
             + 0.5 * interphase_ni_fraction * nmc)
    return {"nmc": nmc, "interphase": inter, "electrolyte": el}
