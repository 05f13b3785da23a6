"""Sample conditions of the paper as generator presets (what differs between the three lamellae).

Each preset holds the *population* parameters of one condition; a particular lamella draws its own
values from them (see :func:`ceimap.segment.synthetic.spec.make_spec`).  Numbers come from Zhao, Yuan et al.
(ACS Energy Lett.): interphase thickness 93 ± 43 nm after 100 cycles to 4.25 V and 89 ± 66 nm after
100 cycles to 4.7 V, none resolvable after one charge; bulk NMC e_g/t_2g slightly higher after 4.25 V
cycling and bimodal across particles after 4.7 V cycling; Ni reduced at NMC surfaces in contact with the
electrolyte (not next to voids) after cycling; S L-edge of the interphase 0.2 eV above the bulk electrolyte.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConditionPreset:
    """Population parameters of one sample condition.

    Attributes
    ----------
    name : str
        Preset key (``"charged"``, ``"cycled_4p25v"``, ``"cycled_4p7v"``).
    description : str
        The condition in words (written as the lamella's ``sample``).
    interphase_mean_nm, interphase_sd_nm : float
        Mean and standard deviation of the interphase thickness over boundary points (0 = no interphase).
    bulk_ratio_groups : tuple of (weight, mean, sd)
        Mixture of normal distributions of the per-particle bulk e_g/t_2g ratio; more than one group gives
        a bimodal population across particles.
    intraparticle_ratio_sd : float
        Standard deviation of the smooth e_g/t_2g variation inside one particle.
    surface_reduction_mean, surface_reduction_sd : float
        Decrease of e_g/t_2g at the NMC surface in contact with electrolyte (at depth 0), per particle.
    surface_reduction_depth_nm : (float, float)
        Range of the per-particle depth scale of that decrease.
    interphase_ratio : float
        e_g/t_2g of the reduced Ni inside the interphase.
    n_cracked : (int, int)
        Range of the number of particles with a transverse crack.
    s_shift_ev : float
        Shift of the interphase S L-edge relative to the bulk electrolyte.
    """

    name: str
    description: str
    interphase_mean_nm: float
    interphase_sd_nm: float
    bulk_ratio_groups: tuple[tuple[float, float, float], ...]
    intraparticle_ratio_sd: float
    surface_reduction_mean: float
    surface_reduction_sd: float
    surface_reduction_depth_nm: tuple[float, float]
    interphase_ratio: float
    n_cracked: tuple[int, int]
    s_shift_ev: float = 0.2


CONDITIONS: dict[str, ConditionPreset] = {
    "charged": ConditionPreset(
        name="charged",
        description="charged to 4.25 V, no cycling",
        interphase_mean_nm=0.0, interphase_sd_nm=0.0,
        bulk_ratio_groups=((1.0, 1.75, 0.07),),
        intraparticle_ratio_sd=0.04,
        surface_reduction_mean=0.0, surface_reduction_sd=0.0,
        surface_reduction_depth_nm=(50.0, 100.0),
        interphase_ratio=1.0,
        n_cracked=(0, 0),
    ),
    "cycled_4p25v": ConditionPreset(
        name="cycled_4p25v",
        description="100 cycles to 4.25 V, charged to 4.25 V",
        interphase_mean_nm=93.0, interphase_sd_nm=43.0,
        bulk_ratio_groups=((1.0, 1.88, 0.09),),
        intraparticle_ratio_sd=0.04,
        surface_reduction_mean=0.30, surface_reduction_sd=0.05,
        surface_reduction_depth_nm=(50.0, 100.0),
        interphase_ratio=1.0,
        n_cracked=(0, 0),
    ),
    "cycled_4p7v": ConditionPreset(
        name="cycled_4p7v",
        description="100 cycles to 4.7 V, charged to 4.25 V",
        interphase_mean_nm=89.0, interphase_sd_nm=66.0,
        bulk_ratio_groups=((0.5, 1.32, 0.07), (0.5, 2.02, 0.08)),
        intraparticle_ratio_sd=0.05,
        surface_reduction_mean=0.30, surface_reduction_sd=0.05,
        surface_reduction_depth_nm=(50.0, 100.0),
        interphase_ratio=1.0,
        n_cracked=(3, 5),
    ),
}
"""The three conditions of the paper, by preset name."""
