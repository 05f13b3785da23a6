"""ceimap.segment — from raw SEM and STXM files to class maps, particles and spectral maps.

Modules in data-flow order: ``io`` (readers and writers), ``stack`` (I0, optical density), ``align``
(energy-frame drift), ``register`` (STXM → SEM), ``spectra`` (e_g/t_2g, S edge position), ``decompose``
(PCA, NMF, k-means, reference fitting), ``assign`` (automatic class naming at SEM resolution),
``particles`` (NMC instances), ``pipeline`` (one lamella end to end) and ``synthetic`` (example lamellae
with ground truth).
"""

__version__ = "0.1.0"

CLASS_CODES = {"outside": 0, "nmc": 1, "interphase": 2, "electrolyte": 3, "void": 4}
"""Class codes used everywhere (maps, annotations, models, tables)."""
