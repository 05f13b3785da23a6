"""X-ray absorption edges that STXM stacks of battery materials are recorded across.

The table gives, for each edge, the tabulated onset (the main absorption feature used to name the edge) and
the window of photon energies a stack across that edge normally spans (pre-edge to post-edge). It is used
to name a stack whose file does not say which edge it covers.

Onsets are the usual soft X-ray edge energies (L3 for L edges, K for K edges) rounded to 0.5 eV; the
windows are chosen so that the windows of elements that occur together in cathode composites (C, O, F,
Mn, Co, Ni, S, P, Cl, Li) do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Edge:
    """One absorption edge.

    Attributes
    ----------
    name : str
        Edge name as used everywhere in ceimap, e.g. ``"Ni-L"``.
    element : str
        Chemical symbol.
    onset_ev : float
        Energy of the edge (L3 or K) in eV.
    min_ev, max_ev : float
        Window of energies a stack across this edge normally spans, in eV.
    """

    name: str
    element: str
    onset_ev: float
    min_ev: float
    max_ev: float

    def contains(self, energy_ev) -> np.ndarray:
        """Whether each energy (eV) lies inside this edge's window (bounds included)."""
        e = np.asarray(energy_ev, dtype=float)
        return (e >= self.min_ev) & (e <= self.max_ev)


def _table(*rows: tuple[str, str, float, float, float]) -> dict[str, Edge]:
    return {name: Edge(name, element, onset, lo, hi) for name, element, onset, lo, hi in rows}


EDGES: dict[str, Edge] = _table(
    # name,  element, onset,  window
    ("Li-K", "Li", 55.0, 50.0, 75.0),
    ("P-L", "P", 135.0, 128.0, 150.0),
    ("S-L", "S", 163.0, 155.0, 190.0),
    ("Cl-L", "Cl", 200.0, 195.0, 225.0),
    ("C-K", "C", 284.5, 280.0, 320.0),
    ("Ca-L", "Ca", 346.5, 340.0, 365.0),
    ("N-K", "N", 401.0, 395.0, 430.0),
    ("Ti-L", "Ti", 456.0, 450.0, 475.0),
    ("O-K", "O", 531.0, 525.0, 560.0),
    ("Mn-L", "Mn", 640.0, 632.0, 665.0),
    ("F-K", "F", 690.0, 680.0, 700.0),
    ("Fe-L", "Fe", 708.0, 700.5, 735.0),
    ("Co-L", "Co", 779.0, 770.0, 800.0),
    ("Ni-L", "Ni", 853.0, 840.0, 885.0),
    ("Cu-L", "Cu", 933.0, 925.0, 960.0),
    ("Al-K", "Al", 1560.0, 1550.0, 1600.0),
    ("Si-K", "Si", 1839.0, 1830.0, 1880.0),
    ("P-K", "P", 2146.0, 2135.0, 2190.0),
    ("S-K", "S", 2472.0, 2460.0, 2520.0),
)
"""Known edges by name, in order of energy."""


def edge_from_energies(energies_ev, *, min_fraction: float = 0.5) -> str | None:
    """Name the absorption edge that a list of stack energies spans.

    The edge chosen is the one whose window (:data:`EDGES`) holds the largest fraction of the energies;
    ties go to the edge whose onset is closest to the median energy. When no window holds at least
    ``min_fraction`` of the energies the edge is unknown.

    Parameters
    ----------
    energies_ev : array_like
        Photon energies of the frames, in eV.
    min_fraction : float, optional
        Smallest fraction of the energies that must fall inside the window.

    Returns
    -------
    str or None
        The edge name (a key of :data:`EDGES`), or None when no edge fits.

    Examples
    --------
    >>> edge_from_energies([845.0, 850.0, 852.0, 870.0])
    'Ni-L'
    >>> edge_from_energies([1.0, 2.0]) is None
    True
    """
    e = np.asarray(energies_ev, dtype=float).ravel()
    e = e[np.isfinite(e)]
    if e.size == 0:
        return None
    median = float(np.median(e))
    best, best_key = None, None
    for edge in EDGES.values():
        fraction = float(np.mean(edge.contains(e)))
        if fraction < min_fraction or fraction == 0.0:
            continue
        key = (fraction, -abs(edge.onset_ev - median))
        if best_key is None or key > best_key:
            best, best_key = edge.name, key
    return best
