"""Spectral maps from aligned OD stacks: Ni e_g/t_2g ratio, S L-edge position, mean spectra by label.

Ni L3 e_g/t_2g (:func:`egt2g_map`)
    The L3 region of every pixel's OD spectrum is modelled as

    ``OD(E) = b0 + b1 (E − Ē) + A_t2g G(E; c_t, σ_t) + A_eg G(E; c_e, σ_e) + S [½ + arctan((E − c_s)/w_s)/π]``

    with unit-height Gaussians ``G``. The shape parameters (centres, widths, step centre and width) are
    found once, by a nonlinear least-squares fit of the mean spectrum of the strong-Ni pixels (centres
    start at the configured energies, by default the paper's 850 and 852 eV, and may move by at most
    ``centre_tolerance_ev`` to absorb an energy-calibration offset). With the shape fixed the model is
    linear, so every pixel is fitted at once by one linear least-squares solve (no loop over pixels). The
    ratio is ``A_eg / A_t2g`` (peak heights above background and step). Its standard error comes from the
    parameter covariance ``s² (DᵀD)⁻¹`` with the pixel's own residual variance ``s²``. A pixel is valid
    where the t_2g amplitude is positive and its signal-to-noise ratio ``A_t2g / σ(A_t2g)`` is at least
    ``1 / sqrt(max_ratio_bias)``: a ratio of noisy numbers is biased upwards by about ``1/SNR²``
    (E[1/x] ≈ (1/μ)(1 + σ²/μ²)), so the threshold is the SNR at which that bias stays below
    ``max_ratio_bias`` (default 2 % → SNR ≥ 7.1).

S L-edge position (:func:`fit_s_edge`, :func:`s_edge_map`)
    The low-energy S²⁻ feature is the S 2p₃/₂ peak with its 2p₁/₂ spin–orbit partner ``so_splitting_ev``
    (1.2 eV) higher and the same width, on an arctan edge step and a linear background:

    ``OD(E) = b0 + b1 (E − Ē) + A₃ G(E; c, σ) + A₂ G(E; c + Δ_so, σ) + S [½ + arctan((E − c − δ)/w)/π]``

    The reported position is ``c``. :func:`fit_s_edge` fits one spectrum (all parameters, covariance from
    the Jacobian). :func:`s_edge_map` fixes the shape (σ, δ, w) from the mean spectrum of the sulfur-rich
    pixels and scans ``c`` on a fine grid for every pixel at once (linear amplitudes solved for each
    ``c``), refines the minimum by a parabola and takes ``σ(c)`` from the curvature of the residual sum
    of squares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from .stack import Stack

__all__ = ["EgT2gMap", "SEdgeMap", "egt2g_map", "fit_s_edge", "s_edge_map", "mean_spectra_by_label",
           "gaussian", "arctan_step"]


def gaussian(e, centre_ev, sigma_ev):
    """Unit-height Gaussian ``exp(−(E − E0)² / 2σ²)``."""
    return np.exp(-0.5 * ((np.asarray(e, float) - centre_ev) / sigma_ev) ** 2)


def arctan_step(e, centre_ev, width_ev):
    """Edge step rising from 0 to 1, centred at ``centre_ev``."""
    return 0.5 + np.arctan((np.asarray(e, float) - centre_ev) / width_ev) / np.pi


# ----------------------------------------------------------------------------------------------------------
# Ni L3: e_g / t_2g
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EgT2gMap:
    """Per-pixel Ni L3 e_g/t_2g ratio on the STXM grid.

    Attributes
    ----------
    ratio : ndarray (ny, nx)
        ``A_eg / A_t2g``; NaN where not ``valid``.
    sigma : ndarray (ny, nx)
        Standard error of ``ratio`` (NaN where not valid).
    valid : ndarray of bool (ny, nx)
        Ni signal strong enough (see module docstring).
    amplitude_t2g, amplitude_eg : ndarray (ny, nx)
        Fitted peak heights (OD), everywhere.
    snr_t2g : ndarray (ny, nx)
        ``A_t2g / σ(A_t2g)``.
    params : dict
        The fixed shape (centres, widths, step), window, threshold, number of strong-Ni pixels, method.
    """

    ratio: np.ndarray
    sigma: np.ndarray
    valid: np.ndarray
    amplitude_t2g: np.ndarray = None
    amplitude_eg: np.ndarray = None
    snr_t2g: np.ndarray = None
    params: dict = field(default_factory=dict)


def _ni_design(e, centres, widths, step_c, step_w):
    e = np.asarray(e, float)
    return np.stack([np.ones_like(e), e - e.mean(), gaussian(e, centres[0], widths[0]),
                     gaussian(e, centres[1], widths[1]), arctan_step(e, step_c, step_w)], axis=1)


def _fit_ni_shape(e, y, t2g_ev, eg_ev, tol_ev):
    """Nonlinear fit of the L3 shape on one (mean) spectrum by variable projection."""
    def resid(p):
        d = _ni_design(e, p[0:2], p[2:4], p[4], p[5])
        coef, *_ = np.linalg.lstsq(d, y, rcond=None)
        return d @ coef - y

    p0 = np.array([t2g_ev, eg_ev, 0.5, 0.6, 0.5 * (t2g_ev + eg_ev), 0.5])
    lo = np.array([t2g_ev - tol_ev, eg_ev - tol_ev, 0.15, 0.15, t2g_ev - 1.0, 0.1])
    hi = np.array([t2g_ev + tol_ev, eg_ev + tol_ev, 2.0, 2.0, eg_ev + 2.0, 3.0])
    res = optimize.least_squares(resid, p0, bounds=(lo, hi), x_scale=np.array([0.3, 0.3, 0.1, 0.1, 0.3, 0.1]))
    return res.x, res


def egt2g_map(od: Stack, t2g_ev: float = 850.0, eg_ev: float = 852.0, *, window_ev=None,
              centre_tolerance_ev: float = 1.0, shape: dict | None = None, max_ratio_bias: float = 0.02,
              mask: np.ndarray | None = None) -> EgT2gMap:
    """Ni L3 e_g/t_2g map of an aligned Ni L-edge OD stack (method in the module docstring).

    Parameters
    ----------
    od : Stack
        Aligned OD stack covering the Ni L3 edge.
    t2g_ev, eg_ev : float
        Starting centres of the t_2g and e_g peaks (the paper's calibration by default).
    window_ev : (float, float), optional
        Energy range fitted; default ``(t2g_ev − 5, eg_ev + 4)`` (pre-edge to the end of L3, L2 excluded).
    centre_tolerance_ev : float
        How far the mean-spectrum fit may move each centre (energy calibration differences).
    shape : dict, optional
        Fixed shape ``{"centres_ev": (c_t, c_e), "widths_ev": (σ_t, σ_e), "step_ev": c_s,
        "step_width_ev": w_s}`` (e.g. from another lamella, for comparable ratios); fitted when omitted.
    max_ratio_bias : float
        Largest acceptable ratio bias ``1/SNR²`` of valid pixels.
    mask : ndarray of bool (ny, nx), optional
        Pixels that may be valid at all (e.g. the alignment's ``valid_region``); taken from
        ``od.metadata["valid_region"]`` when present.

    Returns
    -------
    EgT2gMap
    """
    e_all = np.asarray(od.energies_ev, float)
    lo, hi = window_ev if window_ev is not None else (t2g_ev - 5.0, eg_ev + 4.0)
    sel = (e_all >= lo) & (e_all <= hi)
    if sel.sum() < 8:
        raise ValueError(f"only {int(sel.sum())} energies in the Ni L3 window {lo:.1f}–{hi:.1f} eV")
    e = e_all[sel]
    n_e = e.size
    ny, nx = od.shape_yx
    y = np.asarray(od.data, float)[sel].reshape(n_e, -1)
    finite = np.all(np.isfinite(y), axis=0)
    y = np.where(finite, y, 0.0)
    if mask is None:
        mask = od.metadata.get("valid_region") if isinstance(od.metadata, dict) else None
    allowed = finite & (np.ones(ny * nx, bool) if mask is None else np.asarray(mask, bool).ravel())

    # strong-Ni pixels: the largest L3 white-line jump above the pre-edge
    pre = e < t2g_ev - 2.0
    peak = (e >= t2g_ev - 1.0) & (e <= eg_ev + 1.0)
    if pre.sum() >= 1 and peak.sum() >= 1:
        jump = y[peak].mean(0) - y[pre].mean(0)
    else:
        jump = y.max(0) - y.min(0)
    jump_ok = np.where(allowed, jump, -np.inf)
    ref = np.percentile(jump_ok[allowed], 99) if allowed.any() else 0.0
    strong = allowed & (jump_ok >= 0.5 * ref) & (jump_ok > 0)
    if shape is None:
        if strong.sum() < 1:
            raise ValueError("no pixel with a Ni L3 edge jump: is this a Ni L-edge stack?")
        mean_spec = y[:, strong].mean(1)
        p, res = _fit_ni_shape(e, mean_spec, t2g_ev, eg_ev, centre_tolerance_ev)
        shape = {"centres_ev": (float(p[0]), float(p[1])), "widths_ev": (float(p[2]), float(p[3])),
                 "step_ev": float(p[4]), "step_width_ev": float(p[5]),
                 "mean_fit_rms": float(np.sqrt(np.mean(res.fun ** 2)))}
    d = _ni_design(e, shape["centres_ev"], shape["widths_ev"], shape["step_ev"], shape["step_width_ev"])
    dtd_inv = np.linalg.inv(d.T @ d)
    coef = dtd_inv @ (d.T @ y)                          # (5, npix)
    resid = y - d @ coef
    dof = n_e - d.shape[1]
    s2 = (resid ** 2).sum(0) / max(dof, 1)
    a_t, a_e = coef[2], coef[3]
    var_t, var_e, cov_te = s2 * dtd_inv[2, 2], s2 * dtd_inv[3, 3], s2 * dtd_inv[2, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = a_t / np.sqrt(var_t)
        ratio = a_e / a_t
        rel2 = var_e / a_e ** 2 + var_t / a_t ** 2 - 2 * cov_te / (a_e * a_t)
        sig = np.abs(ratio) * np.sqrt(np.clip(rel2, 0, None))
    min_snr = 1.0 / np.sqrt(max_ratio_bias)
    valid = allowed & (a_t > 0) & (a_e > 0) & (snr >= min_snr) & np.isfinite(ratio)
    ratio = np.where(valid, ratio, np.nan)
    sig = np.where(valid, sig, np.nan)
    params = dict(shape)
    params.update(window_ev=(float(lo), float(hi)), n_energies=int(n_e), min_snr_t2g=float(min_snr),
                  max_ratio_bias=float(max_ratio_bias), n_strong_ni_pixels=int(strong.sum()),
                  n_valid=int(valid.sum()),
                  method="linear least squares per pixel: 2 fixed-shape Gaussians (t2g, eg) + arctan step + "
                         "linear background; shape from a nonlinear fit of the strong-Ni mean spectrum; "
                         "ratio = A_eg/A_t2g (peak heights)")
    shp = (ny, nx)
    return EgT2gMap(ratio=ratio.reshape(shp), sigma=sig.reshape(shp), valid=valid.reshape(shp),
                    amplitude_t2g=a_t.reshape(shp), amplitude_eg=a_e.reshape(shp), snr_t2g=snr.reshape(shp),
                    params=params)


# ----------------------------------------------------------------------------------------------------------
# S L-edge position
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SEdgeMap:
    """Per-pixel position of the S²⁻ 2p₃/₂ feature.

    Attributes
    ----------
    position_ev, sigma_ev : ndarray (ny, nx)
        Fitted position and its standard error; NaN where not valid.
    valid : ndarray of bool (ny, nx)
        Enough sulfide signal: amplitude SNR ≥ ``min_snr`` and a proper minimum inside the scanned range.
    amplitude : ndarray (ny, nx)
        Fitted 2p₃/₂ peak height (OD).
    params : dict
        Fixed shape, window, scan grid, threshold, method.
    """

    position_ev: np.ndarray
    sigma_ev: np.ndarray
    valid: np.ndarray
    amplitude: np.ndarray = None
    params: dict = field(default_factory=dict)


def _s_design(e, c, width, so, branch, step_offset, step_width):
    """Design matrix columns: 1, E−Ē, 2p3/2 Gaussian, 2p1/2 Gaussian, step (branch=None: L2 free)."""
    e = np.asarray(e, float)
    g3 = gaussian(e, c, width)
    g2 = gaussian(e, c + so, width)
    cols = [np.ones_like(e), e - e.mean()]
    if branch is None:
        cols += [g3, g2]
    else:
        cols += [g3 + branch * g2]
    cols.append(arctan_step(e, c + step_offset, step_width))
    return np.stack(cols, axis=1)


def fit_s_edge(energies_ev, od_spectrum, sigma=None, *, position_guess_ev: float = 163.9,
               window_ev=None, so_splitting_ev: float = 1.2, fixed: dict | None = None) -> dict:
    """Fit the S²⁻ 2p₃/₂ feature of one S L-edge spectrum (e.g. a region's mean spectrum).

    Parameters
    ----------
    energies_ev, od_spectrum : array_like (n,)
    sigma : array_like (n,) or float, optional
        Standard errors of the OD values (e.g. sd/sqrt(n) of a region mean). With them the covariance is
        absolute (χ² tells whether the model fits); without them it is scaled by the residual variance.
    position_guess_ev : float
        Start of the position (163.9 eV: argyrodite S²⁻ in the paper).
    window_ev : (float, float), optional
        Fitted range; default ``(guess − 2.5, guess + 2.2)``.
    so_splitting_ev : float
        2p₃/₂–2p₁/₂ spin–orbit splitting (1.2 eV for sulfur).
    fixed : dict, optional
        Shape parameters to hold fixed: any of ``width_ev``, ``step_offset_ev``, ``step_width_ev``.

    Returns
    -------
    dict
        ``position_ev``, ``sigma_ev`` (standard error), ``amplitude`` (2p₃/₂ height), ``amplitude_l2``,
        ``width_ev``, ``step``, ``step_offset_ev``, ``step_width_ev``, ``chi2``, ``dof``,
        ``reduced_chi2``, ``n_points``, ``window_ev``, ``success``.
    """
    e_all = np.asarray(energies_ev, float)
    y_all = np.asarray(od_spectrum, float)
    lo, hi = window_ev if window_ev is not None else (position_guess_ev - 2.5, position_guess_ev + 2.2)
    sel = (e_all >= lo) & (e_all <= hi) & np.isfinite(y_all)
    e, y = e_all[sel], y_all[sel]
    if sigma is None:
        w = np.ones_like(e)
        absolute = False
    else:
        s = np.broadcast_to(np.asarray(sigma, float), e_all.shape)[sel]
        w = 1.0 / np.where(s > 0, s, np.inf)
        absolute = True
    fixed = dict(fixed or {})
    names = ["position_ev", "width_ev", "step_offset_ev", "step_width_ev"]
    p0 = {"position_ev": position_guess_ev, "width_ev": 0.35, "step_offset_ev": 0.6, "step_width_ev": 0.5}
    bounds = {"position_ev": (position_guess_ev - 1.5, position_guess_ev + 1.5), "width_ev": (0.1, 1.2),
              "step_offset_ev": (-1.0, 2.5), "step_width_ev": (0.1, 2.0)}
    free = [n for n in names if n not in fixed]
    n_lin = 6
    out = {"n_points": int(e.size), "window_ev": (float(lo), float(hi)), "success": False}
    if e.size < len(free) + n_lin + 1:
        out.update({k: float("nan") for k in ("position_ev", "sigma_ev", "amplitude", "chi2")})
        return out

    def full(p_nl, lin):
        q = dict(fixed)
        q.update(zip(free, p_nl))
        d = _s_design(e, q["position_ev"], q["width_ev"], so_splitting_ev, None, q["step_offset_ev"],
                      q["step_width_ev"])
        return d @ lin, q, d

    def vp_resid(p_nl):
        q = dict(fixed)
        q.update(zip(free, p_nl))
        d = _s_design(e, q["position_ev"], q["width_ev"], so_splitting_ev, None, q["step_offset_ev"],
                      q["step_width_ev"])
        lin, *_ = np.linalg.lstsq(d * w[:, None], y * w, rcond=None)
        return (d @ lin - y) * w

    # variable projection from a few starts of the position (the residual is multimodal in it)
    best = None
    for start in (-0.5, 0.0, 0.5):
        x0 = np.array([p0[n] + (start if n == "position_ev" else 0.0) for n in free])
        lb = np.array([bounds[n][0] for n in free])
        ub = np.array([bounds[n][1] for n in free])
        r = optimize.least_squares(vp_resid, np.clip(x0, lb, ub), bounds=(lb, ub))
        if best is None or r.cost < best.cost:
            best = r
    q = dict(fixed)
    q.update(zip(free, best.x))
    d = _s_design(e, q["position_ev"], q["width_ev"], so_splitting_ev, None, q["step_offset_ev"],
                  q["step_width_ev"])
    lin, *_ = np.linalg.lstsq(d * w[:, None], y * w, rcond=None)

    # full covariance: numerical Jacobian of all (free nonlinear + linear) parameters
    theta = np.concatenate([best.x, lin])

    def all_resid(t):
        model, _, _ = full(t[:len(free)], t[len(free):])
        return (model - y) * w

    jac = _num_jac(all_resid, theta)
    rr = all_resid(theta)
    chi2 = float(rr @ rr)
    dof = e.size - theta.size
    try:
        cov = np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((theta.size, theta.size), np.nan)
    if not absolute:
        cov = cov * chi2 / max(dof, 1)
    ip = free.index("position_ev") if "position_ev" in free else None
    i_a3 = len(free) + 2
    out.update(
        position_ev=float(q["position_ev"]),
        sigma_ev=float(np.sqrt(cov[ip, ip])) if ip is not None else 0.0,
        amplitude=float(lin[2]), amplitude_sigma=float(np.sqrt(abs(cov[i_a3, i_a3]))),
        amplitude_l2=float(lin[3]), step=float(lin[4]),
        width_ev=float(q["width_ev"]), step_offset_ev=float(q["step_offset_ev"]),
        step_width_ev=float(q["step_width_ev"]), chi2=chi2, dof=int(dof),
        reduced_chi2=chi2 / max(dof, 1), success=bool(best.success), absolute_sigma=absolute,
        at_bound=bool(ip is not None and (np.isclose(best.x[ip], bounds["position_ev"][0], atol=1e-3)
                                          or np.isclose(best.x[ip], bounds["position_ev"][1], atol=1e-3))),
    )
    return out


def _num_jac(f, x, rel=1e-6):
    f0 = f(x)
    jac = np.empty((f0.size, x.size))
    for i in range(x.size):
        h = rel * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        jac[:, i] = (f(xp) - f(xm)) / (2 * h)
    return jac


def s_edge_map(od: Stack, *, position_guess_ev: float = 163.9, window_ev=None, so_splitting_ev: float = 1.2,
               scan_half_range_ev: float = 1.0, scan_step_ev: float = 0.02, min_snr: float = 5.0,
               reference_mask: np.ndarray | None = None, shape: dict | None = None,
               mask: np.ndarray | None = None) -> SEdgeMap:
    """Per-pixel S²⁻ 2p₃/₂ position where the signal allows (NaN elsewhere).

    Parameters
    ----------
    od : Stack
        Aligned S L-edge OD stack.
    position_guess_ev : float
        Centre of the scanned positions and of the default window.
    window_ev : (float, float), optional
        Fitted range; default ``(guess − 2.5, guess + 2.2)``.
    so_splitting_ev : float
        Spin–orbit splitting of the doublet.
    scan_half_range_ev, scan_step_ev : float
        Positions scanned: ``guess ± half range`` in steps (refined below the step by a parabola).
    min_snr : float
        Minimum 2p₃/₂ amplitude SNR for a valid pixel (at SNR 5 the position error is about the peak width
        / 5; ``sigma_ev`` reports it per pixel).
    reference_mask : ndarray of bool, optional
        Pixels whose mean spectrum fixes the shape (width, step offset and width, L2/L3 branching);
        default: the pixels with the largest sulfide edge jump (top half of the 99th percentile).
    shape : dict, optional
        Fixed shape ``{"width_ev", "step_offset_ev", "step_width_ev", "branching"}`` instead.
    mask : ndarray of bool, optional
        Pixels that may be valid (default ``od.metadata["valid_region"]`` when present).

    Returns
    -------
    SEdgeMap
    """
    e_all = np.asarray(od.energies_ev, float)
    lo, hi = window_ev if window_ev is not None else (position_guess_ev - 2.5, position_guess_ev + 2.2)
    sel = (e_all >= lo) & (e_all <= hi)
    e = e_all[sel]
    ny, nx = od.shape_yx
    y = np.asarray(od.data, float)[sel].reshape(e.size, -1)
    finite = np.all(np.isfinite(y), axis=0)
    y = np.where(finite, y, 0.0)
    if mask is None:
        mask = od.metadata.get("valid_region") if isinstance(od.metadata, dict) else None
    allowed = finite & (np.ones(ny * nx, bool) if mask is None else np.asarray(mask, bool).ravel())
    if e.size < 10:
        raise ValueError(f"only {e.size} energies in the S L-edge window {lo:.1f}–{hi:.1f} eV")
    if shape is None:
        if reference_mask is None:
            below = e < position_guess_ev - 1.0
            above = (e > position_guess_ev - 0.5) & (e < position_guess_ev + 1.5)
            jump = y[above].mean(0) - (y[below].mean(0) if below.any() else y.min(0))
            jump = np.where(allowed, jump, -np.inf)
            ref = np.percentile(jump[allowed], 99)
            reference_mask = allowed & (jump >= 0.5 * ref) & (jump > 0)
        ref_sel = np.asarray(reference_mask, bool).ravel() & allowed
        ref_fit = fit_s_edge(e, y[:, ref_sel].mean(1), position_guess_ev=position_guess_ev,
                             window_ev=(lo, hi), so_splitting_ev=so_splitting_ev)
        branching = ref_fit["amplitude_l2"] / ref_fit["amplitude"] if ref_fit["amplitude"] else 0.6
        shape = {"width_ev": ref_fit["width_ev"], "step_offset_ev": ref_fit["step_offset_ev"],
                 "step_width_ev": ref_fit["step_width_ev"], "branching": float(branching),
                 "reference_position_ev": ref_fit["position_ev"], "n_reference_pixels": int(ref_sel.sum())}
    centre = shape.get("reference_position_ev", position_guess_ev)
    grid = np.arange(centre - scan_half_range_ev, centre + scan_half_range_ev + 1e-9, scan_step_ev)
    n_g = grid.size
    yy = (y ** 2).sum(0)
    rss = np.empty((n_g, y.shape[1]))
    amp = np.empty((n_g, y.shape[1]))
    var_amp_unit = np.empty(n_g)
    for i, c in enumerate(grid):
        d = _s_design(e, c, shape["width_ev"], so_splitting_ev, shape["branching"], shape["step_offset_ev"],
                      shape["step_width_ev"])
        q, r = np.linalg.qr(d)
        qy = q.T @ y
        rss[i] = yy - (qy ** 2).sum(0)
        coef = np.linalg.solve(r, qy)
        amp[i] = coef[2]
        var_amp_unit[i] = np.linalg.inv(r.T @ r)[2, 2]
    rss = np.maximum(rss, 0.0)
    i_min = np.argmin(rss, axis=0)
    cols = np.arange(y.shape[1])
    interior = (i_min > 0) & (i_min < n_g - 1)
    im = np.clip(i_min, 1, n_g - 2)
    r0, rm, rp = rss[im, cols], rss[im - 1, cols], rss[im + 1, cols]
    curv = (rp + rm - 2 * r0) / scan_step_ev ** 2           # d²RSS/dc²
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curv > 0, 0.5 * (rm - rp) / (rp + rm - 2 * r0), 0.0)
        pos = grid[im] + np.clip(offset, -1, 1) * scan_step_ev
        dof = e.size - 5
        s2 = r0 / max(dof, 1)
        sig_pos = np.sqrt(2.0 * s2 / curv)
        a = amp[im, cols]
        snr = a / np.sqrt(s2 * var_amp_unit[im])
    valid = allowed & interior & (curv > 0) & (a > 0) & (snr >= min_snr) & np.isfinite(sig_pos)
    pos = np.where(valid, pos, np.nan)
    sig_pos = np.where(valid, sig_pos, np.nan)
    params = dict(shape)
    params.update(window_ev=(float(lo), float(hi)), scan_ev=(float(grid[0]), float(grid[-1]), scan_step_ev),
                  so_splitting_ev=so_splitting_ev, min_snr=min_snr, n_valid=int(valid.sum()),
                  method="per-pixel scan of the 2p3/2 position with fixed doublet+step shape from the "
                         "sulfur-rich mean spectrum; linear amplitudes; parabolic refinement; "
                         "sigma from the RSS curvature")
    shp = (ny, nx)
    return SEdgeMap(position_ev=pos.reshape(shp), sigma_ev=sig_pos.reshape(shp), valid=valid.reshape(shp),
                    amplitude=a.reshape(shp), params=params)


# ----------------------------------------------------------------------------------------------------------
# mean spectra
# ----------------------------------------------------------------------------------------------------------

def mean_spectra_by_label(od: Stack, labels_stxm: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Mean, standard deviation and pixel count of the spectra of each label (on native STXM pixels).

    Parameters
    ----------
    od : Stack
        OD stack (n_energy, ny, nx).
    labels_stxm : ndarray of int (ny, nx)
        Labels on the same STXM grid (e.g. from :func:`ceimap.segment.register.labels_to_stxm`).
    mask : ndarray of bool (ny, nx), optional
        Pixels to use (default all; ``od.metadata["valid_region"]`` is not applied implicitly).

    Returns
    -------
    dict
        ``{label: (mean (n_energy,), sd (n_energy,), n)}`` for every label present (sd with ddof=1, NaN for
        a single pixel). Pixels with non-finite OD at any energy are left out.
    """
    labels = np.asarray(labels_stxm).ravel()
    data = np.asarray(od.data, float).reshape(od.n_energy, -1)
    keep = np.all(np.isfinite(data), axis=0)
    if mask is not None:
        keep &= np.asarray(mask, bool).ravel()
    out = {}
    for lab in np.unique(labels[keep]):
        sel = keep & (labels == lab)
        x = data[:, sel]
        n = int(sel.sum())
        sd = x.std(axis=1, ddof=1) if n > 1 else np.full(od.n_energy, np.nan)
        out[lab.item()] = (x.mean(axis=1), sd, n)
    return out
