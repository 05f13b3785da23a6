"""One synthetic lamella in memory: :func:`make_lamella` → :class:`SyntheticLamella`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from .. import Class
from ..lamella import SemImage
from ..stack import Stack
from . import annotations as _annotations
from . import chemistry, imaging, truth
from .microstructure import make_microstructure
from .sem import render_sem
from .spec import GENERATOR_VERSION, LamellaSpec, make_spec
from .spectra_model import l3_amplitudes, ni_basis, s_basis

_STREAMS = ("microstructure", "chemistry", "ni_geometry", "ni_counts", "s_geometry", "s_counts", "sem",
            "annotations", "stage")


@dataclass(frozen=True)
class SyntheticLamella:
    """A synthetic lamella and its ground truth.

    Attributes
    ----------
    spec : LamellaSpec
    sem : SemImage
        The rendered SEM image (grey values of ``spec.sem_bit_depth`` bits, as float32).
    stacks : dict of str to Stack
        ``"Ni-L"`` and ``"S-L"`` transmitted-count stacks (with the ring current as monitor).
    annotations : ndarray uint8
        Sparse scribbles on the SEM grid (0 = not annotated).
    truth : dict
        ``classes`` (uint8), ``particles`` (uint32), ``egt2g`` (float32, NaN without Ni) on the SEM grid;
        ``particle_table``, ``thickness`` and ``spectra`` (DataFrames: OD per 100 nm of each dense phase at
        every energy, NMC at the lamella's mean bulk e_g/t_2g); ``transforms`` ({edge: {matrix, drift_px, …}});
        ``info`` (what truth.json holds).
    """

    spec: LamellaSpec
    sem: SemImage
    stacks: dict
    annotations: np.ndarray
    truth: dict


def _phase_spectra(edge, e, b, model, spec, mean_bulk) -> pd.DataFrame:
    """OD per 100 nm of each dense phase at the stack's energies (NMC at the lamella's mean bulk ratio)."""
    if edge == "Ni-L":
        a_t, a_e = l3_amplitudes(mean_bulk, model.ni_l3_peak_sum)
        i_t, i_e = l3_amplitudes(spec.interphase_ratio, model.ni_l3_peak_sum)
        f = spec.interphase_ni_fraction
        cols = {"nmc": b["nmc"] + a_t * b["t2g"] + a_e * b["eg"],
                "interphase": b["interphase"] + f * (i_t * b["t2g"] + i_e * b["eg"]),
                "electrolyte": b["electrolyte"]}
    else:
        cols = dict(b)
    return pd.DataFrame({"edge": edge, "energy_ev": e, **cols})


def _rngs(seed: int) -> dict:
    children = np.random.SeedSequence([int(seed), 2]).spawn(len(_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children)}


def _resolve_spec(condition_or_spec, seed, null) -> LamellaSpec:
    if isinstance(condition_or_spec, LamellaSpec):
        spec = condition_or_spec
        if seed is not None:
            spec = replace(spec, seed=int(seed))
        if null and not spec.null:
            spec = replace(spec, null=True, surface_reduction_mean=0.0, surface_reduction_sd=0.0)
        return spec
    return make_spec(str(condition_or_spec), 0 if seed is None else int(seed), null=null)


def make_lamella(condition_or_spec, seed: int | None = None, null: bool = False) -> SyntheticLamella:
    """Generate one synthetic lamella (SEM image, Ni-L and S-L count stacks, annotations, truth).

    Parameters
    ----------
    condition_or_spec : str or LamellaSpec
        A key of :data:`CONDITIONS` (parameters then drawn with :func:`make_spec` from ``seed``) or a spec.
    seed : int, optional
        Seed (default 0 for a condition; the spec's own seed for a spec). Same seed → identical arrays.
    null : bool
        No surface Ni reduction at electrolyte contact (electrolyte- and void-adjacent NMC surfaces alike);
        the interphase, with its own reduced Ni and oxidised sulfur, is kept as the condition has it.

    Returns
    -------
    SyntheticLamella

    Examples
    --------
    >>> lam = make_lamella("charged", seed=3)                # doctest: +SKIP
    >>> lam.stacks["Ni-L"].data.shape                        # doctest: +SKIP
    (61, 163, 160)
    """
    spec = _resolve_spec(condition_or_spec, seed, null)
    model = spec.spectra
    rng = _rngs(spec.seed)
    ms = make_microstructure(spec, rng["microstructure"])
    params = chemistry.particle_parameters(spec, len(ms.records), rng["chemistry"])
    ratio = chemistry.ratio_map(spec, ms, params, rng["chemistry"])

    # coefficient maps on the fine grid (cropped to an even shape for 2 × 2 block averaging)
    ny, nx = (s - s % imaging.BLOCK for s in ms.classes.shape)
    cls = ms.classes[:ny, :nx]
    w = ms.thickness_100nm[:ny, :nx] * ms.material[:ny, :nx]
    w_nmc = np.where(cls == Class.NMC, w, 0).astype(np.float32)
    w_int = np.where(cls == Class.INTERPHASE, w, 0).astype(np.float32)
    w_el = np.where(cls == Class.ELECTROLYTE, w, 0).astype(np.float32)
    r = np.nan_to_num(ratio[:ny, :nx], nan=1.0)
    a_t, a_e = l3_amplitudes(r, model.ni_l3_peak_sum)
    ni_weight = w_nmc + spec.interphase_ni_fraction * w_int
    ni_maps = np.stack([w_nmc, w_int, w_el, ni_weight * a_t, ni_weight * a_e]).astype(np.float32)
    s_maps = np.stack([w_nmc, w_int, w_el])

    sem_shape = imaging.sem_shape(spec)
    stage_xy = rng["stage"].uniform(-2e6, 2e6, 2)
    stacks, transforms, i0_info, spectra_rows = {}, {}, {}, []
    mean_bulk = float(np.mean([p["bulk"] for p in params])) if params else 1.75
    for es in spec.edges:
        key = "ni" if es.edge == "Ni-L" else "s"
        e = np.asarray(es.energies_ev, float)
        if es.edge == "Ni-L":
            b = ni_basis(e, model, spec.interphase_ni_fraction)
            basis, maps = np.stack([b["nmc"], b["interphase"], b["electrolyte"], b["t2g"], b["eg"]], 1), ni_maps
        else:
            b = s_basis(e, model, spec.s_edge_electrolyte_ev, spec.s_shift_ev, spec.interphase_ni_fraction)
            basis, maps = np.stack([b["nmc"], b["interphase"], b["electrolyte"]], 1), s_maps
        spectra_rows.append(_phase_spectra(es.edge, e, b, model, spec, mean_bulk))
        geom = imaging.stack_geometry(spec, es, rng[f"{key}_geometry"])
        i0 = imaging.i0_spectrum(es, rng[f"{key}_geometry"])
        ring = imaging.ring_current(es, geom.shape_yx[0] * geom.shape_yx[1])
        counts = imaging.simulate_counts(maps, basis, geom, es, spec, ms.origin_nm, ms.pixel_nm, i0, ring,
                                         rng[f"{key}_counts"])
        origin_sem = geom.matrix @ np.array([0.0, 0.0, 1.0])
        stacks[es.edge] = Stack(
            data=counts, energies_ev=e, pixel_size_nm=float(es.stxm_pixel_nm), kind="counts", edge=es.edge,
            origin_x_nm=float(stage_xy[0] + origin_sem[0] * spec.sem_pixel_nm),
            origin_y_nm=float(stage_xy[1] + origin_sem[1] * spec.sem_pixel_nm),
            dwell_ms=np.full(len(e), es.dwell_ms), monitor=ring, monitor_kind="ring_current", source="",
            metadata={"scan_type": "sample image stack"},
        )
        transforms[es.edge] = {
            "matrix": geom.matrix.tolist(), "drift_px": geom.drift_px.tolist(),
            "stxm_pixel_nm": float(es.stxm_pixel_nm), "true_stxm_pixel_nm": float(geom.true_pixel_nm),
            "psf_fwhm_nm": float(es.psf_fwhm_nm), "shape_yx": list(geom.shape_yx),
            "scale_error": es.scale_error, "rotation_deg": es.rotation_deg,
            "drift_convention": "(dy, dx) displacement of the sample image in frame k relative to frame 0, "
                                "STXM pixels; matrix maps frame-0 STXM pixel (x, y, 1) to SEM pixel (x, y, 1)",
        }
        i0_info[es.edge] = {"i0_counts": i0.tolist(), "ring_current_ma": ring.tolist()}

    sem_img = render_sem(spec, ms, sem_shape, rng["sem"])
    classes_sem, particles_sem = truth.sample_to_sem(ms, spec, sem_shape, ms.classes, ms.particles)
    egt2g_sem = truth.egt2g_sem_map(ms, ratio, spec, sem_shape)
    ptable = truth.particle_table(ms, spec, ratio, params, particles_sem, sem_shape)
    thick = truth.thickness_points(ms, spec, sem_shape)
    annotations = _annotations.scribble_annotations(classes_sem, spec.sem_pixel_nm, rng["annotations"])
    has_interphase = bool((classes_sem == Class.INTERPHASE).any())
    info = {
        "name": spec.name or spec.condition,
        "condition": spec.condition,
        "sample": spec.preset.description,
        "seed": spec.seed,
        "null": spec.null,
        "generator": "segment.synthetic",
        "generator_version": GENERATOR_VERSION,
        "sem_pixel_nm": spec.sem_pixel_nm,
        "sem_shape_yx": list(sem_shape),
        "class_fractions": truth.class_fractions(classes_sem),
        "n_particles": int(len(np.unique(particles_sem[particles_sem > 0]))),
        "n_cracked": int(ptable["cracked"].sum()) if len(ptable) else 0,
        "touching_pairs": truth.touching_pairs(particles_sem),
        "s_edge_ev": {"electrolyte": spec.s_edge_electrolyte_ev,
                      "interphase": (spec.s_edge_electrolyte_ev + spec.s_shift_ev) if has_interphase else None},
        "interphase_thickness_nm": {
            "mean": spec.interphase_mean_nm, "sd": spec.interphase_sd_nm,
            "realised_mean": float(thick["thickness_nm"].mean()) if len(thick) else None,
            "realised_sd": float(thick["thickness_nm"].std(ddof=1)) if len(thick) > 1 else None,
            "n_points": int(len(thick)), "resolvable": bool(spec.interphase_mean_nm >= 50.0),
        },
        "egt2g": {
            "definition": "amplitude ratio A_eg/A_t2g of the two Ni L3 Gaussians (850.0 eV t2g, 852.0 eV e_g) "
                          "above the non-resonant background and the arctan L3 step",
            "bulk_depth_nm": truth.BULK_DEPTH_NM, "surface_band_nm": truth.SURFACE_BAND_NM,
            "interphase_ratio": spec.interphase_ratio,
            "bulk_particles_bimodal": len(spec.bulk_ratio_groups) > 1,
        },
        "stxm": i0_info,
        "spectra_model": model.as_dict(),
        "spec": asdict(spec),
    }
    truth_dict = {
        "classes": classes_sem.astype(np.uint8),
        "particles": particles_sem.astype(np.uint32),
        "egt2g": egt2g_sem,
        "particle_table": ptable,
        "thickness": thick,
        "spectra": pd.concat(spectra_rows, ignore_index=True),
        "transforms": transforms,
        "info": info,
    }
    sem = SemImage(image=sem_img, pixel_size_nm=float(spec.sem_pixel_nm), pixel_size_source="synthetic", source="")
    return SyntheticLamella(spec=spec, sem=sem, stacks=stacks, annotations=annotations, truth=truth_dict)


