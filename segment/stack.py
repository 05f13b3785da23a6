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


# ----------------------------------------------------------------------------------------------------------
# I0 and optical density
# ----------------------------------------------------------------------------------------------------------

def _monitor_array(stack: Stack) -> np.ndarray:
    """The monitor as an array broadcastable to ``stack.data`` (a per-energy vector becomes (n_e, 1, 1))."""
    mon = np.asarray(stack.monitor, dtype=float)
    if mon.ndim == 1 and mon.shape[0] == stack.n_energy:
        mon = mon.reshape(-1, 1, 1)
    return np.broadcast_to(mon, stack.data.shape) if mon.ndim == 3 else mon


def normalised_counts(stack: Stack) -> np.ndarray:
    """Counts corrected for a ring-current monitor, in the stack's own count units.

    With ``monitor_kind == "ring_current"`` the counts of each frame (or pixel) are divided by
    ``monitor / mean(monitor)``: the monitor is only proportional to the incident flux, so it removes
    beam-current changes but cannot serve as I0. Other stacks are returned unchanged.
    """
    data = np.asarray(stack.data, dtype=float)
    if stack.monitor is None or stack.monitor_kind != "ring_current":
        return data
    mon = _monitor_array(stack)
    mean = float(np.mean(mon[np.isfinite(mon) & (mon > 0)])) if np.any(mon > 0) else 1.0
    rel = np.where(np.isfinite(mon) & (mon > 0), mon / mean, 1.0)
    return data / rel


def _spatial_noise(values: np.ndarray, region: np.ndarray) -> float:
    """Noise sd of a map inside a region, from differences of horizontally and vertically adjacent pixels
    that are both in the region (robust MAD; flat empty areas differ only by noise)."""
    d = [(values[:, 1:] - values[:, :-1])[region[:, 1:] & region[:, :-1]],
         (values[1:, :] - values[:-1, :])[region[1:, :] & region[:-1, :]]]
    d = np.concatenate(d)
    if d.size < 8:
        return float("nan")
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _auto_i0_region(counts: np.ndarray, n_sigma: float = 3.0, seed_fraction: float = 0.02,
                    n_iter: int = 5) -> tuple[np.ndarray, dict]:
    """Pixels whose transmission is consistently the highest across energies (empty field or holes).

    Method (in the spirit of MANTiS' bright-pixel histogram, made noise-aware):

    1. apparent OD of every pixel against a bright reference per frame (its 99th percentile of counts),
       averaged over energies: ``m = mean_k ln(ref_k / I_k)``; empty pixels form the lowest peak of ``m``;
    2. seed with the brightest ``seed_fraction`` of pixels, then iterate: centre ``m0`` = median ``m`` of the
       current region, noise ``σ_m`` = spread of ``m`` between adjacent pixels of the region (robust),
       region = pixels with ``m ≤ m0 + n_sigma · σ_m``, until it stops changing.

    So the threshold follows the measured noise, not a fixed OD. The region is what the data cannot tell
    apart from the brightest pixels; a field entirely covered by sample will give its thinnest part, which
    is why the caller checks the size and the OD the region has against the rest (see ``optical_density``).
    """
    n_e, ny, nx = counts.shape
    floor = max(np.nanpercentile(counts[counts > 0], 0.1) * 1e-3, 1e-12) if np.any(counts > 0) else 1.0
    logc = np.log(np.maximum(counts, floor))
    ref = np.percentile(logc.reshape(n_e, -1), 99.0, axis=1).reshape(-1, 1, 1)
    od_rel = ref - logc
    m = od_rel.mean(axis=0)
    seed_n = max(9, int(round(seed_fraction * ny * nx)))
    region = np.zeros((ny, nx), bool)
    region.flat[np.argsort(m, axis=None)[:seed_n]] = True
    m0 = sigma_m = float("nan")
    for _ in range(n_iter):
        m0 = float(np.median(m[region]))
        sigma_m = _spatial_noise(m, region)
        if not np.isfinite(sigma_m):
            sigma_m = float(np.std(m[region]))
        sigma_m = max(sigma_m, 1e-6)
        new = m <= m0 + n_sigma * sigma_m
        if np.array_equal(new, region):
            break
        region = new
    info = {"mean_apparent_od_center": m0, "mean_apparent_od_sigma": sigma_m,
            "threshold": m0 + n_sigma * sigma_m, "n_sigma": n_sigma,
            "median_apparent_od_elsewhere": float(np.median(m[~region])) if (~region).any() else float("nan")}
    return region, info


def _find_i0(stack: Stack, region_mask=None, min_pixels: int | None = None):
    """I0 with its provenance: ``(i0 (n_e,), mask, info)``."""
    n_e, ny, nx = stack.data.shape
    counts = normalised_counts(stack)
    info: dict = {"warnings": []}
    if min_pixels is None:
        min_pixels = max(9, int(round(0.002 * ny * nx)))
    if region_mask is not None:
        mask = np.asarray(region_mask, dtype=bool)
        if mask.shape != (ny, nx):
            raise ValueError(f"region_mask has shape {mask.shape}, the stack frames {(ny, nx)}")
        if not mask.any():
            raise ValueError("region_mask selects no pixel")
        info["source"] = "region"
    elif stack.monitor is not None and stack.monitor_kind == "i0":
        mon = _monitor_array(stack)
        i0 = mon.reshape(n_e, -1).mean(axis=1) if mon.ndim == 3 else np.asarray(mon, float).ravel()
        info.update(source="monitor", n_pixels=0)
        return np.asarray(i0, dtype=float), np.zeros((ny, nx), bool), info
    else:
        mask, auto = _auto_i0_region(counts)
        info.update(source="auto", auto=auto)
    info["n_pixels"] = int(mask.sum())
    info["fraction"] = float(mask.mean())
    if info["source"] == "auto" and mask.any():
        from scipy import ndimage

        lab, n_comp = ndimage.label(mask)
        share = float(np.bincount(lab.ravel())[1:].max() / mask.sum())
        info.update(n_components=int(n_comp), largest_component_share=share)
        if share < 0.5:
            # an empty field (beside the lamella, a hole) is one piece; a weakly absorbing phase is many
            info["warnings"].append(
                f"the automatic I0 region is fragmented ({n_comp} pieces, the largest holds {100 * share:.0f} %):"
                " it may be a weakly absorbing phase rather than empty field; give an I0 region or a monitor")
    if mask.sum() < min_pixels:
        info["warnings"].append(
            f"I0 region has only {int(mask.sum())} pixels (< {min_pixels}): I0 is noisy or the field has no "
            "empty area; give a region or a monitor")
    i0 = counts[:, mask].mean(axis=1)
    if stack.monitor is not None and stack.monitor_kind == "ring_current":
        info["ring_current_normalised"] = True
    return i0, mask, info


def find_i0(stack: Stack, region_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Incident flux I0(E) of a counts stack.

    Order of precedence:

    1. ``region_mask`` given: mean counts of those pixels (the user's empty region);
    2. ``stack.monitor_kind == "i0"``: the monitor (averaged over pixels when it is per pixel);
    3. otherwise found automatically: the pixels whose transmission is consistently the highest across
       energies (the field outside the lamella, or holes), with a noise-derived threshold (see
       ``_auto_i0_region``); I0 is the mean of their counts (mean of counts, not of logarithms, so Poisson
       noise does not bias it).

    A ring-current monitor only normalises the counts (divided by ``monitor / mean(monitor)``) before
    I0 is taken from pixels.

    Parameters
    ----------
    stack : Stack
        ``kind == "counts"``.
    region_mask : ndarray of bool, shape (ny, nx), optional
        Pixels known to be empty.

    Returns
    -------
    i0 : ndarray, shape (n_energy,)
        In the units of the (normalised) counts.
    mask : ndarray of bool, shape (ny, nx)
        The pixels used (all False when I0 came from the monitor).
    """
    i0, mask, _ = _find_i0(stack, region_mask)
    return i0, mask


def optical_density(stack: Stack, i0: np.ndarray | None = None, region_mask: np.ndarray | None = None,
                    min_photons: float = 5.0, clip_negative: bool = False) -> tuple[Stack, dict]:
    """Optical density ``OD = −ln(I / I0)`` of a counts stack, with explicit handling of bad pixels.

    Parameters
    ----------
    stack : Stack
        Counts (``kind == "counts"``); a stack already in OD is returned unchanged with a note.
    i0 : ndarray, shape (n_energy,) or broadcastable to the data, optional
        Incident flux; found with :func:`find_i0` (``region_mask``, monitor or automatic) when omitted.
    region_mask : ndarray of bool, optional
        Empty region for I0 (ignored when ``i0`` is given).
    min_photons : float
        Fewest detected photons a pixel must have for its OD to mean anything (default 5: the relative
        noise of the count is then ≈ 45 %, so OD is uncertain by ±0.45). Converted to counts with the
        detector gain measured on the I0 region (variance / mean of its counts, = 1 for photon counting);
        gain 1 is assumed when I0 came from a monitor or a given array.
    clip_negative : bool
        Negative OD (I > I0) on empty pixels is noise; by default it is kept (clipping would bias the mean
        of thin or empty regions upward). ``True`` sets it to 0. Either way it is counted in the report.

    Returns
    -------
    od : Stack
        ``kind == "od"``; pixels whose counts are zero, negative or below the measurable floor
        (``min_photons`` × gain) are **saturated**: their OD is replaced by the ceiling
        ``ln(I0 / floor)`` of that frame (the largest OD the frame can measure), so they stay "strongly
        absorbing" and finite rather than infinite or NaN. ``metadata["od_report"]`` holds the report.
    report : dict
        ``i0`` (list), ``i0_source``, ``i0_mask`` (bool array), ``i0_n_pixels``, ``gain``,
        ``floor_counts``, ``od_ceiling`` (per energy), masks ``zero_counts``, ``saturated``,
        ``negative_od`` (bool arrays (ny, nx): any energy) with counts ``n_*`` (pixel-frames), ``notes`` and
        ``warnings`` (lists of str).
    """
    if stack.kind == "od":
        report = {"notes": ["stack is already optical density: passed through unchanged"], "warnings": [],
                  "i0_source": "none"}
        return stack, report
    n_e, ny, nx = stack.data.shape
    counts = normalised_counts(stack)
    notes: list[str] = []
    if stack.monitor is not None and stack.monitor_kind == "ring_current":
        notes.append("counts divided by ring current / mean(ring current)")
    info: dict = {"warnings": []}
    if i0 is None:
        i0v, i0_mask, info = _find_i0(stack, region_mask)
    else:
        i0v, i0_mask = np.asarray(i0, dtype=float), np.zeros((ny, nx), bool)
        info = {"source": "given", "n_pixels": 0, "warnings": []}
    i0b = i0v.reshape(-1, 1, 1) if i0v.ndim == 1 else i0v
    gain = 1.0
    if i0_mask.sum() >= 4:
        sel = counts[:, i0_mask]
        mean_c = sel.mean(axis=1)
        var_c = sel.var(axis=1, ddof=1)
        ok = mean_c > 0
        if ok.any():
            gain = float(np.median(var_c[ok] / mean_c[ok]))
            # a structured region inflates the variance; a gain far above that of a photon counter is
            # reported, and the floor stays meaningful because it scales with it
    floor = float(min_photons) * max(gain, 1e-9)
    ceiling = np.log(np.maximum(i0b, floor) / floor)
    zero = counts <= 0
    saturated = counts < floor
    with np.errstate(divide="ignore", invalid="ignore"):
        od = -np.log(counts / i0b)
    od = np.where(saturated, np.broadcast_to(ceiling, od.shape), od)
    negative = od < 0
    if clip_negative:
        od = np.where(negative, 0.0, od)
        notes.append("negative OD set to 0")
    warnings = list(info.get("warnings", []))
    if info.get("source") == "auto":
        auto = info.get("auto", {})
        if auto.get("median_apparent_od_elsewhere", 1.0) < 3 * auto.get("mean_apparent_od_sigma", 0.0):
            warnings.append("the automatic I0 region is barely brighter than the rest of the field: "
                            "the field may have no empty area")
    if info.get("source") == "auto" and info.get("fraction", 0.0) > 0.5:
        warnings.append(f"the automatic I0 region covers {100 * info['fraction']:.0f} % of the field: the "
                        "field may have no sample, or no empty area; check the I0 mask")
    frac_sat = float(saturated.mean())
    if frac_sat > 0.01:
        warnings.append(f"{100 * frac_sat:.1f} % of pixel-frames are saturated (too few counts to measure OD)")
    report = {
        "i0": i0v.tolist() if i0v.ndim == 1 else None,
        "i0_source": info.get("source"),
        "i0_mask": i0_mask,
        "i0_n_pixels": int(info.get("n_pixels", 0)),
        "i0_details": {k: v for k, v in info.items() if k not in ("warnings",)},
        "gain": gain,
        "floor_counts": floor,
        "od_ceiling": np.broadcast_to(ceiling, (n_e,) + ceiling.shape[1:]).reshape(n_e, -1)[:, 0].tolist(),
        "zero_counts": zero.any(axis=0), "n_zero_counts": int(zero.sum()),
        "saturated": saturated.any(axis=0), "n_saturated": int(saturated.sum()),
        "negative_od": negative.any(axis=0), "n_negative_od": int(negative.sum()),
        "notes": notes + [f"saturated pixel-frames (counts < {floor:.3g}) set to the frame's OD ceiling "
                          "ln(I0/floor)"],
        "warnings": warnings,
    }
    meta = dict(stack.metadata)
    meta["od_report"] = {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}
    out = stack.with_data(np.asarray(od, dtype=np.float64), kind="od", metadata=meta)
    return out, report
