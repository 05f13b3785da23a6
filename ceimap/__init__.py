"""ceimap — correlated SEM + STXM chemical maps and statistics of battery cathode lamellae.

The installed distribution has this one import name. Its subpackages live in the repository's top-level
folders (``pyproject.toml`` maps them):

- :mod:`ceimap.segment` (``segment/``): raw SEM and STXM files → class maps, particles and spectral maps;
- :mod:`ceimap.stats` (``stats/``): maps → numbers, reports and the ``ceimap`` command line;
- :mod:`ceimap.napari_plugin` (``napari_plugin/``): the napari plugin.
"""

from ceimap.segment import __version__

__all__ = ["__version__"]
