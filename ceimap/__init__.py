"""ceimap — correlated SEM + STXM chemical maps and statistics of battery cathode lamellae.

The installed distribution has this one import name. Its subpackages live in the repository's top-level
folders (``pyproject.toml`` maps them):

- :mod:`ceimap.segment` (``segment/``): raw SEM and STXM files → class maps, particles and spectral maps;
- :mod:`ceimap.stats` (``stats/``): maps → numbers, reports and the ``ceimap`` command line;
- :mod:`ceimap.napari_plugin` (``napari_plugin/``): the napari plugin.

At this top level, the Python API (:mod:`ceimap.api`, CONTRACT.md "Python API"): :func:`run`,
:class:`Result`, :func:`read_results`, :func:`compare`, :func:`train`, and :class:`Class`, the class codes.
"""

from ceimap.api import Result, compare, load_lamella, read_results, run, train
from ceimap.segment import Class, __version__

__all__ = ["Class", "Result", "__version__", "compare", "load_lamella", "read_results", "run", "train"]
