"""Synthetic lamellae with ground truth: SEM image, Ni-L and S-L STXM count stacks, annotations, truth.

Every later stage of ceimap is tested against this truth, so the physics is explicit (see the modules):
:mod:`~ceimap.segment.synthetic.microstructure` (geometry on a fine grid), :mod:`~ceimap.segment.synthetic.chemistry`
(Ni e_g/t_2g of every pixel), :mod:`~ceimap.segment.synthetic.spectra_model` (phase spectra),
:mod:`~ceimap.segment.synthetic.imaging` (STXM forward model), :mod:`~ceimap.segment.synthetic.sem` (SEM rendering),
:mod:`~ceimap.segment.synthetic.annotations` (scribbles), :mod:`~ceimap.segment.synthetic.truth` (truth tables) and
:mod:`~ceimap.segment.synthetic.files` (writing, loading, the example datasets).

Examples
--------
>>> from ceimap.segment.synthetic import make_lamella
>>> lam = make_lamella("cycled_4p25v", seed=7)              # doctest: +SKIP
>>> sorted(lam.stacks)                                      # doctest: +SKIP
['Ni-L', 'S-L']
"""

from .conditions import CONDITIONS, ConditionPreset
from .files import EXAMPLES, load_truth, make_datasets, write_lamella
from .generate import SyntheticLamella, make_lamella
from .spec import GENERATOR_VERSION, EdgeSpec, LamellaSpec, make_spec
from .spectra_model import SpectraModel

__all__ = ["CONDITIONS", "ConditionPreset", "EXAMPLES", "EdgeSpec", "GENERATOR_VERSION", "LamellaSpec",
           "SpectraModel", "SyntheticLamella", "load_truth", "make_datasets", "make_lamella", "make_spec",
           "write_lamella"]
