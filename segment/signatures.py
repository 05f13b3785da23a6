"""Spectral signatures across one edge: resonance above the pre-edge baseline, total absorption, and names.

Per pixel and edge: the resonance (mean OD over the edge's resonance window minus the linear pre-edge baseline
extrapolated under it) and the total absorption (:func:`edge_signature`). Strong Ni L3 resonance → NMC;
absorbing matter without Ni (with S²⁻ resonance when S-L exists) → electrolyte; absorption consistent with zero
at all edges → empty (:func:`name_spectrum`).
"""

from __future__ import annotations

import numpy as np

from .edges import EDGES

__all__ = ["edge_signature", "name_spectrum"]


def _windows(energies_ev: np.ndarray, edge: str | None):
    """Boolean pre-edge and resonance windows for an edge (from the tabulated onset)."""
    e = np.asarray(energies_ev, dtype=float)
    if edge in EDGES:
        onset = EDGES[edge].onset_ev
    else:  # unknown edge: the steepest rise of the mean spectrum is not available here; use the range
        onset = e[0] + 0.3 * (e[-1] - e[0])
    pre = e < onset - 4.5
    if pre.sum() < 2:
        pre = e <= np.quantile(e, 0.15)
    res = (e >= onset - 4.0) & (e <= onset + 4.0)
    if res.sum() < 1:
        res = ~pre
    return pre, res


def edge_signature(energies_ev: np.ndarray, od: np.ndarray, edge: str | None,
                   sigma0: np.ndarray | float | None = None) -> dict:
    """Resonance and absorption of spectra across one edge.

    Parameters
    ----------
    energies_ev : ndarray, shape (n_energy,)
    od : ndarray, shape (..., n_energy)
        Spectra.
    edge : str or None
        Edge name (``"Ni-L"``, ``"S-L"`` …) for the windows (pre-edge below onset − 4.5 eV, resonance
        onset ± 4 eV, onsets from :data:`ceimap.segment.edges.EDGES`).
    sigma0 : float or ndarray (n_energy,), optional
        OD noise at zero OD; with it the result also holds signal-to-noise ratios.

    Returns
    -------
    dict
        ``resonance`` (mean OD over the resonance window above the extrapolated linear pre-edge baseline),
        ``absorption`` (mean OD over all energies), and with ``sigma0`` ``resonance_snr``,
        ``absorption_snr`` (same leading shape as ``od``).
    """
    e = np.asarray(energies_ev, dtype=float)
    od = np.asarray(od, dtype=float)
    pre, res = _windows(e, edge)
    ep = e[pre]
    a = np.stack([np.ones_like(ep), ep - ep.mean()], axis=1)
    coef = np.linalg.lstsq(a, np.moveaxis(od[..., pre], -1, 0).reshape(pre.sum(), -1), rcond=None)[0]
    er = e[res] - ep.mean()
    base = coef[0][None, :] + er[:, None] * coef[1][None, :]          # (n_res, n_pix)
    resonance = (np.moveaxis(od[..., res], -1, 0).reshape(res.sum(), -1) - base).mean(axis=0)
    resonance = resonance.reshape(od.shape[:-1])
    out = {"resonance": resonance, "absorption": od.mean(axis=-1)}
    if sigma0 is not None:
        s0 = np.broadcast_to(np.asarray(sigma0, dtype=float), e.shape)
        # noise of the resonance estimate: window mean minus extrapolated baseline (propagated)
        pinv = np.linalg.pinv(a)                                          # (2, n_pre)
        lin = np.zeros((res.sum(), e.size))
        lin[:, np.nonzero(res)[0]] = np.eye(res.sum())
        lin[:, np.nonzero(pre)[0]] -= (np.stack([np.ones_like(er), er], 1) @ pinv)
        g = lin.mean(axis=0)
        sd_res = np.sqrt(np.sum((g * s0) ** 2))
        sd_abs = np.sqrt(np.sum(s0 ** 2)) / e.size
        out["resonance_snr"] = resonance / sd_res
        out["absorption_snr"] = out["absorption"] / sd_abs
    return out


def name_spectrum(spectra: dict, sigma0: dict, *, snr: float = 5.0) -> str:
    """Name one spectrum (or a class mean) from its signatures: ``"nmc"``, ``"electrolyte"`` or ``"void"``.

    Parameters
    ----------
    spectra : dict of str to (energies_ev, od)
        Spectrum per edge.
    sigma0 : dict of str to float or ndarray
        Noise of the spectrum per edge (OD, per energy or one value).
    snr : float
        Signal-to-noise ratio above which a resonance or an absorption counts as present.

    Returns
    -------
    str
        ``"nmc"`` when the Ni L3 resonance is present; else ``"electrolyte"`` when the S L resonance is
        present or there is absorption at any edge (Ni-free matter in a sulfide composite); else
        ``"void"`` (no absorption at any edge).
    """
    sig = {edge: edge_signature(e, np.asarray(od)[None], edge, sigma0[edge])
           for edge, (e, od) in spectra.items()}
    if "Ni-L" in sig and sig["Ni-L"]["resonance_snr"][0] > snr:
        return "nmc"
    if "S-L" in sig and sig["S-L"]["resonance_snr"][0] > snr:
        return "electrolyte"
    if any(s["absorption_snr"][0] > snr for s in sig.values()):
        return "electrolyte"
    return "void"
