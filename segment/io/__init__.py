"""Readers and writers: STXM stacks (NXstxm, aXis2000, ALS, TIFF), SEM images, lamella manifests.

Every reader validates at the boundary and raises :class:`segment.errors.CeimapInputError` naming the
file and the problem; readers never modify their inputs.

- :func:`read_stack` — any STXM stack format, chosen by content and extension.
- :func:`read_sem` / :func:`write_sem_tiff` — SEM TIFF and its pixel size.
- :func:`read_lamella` / :func:`read_annotations` — ``LAMELLA.toml`` manifests, sparse class labels.
- :func:`write_nxstxm` — MANTiS-compatible NeXus NXstxm; :func:`write_tiff_stack` — TIFF + energy list.
"""

from .als import read_als
from .axis2000 import read_ncb
from .manifest import read_annotations, read_lamella
from .nxstxm import read_nxstxm, write_nxstxm
from .sem import read_sem, write_sem_tiff
from .stacks import STACK_FORMATS, read_stack
from .tiffstack import read_tiff_stack, write_tiff_stack

__all__ = [
    "read_stack", "read_sem", "read_lamella", "read_annotations",
    "write_nxstxm", "write_sem_tiff", "write_tiff_stack",
    "read_nxstxm", "read_ncb", "read_als", "read_tiff_stack", "STACK_FORMATS",
]
