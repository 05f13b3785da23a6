"""ceimap.segment — from raw SEM and STXM files to class maps, particles and spectral maps.

Modules in data-flow order: ``io`` (readers and writers), ``stack`` (I0, optical density), ``align``
(energy-frame drift), ``register`` (STXM → SEM), ``spectra`` (e_g/t_2g, S edge position), ``decompose``
(PCA, NMF, k-means, reference fitting, the per-pixel unmixing in transmission); the unsupervised class
assignment by stage: ``grid`` (one STXM grid for all edges), ``noise`` (OD noise scale), ``signatures``
(resonance, absorption), ``chemistry`` (fractions and interphase per STXM pixel), ``outside`` (outside versus
voids), ``refine`` (SEM boundary refinement), ``interphase`` (the interphase band) and ``assign`` (the
orchestrator, :func:`~ceimap.segment.assign.segment_lamella`); ``classifier`` (the supervised path),
``particles`` (NMC instances), ``pipeline`` (one lamella end to end) and ``synthetic`` (example lamellae
with ground truth).
"""

from enum import IntEnum

__version__ = "0.1.0"


class Class(IntEnum):
    """Class codes used everywhere (maps, annotations, models, tables); ``ceimap.Class``.

    In an annotation image ``0`` (``OUTSIDE``) means "not annotated".

    Examples
    --------
    >>> Class.INTERPHASE == 2
    True
    >>> Class(4).name
    'VOID'
    """

    OUTSIDE = 0
    NMC = 1
    INTERPHASE = 2
    ELECTROLYTE = 3
    VOID = 4


CLASS_CODES = {c.name.lower(): int(c) for c in Class}
"""The class codes by lower-case name: ``{"outside": 0, "nmc": 1, "interphase": 2, "electrolyte": 3, "void": 4}``."""
