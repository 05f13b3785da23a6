"""All parameters of one synthetic lamella (:class:`LamellaSpec`) and how a condition + seed fixes them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .conditions import CONDITIONS, ConditionPreset
from .spectra_model import SpectraModel

GENERATOR_VERSION = "1.0"
"""Version of the generator's physics; written into every truth.json."""


def ni_l_energies(fine_step_ev: float = 0.25) -> np.ndarray:
    """Ni L-edge energy grid (eV): coarse pre-edge, fine L3 region 848–856 eV, medium L2, coarse post-edge.

    Examples
    --------
    >>> e = ni_l_energies(0.25); (len(e), float(e[0]), float(e[-1]))
    (59, 845.0, 875.0)
    """
    parts = [np.arange(845.0, 848.0, 1.0), np.arange(848.0, 856.0 + 1e-9, fine_step_ev),
             np.arange(857.0, 866.0, 1.0), np.arange(866.0, 871.0 + 1e-9, 0.5), np.arange(872.0, 875.0 + 1e-9, 1.5)]
    return np.round(np.concatenate(parts), 4)


def s_l_energies(fine_step_ev: float = 0.2) -> np.ndarray:
    """S L-edge energy grid (eV): coarse pre-edge, fine 162–167 eV, medium to 172 eV, coarse to 180 eV.

    Examples
    --------
    >>> e = s_l_energies(0.2); (len(e), float(e[0]), float(e[-1]))
    (52, 158.0, 180.0)
    """
    parts = [np.arange(158.0, 162.0, 0.5), np.arange(162.0, 167.0 + 1e-9, fine_step_ev),
             np.arange(167.5, 172.0 + 1e-9, 0.5), np.arange(173.0, 180.0 + 1e-9, 1.0)]
    return np.round(np.concatenate(parts), 4)


@dataclass(frozen=True)
class EdgeSpec:
    """Acquisition of one STXM stack.

    Attributes
    ----------
    edge : str
        ``"Ni-L"`` or ``"S-L"``.
    energies_ev : tuple of float
        Photon energies of the frames.
    stxm_pixel_nm : float
        Nominal pixel size written in the file.
    scale_error : float
        True pixel size = nominal × (1 + scale_error) (stage calibration error).
    rotation_deg : float
        Rotation of the STXM frame relative to the SEM frame.
    field_fraction : float
        STXM scan width / SEM field width.
    offset_nm : (float, float)
        (x, y) offset of the STXM scan centre from the SEM field centre.
    psf_fwhm_nm : float
        FWHM of the Gaussian zone-plate spot.
    i0_counts : float
        Peak incident counts per pixel per dwell (I0 maximum over the energy range).
    dwell_ms : float
        Dwell time per pixel.
    drift_total_px : float
        Largest drift excursion (norm of (dy, dx)) from frame 0 over the stack, in STXM pixels.
    ring_current_ma : float
        Storage-ring current at the first frame (the NXmonitor ``control``).
    ring_lifetime_h : float
        Beam lifetime (decay mode) governing the ring current over the stack.
    """

    edge: str
    energies_ev: tuple[float, ...]
    stxm_pixel_nm: float
    scale_error: float
    rotation_deg: float
    field_fraction: float
    offset_nm: tuple[float, float]
    psf_fwhm_nm: float
    i0_counts: float
    dwell_ms: float
    drift_total_px: float
    ring_current_ma: float = 450.0
    ring_lifetime_h: float = 40.0

    @property
    def file_name(self) -> str:
        """File name of this stack in a lamella folder (``ni_l.hdf5``, ``s_l.hdf5``)."""
        return self.edge.lower().replace("-", "_") + ".hdf5"


@dataclass(frozen=True)
class LamellaSpec:
    """Every parameter of one synthetic lamella; :func:`make_lamella` is a pure function of it.

    Geometry is generated on a fine grid of ``fine_pixel_nm`` covering the SEM field plus ``margin_nm``
    on every side (the STXM scans may see a little beyond the SEM field).  Ratios are e_g/t_2g amplitude
    ratios (see the datasets README); thicknesses in nm; the lamella thickness in units of 100 nm.
    """

    condition: str
    seed: int
    null: bool = False
    name: str = ""
    # geometry
    field_width_nm: float = 7000.0
    field_height_nm: float = 7000.0
    sem_pixel_nm: float = 10.0
    sem_bit_depth: int = 8
    fine_pixel_nm: float = 5.0
    margin_nm: float = 600.0
    vacuum_side: str = "left"
    vacuum_width_nm: float = 600.0
    n_particles: int = 13
    particle_diameter_nm: tuple[float, float] = (500.0, 3000.0)
    particle_diameter_median_nm: float = 1500.0
    nmc_area_fraction: float = 0.42
    n_touching_pairs: int = 2
    n_narrow_gaps: int = 2
    void_particle_fraction: float = 0.8
    n_free_voids: int = 3
    n_cracked: int = 0
    crack_width_nm: tuple[float, float] = (20.0, 60.0)
    electrolyte_porosity: float = 0.18
    lamella_thickness_100nm: float = 1.0
    lamella_thickness_gradient: float = 0.15
    # interphase
    interphase_mean_nm: float = 0.0
    interphase_sd_nm: float = 0.0
    interphase_corr_nm: float = 400.0
    interphase_particle_share: float = 0.3
    interphase_ni_fraction: float = 0.35
    interphase_ratio: float = 1.0
    interphase_ratio_sd: float = 0.06
    # Ni chemistry
    bulk_ratio_groups: tuple[tuple[float, float, float], ...] = ((1.0, 1.75, 0.07),)
    intraparticle_ratio_sd: float = 0.04
    intraparticle_corr_nm: float = 300.0
    surface_reduction_mean: float = 0.0
    surface_reduction_sd: float = 0.0
    surface_reduction_depth_nm: tuple[float, float] = (50.0, 100.0)
    # S chemistry
    s_edge_electrolyte_ev: float = 163.9
    s_shift_ev: float = 0.2
    # phase spectra (amplitudes vary a little between lamellae; energies do not)
    spectra: SpectraModel = field(default_factory=SpectraModel)
    # STXM acquisitions
    edges: tuple[EdgeSpec, ...] = field(default_factory=tuple)

    @property
    def preset(self) -> ConditionPreset:
        return CONDITIONS[self.condition]

    def edge_spec(self, edge: str) -> EdgeSpec:
        for es in self.edges:
            if es.edge == edge:
                return es
        raise KeyError(edge)


def make_spec(condition: str, seed: int, null: bool = False, **overrides) -> LamellaSpec:
    """Draw the parameters of one lamella of a condition from its preset and a seed.

    Parameters
    ----------
    condition : str
        A key of :data:`CONDITIONS`.
    seed : int
        Seed of the parameter draw (and of the lamella generated from the spec).
    null : bool
        No chemical difference between electrolyte- and void-adjacent NMC surfaces (no surface Ni
        reduction at electrolyte contact); the interphase (and its reduced Ni) stays as the condition has it.
    **overrides
        Any :class:`LamellaSpec` field, applied after the draw (e.g. a smaller ``field_width_nm`` for tests).

    Returns
    -------
    LamellaSpec
    """
    if condition not in CONDITIONS:
        raise KeyError(f"unknown condition {condition!r}; choose one of {sorted(CONDITIONS)}")
    pre = CONDITIONS[condition]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    side = str(rng.choice(["left", "right", "top", "bottom"]))
    width = float(rng.uniform(6400.0, 7600.0))
    height = float(rng.uniform(6400.0, 7600.0))
    sem_px = float(np.round(rng.uniform(8.0, 12.0), 2))
    n_lo, n_hi = pre.n_cracked

    def edge(name: str, energies: np.ndarray, i0_range: tuple[float, float], dwell: float) -> EdgeSpec:
        sign = rng.choice([-1.0, 1.0])
        ff = float(rng.uniform(0.9, 0.98))
        off = [float(rng.uniform(-150, 150)), float(rng.uniform(-150, 150))]
        # the scan reaches 100-250 nm past the SEM field on the vacuum side, so it sees the empty area (I0)
        axis = 0 if side in ("left", "right") else 1
        size = width if axis == 0 else height
        beyond = (1.0 - ff) / 2.0 * size + float(rng.uniform(100.0, 250.0))
        off[axis] = -beyond if side in ("left", "top") else beyond
        return EdgeSpec(
            edge=name,
            energies_ev=tuple(float(e) for e in energies),
            stxm_pixel_nm=float(np.round(rng.uniform(35.0, 45.0), 1)),
            scale_error=float(sign * rng.uniform(0.01, 0.02)),
            rotation_deg=float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 5.0)),
            field_fraction=ff,
            offset_nm=(off[0], off[1]),
            psf_fwhm_nm=float(np.round(rng.uniform(45.0, 55.0), 1)),
            i0_counts=float(np.round(rng.uniform(*i0_range))),
            dwell_ms=dwell,
            drift_total_px=float(rng.uniform(1.0, 1.6)),
            ring_current_ma=float(np.round(rng.uniform(380.0, 450.0), 1)),
            ring_lifetime_h=float(rng.uniform(30.0, 60.0)),
        )

    base = SpectraModel()
    spectra = replace(
        base,
        ni_l3_peak_sum=base.ni_l3_peak_sum * float(rng.uniform(0.92, 1.08)),
        ni_l3_step=base.ni_l3_step * float(rng.uniform(0.9, 1.1)),
        nmc_background_ni=base.nmc_background_ni * float(rng.uniform(0.92, 1.08)),
        electrolyte_background_ni=base.electrolyte_background_ni * float(rng.uniform(0.9, 1.1)),
        nmc_s_edge=base.nmc_s_edge * float(rng.uniform(0.92, 1.08)),
        electrolyte_s_step=base.electrolyte_s_step * float(rng.uniform(0.9, 1.1)),
        s_l3_peak=base.s_l3_peak * float(rng.uniform(0.9, 1.1)),
    )
    ni = edge("Ni-L", ni_l_energies(float(rng.choice([0.2, 0.25]))), (5000.0, 20000.0), 1.0)
    s = edge("S-L", s_l_energies(float(rng.choice([0.2, 0.25]))), (300.0, 1000.0), 2.0)
    spec = LamellaSpec(
        condition=condition, seed=int(seed), null=bool(null), name=condition,
        field_width_nm=width, field_height_nm=height, sem_pixel_nm=sem_px,
        sem_bit_depth=int(rng.choice([8, 16])),
        vacuum_side=side, vacuum_width_nm=float(rng.uniform(450.0, 900.0)),
        n_particles=int(rng.integers(11, 16)),
        particle_diameter_median_nm=float(rng.uniform(1300.0, 1700.0)),
        nmc_area_fraction=float(rng.uniform(0.36, 0.46)),
        n_touching_pairs=int(rng.integers(1, 4)),
        n_narrow_gaps=int(rng.integers(1, 4)),
        void_particle_fraction=float(rng.uniform(0.8, 0.95)),
        n_free_voids=int(rng.integers(2, 6)),
        n_cracked=int(rng.integers(n_lo, n_hi + 1)),
        electrolyte_porosity=float(rng.uniform(0.12, 0.25)),
        lamella_thickness_100nm=float(rng.uniform(0.9, 1.1)),
        lamella_thickness_gradient=float(rng.uniform(0.05, 0.2)),
        interphase_mean_nm=pre.interphase_mean_nm, interphase_sd_nm=pre.interphase_sd_nm,
        interphase_ratio=pre.interphase_ratio,
        bulk_ratio_groups=pre.bulk_ratio_groups,
        intraparticle_ratio_sd=pre.intraparticle_ratio_sd,
        surface_reduction_mean=0.0 if null else pre.surface_reduction_mean,
        surface_reduction_sd=0.0 if null else pre.surface_reduction_sd,
        surface_reduction_depth_nm=pre.surface_reduction_depth_nm,
        s_shift_ev=pre.s_shift_ev,
        spectra=spectra,
        edges=(ni, s),
    )
    return replace(spec, **overrides) if overrides else spec
