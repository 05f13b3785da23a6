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
