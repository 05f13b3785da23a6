"""The STXM stack: one absorption edge of one lamella, as counts or optical density.

This module holds the :class:`Stack` data object that every reader returns and every processing stage
takes, and the conversion of transmitted counts to optical density (I0 and OD).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

StackKind = Literal["counts", "od"]


@dataclass(frozen=True)
class Stack:
    """An STXM image stack of one absorption edge.

    Attributes
    ----------
    data : ndarray, shape (n_energy, n_y, n_x)
        Transmitted counts (``kind == "counts"``) or optical density (``kind == "od"``), float64.
        ``data[k, y, x]``: energy index ``k``, row ``y``, column ``x``.
    energies_ev : ndarray, shape (n_energy,)
        Photon energy of each frame in eV, strictly increasing.
    pixel_size_nm : float
        Size of one STXM pixel in nm (square pixels; readers refuse stacks whose x and y steps differ
        by more than 1 %).
    kind : {"counts", "od"}
        What ``data`` holds.
    edge : str or None
        Edge name, ``"Ni-L"``, ``"S-L"``, ``"O-K"``, ``"C-K"`` …, or None when unknown.
    origin_x_nm, origin_y_nm : float
        Stage position of the centre of pixel (0, 0) in nm, when the file says (else 0).
    dwell_ms : ndarray, shape (n_energy,), or None
        Dwell time per pixel of each frame in ms, when the file says.
    monitor : ndarray or None
        Incident-flux monitor from the file (I0 or ring current), broadcastable to ``data``; None when
        the file has none.
    monitor_kind : str or None
        What ``monitor`` measures: ``"i0"`` (incident flux at the sample) or ``"ring_current"`` (only
        proportional to it), or None.
    source : str
        The file the stack was read from ("" when made in memory).
    metadata : dict
        Anything else the reader found worth keeping (instrument, scan type, channel …).
    """

    data: np.ndarray
    energies_ev: np.ndarray
    pixel_size_nm: float
    kind: StackKind = "counts"
    edge: str | None = None
    origin_x_nm: float = 0.0
    origin_y_nm: float = 0.0
    dwell_ms: np.ndarray | None = None
    monitor: np.ndarray | None = None
    monitor_kind: str | None = None
    source: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def n_energy(self) -> int:
        return self.data.shape[0]

    @property
    def shape_yx(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    def with_data(self, data: np.ndarray, **changes) -> "Stack":
        """A copy of this stack with new ``data`` (same axes) and optional other fields changed."""
        return replace(self, data=data, **changes)
