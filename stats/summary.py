"""The schema of ``summary.json``: what :mod:`ceimap.stats.analysis` writes and :mod:`ceimap.stats.report` reads.

Both sides use the names defined here, so a key cannot be written under one name and looked for under
another. CONTRACT.md lists the keys users rely on; the rest (``regions``, ``s_edge``, the extra tests) are
extensions that the report also reads.

Class names
-----------
In ``summary.json`` (``class_fractions``) and ``class_spectra.csv`` (``class_name``) a class is named by its
:class:`ceimap.Class` member in lower case (``"nmc"``, ``"interphase"``, ``"electrolyte"``, ``"void"``); the
report and the viewer show :func:`class_label`.
"""

from __future__ import annotations

from ceimap.segment import Class

FRACTION_CLASSES = (Class.NMC, Class.INTERPHASE, Class.ELECTROLYTE, Class.VOID)
"""The classes of ``class_fractions``, in the order written (every class but ``OUTSIDE``)."""


def class_key(code) -> str:
    """Name of a class in the output files: its :class:`ceimap.Class` member in lower case.

    Examples
    --------
    >>> class_key(2), class_key(Class.NMC)
    ('interphase', 'nmc')
    """
    return Class(code).name.lower()


def class_label(code) -> str:
    """Name of a class shown to people (report, viewer): as :func:`class_key`, with NMC in capitals.

    Examples
    --------
    >>> [class_label(c) for c in FRACTION_CLASSES]
    ['NMC', 'interphase', 'electrolyte', 'void']
    """
    return "NMC" if Class(code) is Class.NMC else class_key(code)
