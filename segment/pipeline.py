"""One lamella from raw files to maps: the segment stages in data-flow order.

``process_lamella`` is what ``ceimap run`` and the napari plugin call; every stage it runs is a public
function of its own module and can be called separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .align import align_frames
from .assign import segment_lamella
from .lamella import Lamella
from .particles import label_particles
from .register import Registration, contrast_image, register_stxm_to_sem
from .spectra import egt2g_map, s_edge_map
from .stack import Stack, optical_density

NI_EDGE = "Ni-L"
S_EDGE = "S-L"


@dataclass(frozen=True)
class PipelineResult:
    """Everything the segment stages produce for one lamella.

    Attributes
    ----------
    lamella : Lamella
        The inputs.
    od_stacks : dict of str to Stack
        Drift-corrected optical-density stacks on their native STXM grids, by edge.
    od_reports : dict of str to dict
        What the OD conversion found (I0 source, zero / saturated / negative pixels), by edge.
    drift_px : dict of str to ndarray, shape (n_energy, 2)
        Drift (dy, dx) found in each frame, in STXM pixels, by edge.
    registrations : dict of str to Registration
        STXM pixel → SEM pixel transform of each edge.
    classes : ndarray of uint8, shape of the SEM image
        Class codes (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void).
    particles : ndarray of uint32, shape of the SEM image
        NMC particle ids, 0 = not NMC.
    probabilities : ndarray of float32, shape (5, n_y, n_x), or None
        Per-class probabilities on the SEM grid when the segmentation gives them.
    egt2g : EgT2gMap or None
        Ni e_g/t_2g ratio on the native Ni-L grid.
    s_edge : SEdgeMap or None
        S L-edge position on the native S-L grid.
    details : dict
        Stage details worth reporting (segmentation diagnostics, parameters).
    """

    lamella: Lamella
    od_stacks: dict
    od_reports: dict
    drift_px: dict
    registrations: dict
    classes: np.ndarray
    particles: np.ndarray
    probabilities: np.ndarray | None
    egt2g: object | None
    s_edge: object | None
    details: dict = field(default_factory=dict)


def _silent(message: str) -> None:
    pass


def preprocess_stack(stack: Stack) -> tuple[Stack, dict, np.ndarray]:
    """Drift-correct a stack and convert it to optical density.

    Frames are aligned on the transmitted counts (the same images the beamline recorded), then
    I0 is found and OD computed on the aligned stack.

    Parameters
    ----------
    stack : Stack
        Counts or OD as read from the file.

    Returns
    -------
    od : Stack
        Aligned optical-density stack (``kind == "od"``).
    report : dict
        The OD conversion report.
    shifts_px : ndarray, shape (n_energy, 2)
        Drift (dy, dx) found in each frame, in STXM pixels.
    """
    if stack.n_energy > 1:
        aligned, shifts_px = align_frames(stack)
    else:
        aligned, shifts_px = stack, np.zeros((1, 2))
    od, report = optical_density(aligned)
    return od, report, np.asarray(shifts_px, dtype=float)


def process_lamella(
    lamella: Lamella,
    *,
    progress: Callable[[str], None] = _silent,
) -> PipelineResult:
    """Run the segment stages on one lamella: OD, drift, registration, spectra, classes, particles.

    Parameters
    ----------
    lamella : Lamella
        SEM image and STXM stacks (a Ni-L stack is required; S-L is used when present).
    progress : callable, optional
        Called with a short message before each long step (the CLI prints them on stderr).

    Returns
    -------
    PipelineResult
    """
    sem = lamella.sem
    od_stacks, od_reports, drift_px, registrations = {}, {}, {}, {}
    for edge, stack in lamella.stacks.items():
        progress(f"{edge}: aligning {stack.n_energy} energy frames and converting to optical density")
        od, report, shifts = preprocess_stack(stack)
        od_stacks[edge], od_reports[edge], drift_px[edge] = od, report, shifts
        progress(f"{edge}: registering STXM ({od.pixel_size_nm:.1f} nm px) onto SEM ({sem.pixel_size_nm:.2f} nm px)")
        registrations[edge] = register_stxm_to_sem(
            contrast_image(od), od.pixel_size_nm, sem.image, sem.pixel_size_nm
        )

    egt2g = None
    if NI_EDGE in od_stacks:
        progress("Ni-L: e_g/t_2g ratio per STXM pixel")
        egt2g = egt2g_map(od_stacks[NI_EDGE])
    s_edge = None
    if S_EDGE in od_stacks:
        progress("S-L: edge position per STXM pixel")
        s_edge = s_edge_map(od_stacks[S_EDGE])

    progress("segmenting: chemistry + SEM texture → class map")
    segmentation = segment_lamella(od_stacks, registrations, sem)
    progress("labelling NMC particles")
    particles = label_particles(segmentation.classes, sem.image, sem.pixel_size_nm)

    return PipelineResult(
        lamella=lamella,
        od_stacks=od_stacks,
        od_reports=od_reports,
        drift_px=drift_px,
        registrations=registrations,
        classes=np.asarray(segmentation.classes, dtype=np.uint8),
        particles=np.asarray(particles, dtype=np.uint32),
        probabilities=segmentation.probabilities,
        egt2g=egt2g,
        s_edge=s_edge,
        details={"segmentation": segmentation.details},
    )
