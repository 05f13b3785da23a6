"""Decompositions of per-pixel spectra: PCA, NMF, k-means and reference-spectrum (NNLS) fitting.

Every function takes optical densities arranged as ``(..., n_features)`` — usually ``(n_pixels,
n_features)`` or an image ``(n_y, n_x, n_features)`` — where the features are the energies of one or more
edges on a common pixel grid, and returns a :class:`Decomposition`: component spectra, per-pixel abundances
(with the same leading shape as the input, so maps come out as maps) and the per-pixel fit residual.

======================  =================================================================================
function                what it is
======================  =================================================================================
``pca``                 centred PCA by SVD; the number of components is chosen from the data by the Gavish–Donoho
                        optimal hard threshold on the singular values (Marchenko–Pastur noise bulk), with the noise
                        level estimated from the median singular value or given
``nmf``                 non-negative matrix factorisation (scikit-learn ``NMF``); negative OD (noise) clipped at 0
``kmeans``              k-means clustering (``MiniBatchKMeans`` for large inputs) of scores or spectra
``nnls_fit``            per-pixel non-negative least squares onto reference spectra plus a free constant (what
                        aXis2000 calls the "SVD" stack fit, with non-negative weights), solved exactly by
                        enumerating active sets for a few references
``unmix_transmission``  per-pixel areal fractions of NMC, electrolyte and vacuum in transmission
                        (``T = exp(−OD)``) against local references, weighted by the Poisson noise
                        (the chemistry's unmixing)
======================  =================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import integrate, ndimage, optimize

__all__ = [
    "Decomposition",
    "pca",
    "nmf",
    "kmeans",
    "nnls_fit",
    "marchenko_pastur_median",
    "optimal_rank_threshold",
    "unmix_transmission",
]


@dataclass(frozen=True)
class Decomposition:
    """The result of a decomposition of per-pixel spectra.

    Attributes
    ----------
    components : ndarray, shape (n_components, n_features)
        Component spectra (principal axes, NMF spectra, cluster centres or the reference spectra).
    abundances : ndarray, shape (..., n_components)
        Per-pixel weight of each component, with the leading shape of the input (scores for PCA,
        one-hot memberships for k-means).
    residual : ndarray, shape (...)
        Root-mean-square over the features of the per-pixel fit residual (data minus model); for
        k-means the RMS distance to the assigned centre.
    method : str
        ``"pca"``, ``"nmf"``, ``"kmeans"`` or ``"nnls"``.
    details : dict
        Method-specific extras (singular values, noise level, labels, constant …), documented per function.
    """

    components: np.ndarray
    abundances: np.ndarray
    residual: np.ndarray
    method: str
    details: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]


def _as_matrix(od: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    od = np.asarray(od, dtype=np.float64)
    if od.ndim < 2:
        raise ValueError(f"spectra must be (..., n_features), got shape {od.shape}")
    lead = od.shape[:-1]
    return od.reshape(-1, od.shape[-1]), lead


def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko–Pastur distribution of aspect ratio ``beta`` (0 < beta ≤ 1), unit variance.

    Parameters
    ----------
    beta : float
        ``min(n, p) / max(n, p)`` of the noise matrix.

    Returns
    -------
    float
        The median eigenvalue of ``X.T @ X / max(n, p)`` for an ``n × p`` matrix of unit-variance noise.

    Examples
    --------
    >>> round(marchenko_pastur_median(1.0), 4)
    0.6528
    """
    beta = float(beta)
    lo, hi = (1 - np.sqrt(beta)) ** 2, (1 + np.sqrt(beta)) ** 2

    def density(x):
        return np.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * np.pi * beta * x)

    def cdf(m):
        return integrate.quad(density, lo, m, limit=200)[0]

    return float(optimize.brentq(lambda m: cdf(m) - 0.5, lo + 1e-12, hi))


def optimal_rank_threshold(singular_values: np.ndarray, shape: tuple[int, int],
                           noise_sigma: float | None = None) -> tuple[float, float]:
    """Gavish–Donoho optimal hard threshold for the singular values of a low-rank matrix plus white noise.

    Parameters
    ----------
    singular_values : ndarray
        All singular values of the (centred) data matrix, any order.
    shape : (int, int)
        Shape of the data matrix.
    noise_sigma : float, optional
        Standard deviation of the noise per entry. When omitted it is estimated from the median singular
        value, which lies in the Marchenko–Pastur noise bulk as long as the rank is small compared with
        ``min(shape)``.

    Returns
    -------
    threshold : float
        Singular values above it are signal.
    noise_sigma : float
        The noise standard deviation used (given or estimated).

    References
    ----------
    M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is 4/√3",
    IEEE Trans. Inf. Theory 60 (2014) 5040–5053.
    """
    n, p = max(shape), min(shape)
    beta = p / n
    lam = np.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + np.sqrt(beta ** 2 + 14 * beta + 1)))
    if noise_sigma is None:
        s_med = float(np.median(singular_values))
        noise_sigma = s_med / np.sqrt(n * marchenko_pastur_median(beta))
    return float(lam * np.sqrt(n) * noise_sigma), float(noise_sigma)


def pca(od: np.ndarray, n_components: int | None = None, *, noise_sigma: float | None = None,
        center: bool = True, max_components: int | None = None) -> Decomposition:
    """Principal component analysis of per-pixel spectra, choosing the rank from the noise level.

    Parameters
    ----------
    od : ndarray, shape (..., n_features)
        Spectra (optical density; whiten each feature by its noise level first when noise differs
        strongly between features, e.g. between two edges).
    n_components : int, optional
        Number of components to keep. When omitted, the number of singular values above the Gavish–Donoho
        optimal hard threshold (noise bulk of Marchenko–Pastur, noise estimated from the data or given) —
        at least 1.
    noise_sigma : float, optional
        Known noise standard deviation per entry (same units as ``od``).
    center : bool
        Subtract the mean spectrum first (MANTiS uses a non-centred PCA; centring makes the rank test fair).
    max_components : int, optional
        Upper bound on the automatically chosen rank.

    Returns
    -------
    Decomposition
        ``components`` the principal axes (unit vectors), ``abundances`` the scores, ``residual`` the RMS of
        the rank-k reconstruction error; ``details``: ``singular_values``, ``explained_variance_ratio``,
        ``noise_sigma``, ``threshold``, ``mean`` (the subtracted mean spectrum, zeros when not centred),
        ``rank_from`` ("given" or "gavish-donoho").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> low_rank = rng.normal(size=(2000, 2)) @ rng.normal(size=(2, 40)) * 3
    >>> pca(low_rank + rng.normal(scale=0.1, size=low_rank.shape)).n_components
    2
    """
    x, lead = _as_matrix(od)
    mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
    xc = x - mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    threshold, sigma = optimal_rank_threshold(s, xc.shape, noise_sigma)
    if n_components is None:
        k = max(int(np.sum(s > threshold)), 1)
        if max_components is not None:
            k = min(k, max_components)
        rank_from = "gavish-donoho"
    else:
        k = int(n_components)
        rank_from = "given"
    scores = u[:, :k] * s[:k]
    recon = scores @ vt[:k]
    residual = np.sqrt(np.mean((xc - recon) ** 2, axis=1))
    var = s ** 2
    return Decomposition(
        components=vt[:k].copy(),
        abundances=scores.reshape(*lead, k),
        residual=residual.reshape(lead),
        method="pca",
        details={
            "singular_values": s,
            "explained_variance_ratio": var / var.sum() if var.sum() > 0 else var,
            "noise_sigma": sigma,
            "threshold": threshold,
            "mean": mean,
            "rank_from": rank_from,
        },
    )


def nmf(od: np.ndarray, n_components: int, *, init: str = "nndsvda", max_iter: int = 500,
        random_state: int = 0, **kwargs) -> Decomposition:
    """Non-negative matrix factorisation ``od ≈ abundances @ components`` (scikit-learn ``NMF``).

    Parameters
    ----------
    od : ndarray, shape (..., n_features)
        Spectra; negative values (noise around zero OD) are clipped to 0.
    n_components : int
        Number of components (e.g. the PCA rank).
    init, max_iter, random_state, **kwargs
        Passed to :class:`sklearn.decomposition.NMF`.

    Returns
    -------
    Decomposition
        ``components`` non-negative spectra, ``abundances`` non-negative maps, ``residual`` RMS error
        against the unclipped data; ``details``: ``reconstruction_err``, ``n_iter``.
    """
    from sklearn.decomposition import NMF

    x, lead = _as_matrix(od)
    model = NMF(n_components=n_components, init=init, max_iter=max_iter, random_state=random_state,
                **kwargs)
    w = model.fit_transform(np.clip(x, 0, None))
    h = model.components_
    residual = np.sqrt(np.mean((x - w @ h) ** 2, axis=1))
    return Decomposition(
        components=h, abundances=w.reshape(*lead, n_components), residual=residual.reshape(lead),
        method="nmf", details={"reconstruction_err": float(model.reconstruction_err_),
                               "n_iter": int(model.n_iter_)},
    )


def kmeans(scores: np.ndarray, n_clusters: int, *, random_state: int = 0, n_init: int = 5,
           minibatch_above: int = 20000) -> Decomposition:
    """k-means clustering of per-pixel scores (or spectra).

    Parameters
    ----------
    scores : ndarray, shape (..., n_features)
        What to cluster, usually PCA scores of whitened spectra.
    n_clusters : int
    random_state, n_init
        Passed to scikit-learn.
    minibatch_above : int
        Use :class:`~sklearn.cluster.MiniBatchKMeans` when there are more points than this.

    Returns
    -------
    Decomposition
        ``components`` the cluster centres, ``abundances`` one-hot memberships, ``residual`` the RMS
        distance to the assigned centre; ``details``: ``labels`` (leading shape, int), ``inertia``.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x, lead = _as_matrix(scores)
    if x.shape[0] > minibatch_above:
        model = MiniBatchKMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init,
                                batch_size=4096)
    else:
        model = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init)
    labels = model.fit_predict(x)
    centres = model.cluster_centers_
    onehot = np.zeros((x.shape[0], n_clusters))
    onehot[np.arange(x.shape[0]), labels] = 1.0
    residual = np.sqrt(np.mean((x - centres[labels]) ** 2, axis=1))
    return Decomposition(
        components=centres, abundances=onehot.reshape(*lead, n_clusters),
        residual=residual.reshape(lead), method="kmeans",
        details={"labels": labels.reshape(lead), "inertia": float(model.inertia_)},
    )


def nnls_fit(od: np.ndarray, references: np.ndarray, *, constant: bool = True,
             weights: np.ndarray | None = None) -> Decomposition:
    """Fit every pixel's spectrum as a non-negative combination of reference spectra plus a constant.

    ``od[i] ≈ Σ_j a[i, j] · references[j] + c[i]`` with ``a ≥ 0`` and a free (any sign) constant ``c`` —
    the stack fit of aXis2000 ("SVD") with the physical constraint that thicknesses are non-negative.
    With Beer–Lambert, ``a[i, j]`` is the thickness-weighted amount of phase ``j`` when the references are
    mass absorption spectra per unit thickness.

    Parameters
    ----------
    od : ndarray, shape (..., n_features)
    references : ndarray, shape (n_references, n_features) or (..., n_references, n_features)
        One set of reference spectra for all pixels, or one set per pixel (e.g. the local bulk spectrum
        of the nearest particle).
    constant : bool
        Include the free constant offset (absorbs I0 offsets and non-resonant background).
    weights : ndarray, shape (n_features,) or (..., n_features), optional
        Weights (1 / noise standard deviation), per feature or per pixel and feature.

    Returns
    -------
    Decomposition
        ``components`` the references, ``abundances`` ``a`` (..., n_references), ``residual`` the RMS of
        the (weighted) residual; ``details``: ``constant`` (...), ``n_features``.

    Notes
    -----
    The exact solution is found for all pixels at once by solving the unconstrained least-squares
    problem on every subset of references (with the constant) and keeping, per pixel, the best subset
    whose coefficients are all non-negative: the NNLS optimum is the unconstrained optimum on its active
    set, and every feasible subset optimum is a feasible point. The cost grows as ``2**n_references``;
    use it for a handful of references (up to 10).

    Examples
    --------
    >>> refs = np.array([[1.0, 2.0, 3.0, 1.0], [0.0, 1.0, 0.0, 2.0]])
    >>> fit = nnls_fit(np.array([[0.5, 2.5, 1.5, 3.5]]) + 0.25, refs)
    >>> np.round(fit.abundances, 6), np.round(fit.details["constant"], 6)
    (array([[0.5, 1.5]]), array([0.25]))
    """
    x, lead = _as_matrix(od)
    n_pix, n_feat = x.shape
    refs = np.asarray(references, dtype=np.float64)
    if refs.ndim == 1:
        refs = refs[None, :]
    if refs.shape[-1] != n_feat:
        raise ValueError(f"references have {refs.shape[-1]} features, spectra {n_feat}")
    per_pixel = refs.ndim > 2
    n_ref = refs.shape[-2]
    if n_ref > 10:
        raise ValueError("nnls_fit enumerates active sets: use at most 10 references")
    refs_p = refs.reshape(-1, n_ref, n_feat) if per_pixel else refs[None]
    if per_pixel and refs_p.shape[0] != n_pix:
        raise ValueError("per-pixel references must have the leading shape of the spectra")
    if weights is None:
        w = np.ones((1, n_feat))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1, n_feat)
    w2 = w ** 2
    # design columns: references (then the constant); G = D^T W D, b = D^T W x
    cols = np.concatenate([refs_p, np.ones((1, 1, n_feat)).repeat(refs_p.shape[0], 0)], axis=1) \
        if constant else refs_p
    if cols.shape[0] == 1 and w2.shape[0] == 1:
        gram = ((cols[0] * w2[0]) @ cols[0].T)[None]
    elif cols.shape[0] == 1:
        gram = np.einsum("if,jf,pf->pij", cols[0], cols[0], w2)
    else:
        gram = np.einsum("pif,pjf,pf->pij", cols, cols, np.broadcast_to(w2, (n_pix, n_feat)))
    xw2 = x * w2
    rhs = xw2 @ cols[0].T if cols.shape[0] == 1 else np.einsum("pif,pf->pi", cols, xw2)
    xx = np.sum(x ** 2 * w2, axis=1)
    n_cols = cols.shape[1]
    best_rss = np.full(n_pix, np.inf)
    best_coef = np.zeros((n_pix, n_cols))
    const_idx = [n_ref] if constant else []
    shared = gram.shape[0] == 1
    # pixels last: each entry of a stacked Gram matrix is one contiguous vector over the pixels
    gram_t = gram[0] if shared else np.ascontiguousarray(gram.transpose(1, 2, 0))
    rhs_t = np.ascontiguousarray(rhs.T)
    for size in range(0, n_ref + 1):
        for subset in combinations(range(n_ref), size):
            idx = np.array(list(subset) + const_idx, dtype=np.intp)
            if idx.size:
                g = gram_t[idx[:, None], idx[None, :]]
                bb = rhs_t[idx]
                if shared:
                    g = g + np.eye(idx.size) * 1e-12 * np.trace(g)
                    sol = np.linalg.solve(g, bb)
                else:
                    g = g + np.eye(idx.size)[..., None] * (1e-12 * np.trace(g))[None, None, :]
                    sol = _solve_spd_stack(g, bb)
                # rss = x'Wx - 2 c'b + c'Gc = x'Wx - c'b at the optimum
                rss = xx - np.sum(sol * bb, axis=0)
                # the subset's coefficients come first in ``idx`` (the constant last, any sign)
                better = np.all(sol[:size] >= 0, axis=0) & (rss < best_rss)
            else:
                sol, rss = None, xx
                better = rss < best_rss
            if not better.any():
                continue
            rows = np.flatnonzero(better)
            best_rss[rows] = rss[rows]
            best_coef[rows] = 0.0
            if sol is not None:
                best_coef[rows[:, None], idx[None, :]] = sol[:, rows].T
    best_a = best_coef[:, :n_ref]
    best_c = best_coef[:, n_ref] if constant else np.zeros(n_pix)
    model = np.einsum("pj,pjf->pf", best_a, refs_p) if per_pixel else best_a @ refs_p[0]
    resid = (x - model - best_c[:, None]) * w
    residual = np.sqrt(np.mean(resid ** 2, axis=1))
    return Decomposition(
        components=refs.copy(), abundances=best_a.reshape(*lead, n_ref), residual=residual.reshape(lead),
        method="nnls", details={"constant": best_c.reshape(lead), "n_features": n_feat},
    )


def _solve_spd_stack(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``gram[:, :, p] @ x[:, p] = rhs[:, p]`` for every ``p`` (small symmetric positive-definite systems).

    A Cholesky factorisation written over the stack (pixels last, each matrix entry a contiguous vector), so
    that the work is a few dozen whole-array operations instead of one LAPACK call per pixel: for the
    5 × 5 systems of :func:`nnls_fit` on 10⁴ pixels, ~8× faster than ``np.linalg.solve`` on the stack.

    Parameters
    ----------
    gram : ndarray, shape (k, k, n)
        Symmetric positive-definite matrices (regularised by the caller).
    rhs : ndarray, shape (k, n)

    Returns
    -------
    ndarray, shape (k, n)
    """
    k = gram.shape[0]
    chol = np.zeros_like(gram)
    for j in range(k):
        diag = gram[j, j] - np.sum(chol[j, :j] ** 2, axis=0)
        chol[j, j] = np.sqrt(np.maximum(diag, np.finfo(float).tiny))
        for i in range(j + 1, k):
            chol[i, j] = (gram[i, j] - np.sum(chol[i, :j] * chol[j, :j], axis=0)) / chol[j, j]
    y = np.empty_like(rhs)
    for i in range(k):
        y[i] = (rhs[i] - np.sum(chol[i, :i] * y[:i], axis=0)) / chol[i, i]
    x = np.empty_like(rhs)
    for i in reversed(range(k)):
        x[i] = (y[i] - np.sum(chol[i + 1:, i] * x[i + 1:], axis=0)) / chol[i, i]
    return x


def _singular_values_vectors(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors of a tall matrix from its small Gram matrix."""
    gram = x.T @ x
    w, v = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    return np.sqrt(np.clip(w[order], 0, None)), v[:, order].T


def _normalised_average(cube: np.ndarray, mask: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian average of ``cube`` (n, ny, nx) over ``mask`` pixels only; returns (average, weight)."""
    wsum = ndimage.gaussian_filter(mask.astype(float), sigma_px, mode="nearest")
    out = np.empty_like(cube)
    for k in range(cube.shape[0]):
        out[k] = ndimage.gaussian_filter(np.where(mask, cube[k], 0.0), sigma_px, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= wsum
    return out, wsum


def unmix_transmission(cube: np.ndarray, valid: np.ndarray, nmc_core: np.ndarray, ely_core: np.ndarray,
                       sigma0: np.ndarray, local_sigma_px: float, ely_sigma_px: float,
                       thickness_scales: tuple) -> dict:
    """One edge's per-pixel unmixing in transmission: local NMC and electrolyte references, each at a thinner
    and a thicker version, vacuum, and a soft sum-to-one row (the chemistry's unmixing,
    :func:`ceimap.segment.chemistry.classify_stxm`).

    A pixel straddling a boundary transmits the area-weighted mean of its phases' transmissions, so lateral
    partial volume is linear in ``T = exp(−OD)`` (not in OD: the PSF blurs intensity). Each pixel is fitted
    (weighted NNLS, ``σ_T = σ₀ e^{−OD/2}``) with the *local* bulk NMC transmission (a normalised Gaussian
    average of NMC-core pixels nearby, so particles of different Ni valence are each their own reference), the
    local bulk electrolyte (core electrolyte far from NMC), each as ``T**k`` for ``k`` in ``thickness_scales``
    (lamella wedge, density, sub-pixel porosity are linear in OD), and vacuum (``T = 1``).

    Parameters
    ----------
    cube : ndarray, shape (n_energy, ny, nx)
        OD of one edge on the common grid.
    valid : ndarray of bool, shape (ny, nx)
        Pixels the edge measured.
    nmc_core, ely_core : ndarray of bool, shape (ny, nx)
        Bulk NMC and bulk electrolyte pixels (the references).
    sigma0 : ndarray, shape (n_energy,)
        OD noise at zero OD.
    local_sigma_px, ely_sigma_px : float
        Gaussian widths (pixels) of the local NMC and electrolyte references.
    thickness_scales : tuple of float
        Exponents ``k`` of the thinner / thicker versions of each reference.

    Returns
    -------
    dict
        ``fractions`` (ny, nx, 3) NMC / electrolyte / empty, ``residual`` (ny, nx, n_energy) weighted by the
        noise, ``references`` (global NMC and electrolyte OD spectra), ``fit_inputs`` (transmissions,
        references and noise of the fit, each with the sum-to-one row).
    """
    n_e, ny, nx = cube.shape
    cube = np.where(valid[None], cube, 0.0)
    trans = np.exp(-np.clip(cube, -1.0, 8.0))
    ok_nmc = nmc_core & valid
    ok_ely = ely_core & valid
    local = []
    for ok, sig_px in ((ok_nmc, local_sigma_px), (ok_ely, ely_sigma_px)):
        if ok.any():
            glob = trans[:, ok].mean(axis=1)
            loc, wsum = _normalised_average(trans, ok, sig_px)
            loc[:, wsum < 1e-3] = glob[:, None]
        else:
            glob = np.ones(n_e)
            loc = np.ones_like(trans)
        local.append((glob, loc))
    references = {"nmc": -np.log(local[0][0]), "electrolyte": -np.log(local[1][0])}
    t_pix = np.moveaxis(trans, 0, -1).reshape(-1, n_e)
    # each phase at a thinner and a thicker version (T**k): lamella wedge, density and sub-pixel
    # porosity change the amount of a phase along the beam (linear in OD, not in T); a non-negative
    # combination of the two brackets any thickness in between
    refs = []
    for glob, loc in local:
        t_loc = np.clip(np.moveaxis(loc, 0, -1).reshape(-1, n_e), 1e-6, 1.0)
        refs += [t_loc ** k for k in thickness_scales]
    refs.append(np.ones((ny * nx, n_e)))
    refs = np.stack(refs, axis=1)
    n_k = len(thickness_scales)
    # noise of T: sigma_T = T * sigma_OD = sigma0 * exp(-OD / 2)
    sd = sigma0[None, :] * np.sqrt(np.clip(t_pix, 1e-4, None))
    # areal fractions cover the pixel: a soft sum-to-one row (sd 0.05) lifts the degeneracy of a
    # spectrally flat phase (electrolyte at Ni-L) with vacuum
    t_aug = np.concatenate([t_pix, np.ones((ny * nx, 1))], axis=1)
    refs_aug = np.concatenate([refs, np.ones(refs.shape[:2] + (1,))], axis=2)
    sd_aug = np.concatenate([sd, np.full((ny * nx, 1), 0.05)], axis=1)
    fit = nnls_fit(t_aug, refs_aug, constant=False, weights=1.0 / sd_aug)
    model = np.einsum("pj,pjf->pf", fit.abundances, refs)
    ab = fit.abundances
    fractions = np.stack([ab[:, :n_k].sum(axis=1), ab[:, n_k:2 * n_k].sum(axis=1), ab[:, -1]],
                         axis=1).reshape(ny, nx, 3)
    return {"fractions": fractions, "residual": ((t_pix - model) / sd).reshape(ny, nx, n_e),
            "references": references, "fit_inputs": (t_aug, refs_aug, sd_aug)}
