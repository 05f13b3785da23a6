"""The SEM image and the lamella: what one ``LAMELLA.toml`` (or one ``ceimap run`` command line) names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .stack import Stack


@dataclass(frozen=True)
class SemImage:
    """An SEM image of the lamella.

    Attributes
    ----------
    image : ndarray, shape (n_y, n_x)
        Grey values as float32 (the file's scale; 8/16-bit integers are kept as their values).
    pixel_size_nm : float
        SEM pixel size in nm.
    pixel_size_source : str
        Where the pixel size came from: ``"user"``, ``"tiff-resolution"``, ``"imagej"``, ``"ome"``, ``"fei"`` …
    source : str
        The file it was read from.
    """

    image: np.ndarray
    pixel_size_nm: float
    pixel_size_source: str = "user"
    source: str = ""


@dataclass(frozen=True)
class Lamella:
    """One lamella: an SEM image and one STXM stack per edge.

    Attributes
    ----------
    name : str
        Short name of the lamella (used in reports and comparisons).
    sample : str
        The sample / condition it belongs to (e.g. "100 cycles to 4.25 V").
    sem : SemImage
    stacks : dict of str to Stack
        Edge name (``"Ni-L"``, ``"S-L"`` …) to its stack, in the order given.
    annotations_path : Path or None
        Sparse class annotations on the SEM grid (uint8, 0 = not annotated), when given.
    manifest_path : Path or None
        The ``LAMELLA.toml`` it came from, when it came from one.
    input_paths : list of Path
        Every file read, for provenance (hashes in ``summary.json``).
    """

    name: str
    sample: str
    sem: SemImage
    stacks: dict[str, Stack]
    annotations_path: Path | None = None
    manifest_path: Path | None = None
    input_paths: list[Path] = field(default_factory=list)


EDGE_ENERGY_NEEDS = {
    "Ni-L": (845.0, 856.0, 8, "the e_g/t_2g fit of the L3 peaks (segment.spectra.egt2g_map)"),
    "S-L": (161.4, 166.1, 10, "the S L-edge position fit (segment.spectra.s_edge_map)"),
}
"""Per edge the pipeline analyses: the energy window (eV) and the fewest frames inside it its spectral fit
needs — the default windows of :func:`ceimap.segment.spectra.egt2g_map` (t_2g 850 − 5 to e_g 852 + 4 eV) and
:func:`ceimap.segment.spectra.s_edge_map` (163.9 − 2.5 to 163.9 + 2.2 eV); a test keeps them in step."""

MAX_FIELD_RATIO = 20.0
"""Largest ratio between the SEM and STXM field widths (either way) accepted: STXM and SEM image the same
~7 µm lamella, so fields differing twentyfold mean a wrong pixel size (nm given as µm …)."""


def check_lamella(lamella: Lamella, required_edges=("Ni-L",)) -> None:
    """Refuse a lamella the pipeline cannot analyse, before any processing starts.

    Checks what no single file can: the edges the analysis needs are there
    (``required_edges``); each Ni-L / S-L stack has enough frames inside its spectral fit's window
    (:data:`EDGE_ENERGY_NEEDS`: a one-frame image, a stack of another edge, or energies cut short are refused
    here rather than failing half-way); the SEM and STXM fields are of comparable physical size (a wrong
    pixel size shows as fields differing more than :data:`MAX_FIELD_RATIO` times).

    Parameters
    ----------
    lamella : Lamella
    required_edges : sequence of str

    Raises
    ------
    segment.errors.CeimapInputError
        Naming the stack file (or the manifest / SEM image) and the problem.
    """
    from .errors import CeimapInputError

    where = lamella.manifest_path or "the command line"
    missing = [edge for edge in required_edges if edge not in lamella.stacks]
    if missing:
        raise CeimapInputError(
            f"a {' and a '.join(missing)} stack is required (found edges: {', '.join(lamella.stacks) or 'none'})",
            path=where)
    sem = lamella.sem
    sem_h, sem_w = (n * sem.pixel_size_nm for n in sem.image.shape)
    for edge, stack in lamella.stacks.items():
        path = stack.source or where
        energies = np.asarray(stack.energies_ev, float)
        if edge in EDGE_ENERGY_NEEDS:
            lo, hi, n_min, purpose = EDGE_ENERGY_NEEDS[edge]
            n_in = int(np.sum((energies >= lo) & (energies <= hi)))
            if n_in < n_min:
                span = (f"{energies.size} frame(s), {energies.min():g}–{energies.max():g} eV" if energies.size > 1
                        else f"a single image at {energies[0]:g} eV")
                raise CeimapInputError(
                    f"as the {edge} stack it needs at least {n_min} energies within {lo:g}–{hi:g} eV for "
                    f"{purpose}; it has {n_in} ({span})", path=path)
        ny, nx = stack.shape_yx
        st_h, st_w = ny * stack.pixel_size_nm, nx * stack.pixel_size_nm
        ratio = max(sem_w, sem_h) / max(st_w, st_h)
        if not (1.0 / MAX_FIELD_RATIO <= ratio <= MAX_FIELD_RATIO):
            source = ("given on the command line or in the manifest" if sem.pixel_size_source == "user"
                      else f"from the SEM file's {sem.pixel_size_source} metadata")
            raise CeimapInputError(
                f"the {edge} STXM field ({st_w / 1e3:.4g} × {st_h / 1e3:.4g} µm at {stack.pixel_size_nm:g} nm "
                f"pixels) and the SEM field ({sem_w / 1e3:.4g} × {sem_h / 1e3:.4g} µm at {sem.pixel_size_nm:g} nm "
                f"pixels, {source}) differ {max(ratio, 1 / ratio):.0f}-fold in size: they "
                "cannot show the same lamella; check the pixel sizes", path=path)
