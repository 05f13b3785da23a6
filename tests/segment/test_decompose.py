"""Tests of segment.decompose: PCA rank choice, NMF, k-means and NNLS reference fitting."""

import numpy as np
import pytest
from scipy import optimize

from ceimap.segment.decompose import (Decomposition, kmeans, marchenko_pastur_median, nmf, nnls_fit, pca,
                               optimal_rank_threshold)


def _low_rank(rng, n, p, rank, scale=3.0):
    return rng.normal(size=(n, rank)) @ rng.normal(size=(rank, p)) * scale


@pytest.mark.parametrize("rank", [1, 2, 3, 5])
def test_pca_picks_rank_of_low_rank_plus_noise(rank):
    rng = np.random.default_rng(rank)
    signal = _low_rank(rng, 1500, 60, rank)
    dec = pca(signal + rng.normal(scale=0.2, size=signal.shape))
    assert dec.n_components == rank
    assert dec.details["rank_from"] == "gavish-donoho"
    assert dec.details["noise_sigma"] == pytest.approx(0.2, rel=0.05)
    # the residual of the rank-k model is the noise left outside the signal subspace
    assert np.median(dec.residual) == pytest.approx(0.2 * np.sqrt(1 - rank / 60), rel=0.1)


def test_pca_pure_noise_gives_one_component_and_given_rank_is_kept():
    rng = np.random.default_rng(7)
    noise = rng.normal(scale=0.5, size=(1000, 40))
    dec = pca(noise)
    assert dec.n_components == 1          # floor: at least one component
    assert dec.details["singular_values"][0] < dec.details["threshold"]
    assert pca(noise, n_components=4).n_components == 4


def test_pca_keeps_image_shape_and_reconstructs():
    rng = np.random.default_rng(3)
    cube = _low_rank(rng, 30 * 40, 25, 2).reshape(30, 40, 25)
    dec = pca(cube, n_components=2)
    assert dec.abundances.shape == (30, 40, 2)
    assert dec.residual.shape == (30, 40)
    recon = dec.abundances @ dec.components + dec.details["mean"]
    np.testing.assert_allclose(recon, cube, atol=1e-9)


def test_pca_with_known_noise_sigma():
    rng = np.random.default_rng(11)
    signal = _low_rank(rng, 2000, 50, 3)
    x = signal + rng.normal(scale=0.3, size=signal.shape)
    dec = pca(x, noise_sigma=0.3)
    assert dec.n_components == 3
    assert dec.details["noise_sigma"] == 0.3


def test_marchenko_pastur_median_matches_simulation():
    assert marchenko_pastur_median(1.0) == pytest.approx(0.6528, abs=1e-3)
    rng = np.random.default_rng(0)
    n, p = 4000, 400
    z = rng.normal(size=(n, p))
    ev = np.linalg.eigvalsh(z.T @ z / n)
    assert np.median(ev) == pytest.approx(marchenko_pastur_median(p / n), rel=0.02)


def test_optimal_threshold_square_matrix_value():
    # Gavish & Donoho: for square matrices with known noise the threshold is 4/sqrt(3) * sqrt(n) * sigma
    thr, sigma = optimal_rank_threshold(np.ones(100), (100, 100), noise_sigma=1.0)
    assert thr == pytest.approx(4 / np.sqrt(3) * 10, rel=1e-9)
    assert sigma == 1.0


def test_nnls_recovers_known_abundances_and_constant():
    rng = np.random.default_rng(5)
    energies = np.linspace(0, 1, 60)
    refs = np.stack([np.exp(-((energies - c) / 0.08) ** 2) + 0.2 for c in (0.3, 0.5, 0.7)])
    a = rng.uniform(0, 2, size=(500, 3)) * (rng.random((500, 3)) > 0.3)
    c = rng.normal(0, 0.1, size=500)
    od = a @ refs + c[:, None]
    fit = nnls_fit(od, refs)
    np.testing.assert_allclose(fit.abundances, a, atol=1e-9)
    np.testing.assert_allclose(fit.details["constant"], c, atol=1e-9)
    assert fit.residual.max() < 1e-9
    assert fit.method == "nnls"


def test_nnls_enforces_non_negativity_and_matches_scipy():
    rng = np.random.default_rng(9)
    refs = rng.uniform(0, 1, size=(3, 20))
    od = rng.normal(size=(200, 20))          # arbitrary spectra: many need zero weights
    fit = nnls_fit(od, refs, constant=False)
    assert (fit.abundances >= 0).all()
    for i in range(200):
        coef, rnorm = optimize.nnls(refs.T, od[i])
        np.testing.assert_allclose(fit.abundances[i], coef, atol=1e-8)
        assert fit.residual[i] == pytest.approx(rnorm / np.sqrt(20), abs=1e-10)


def test_nnls_weighted_fit_and_image_shape():
    refs = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 1.0]])
    od = np.broadcast_to(0.5 * refs[0] + 2.0 * refs[1], (4, 5, 4))
    fit = nnls_fit(od, refs, weights=np.array([1.0, 2.0, 3.0, 4.0]))
    assert fit.abundances.shape == (4, 5, 2)
    np.testing.assert_allclose(fit.abundances[..., 0], 0.5, atol=1e-9)
    np.testing.assert_allclose(fit.abundances[..., 1], 2.0, atol=1e-9)


def test_nmf_recovers_two_nonnegative_spectra():
    rng = np.random.default_rng(2)
    e = np.linspace(0, 1, 50)
    h = np.stack([np.exp(-((e - 0.3) / 0.05) ** 2), np.exp(-((e - 0.7) / 0.05) ** 2)])
    w = rng.uniform(0, 1, size=(400, 2))
    w[:50, 1] = 0
    w[50:100, 0] = 0                          # pure pixels make the factorisation identifiable
    dec = nmf(w @ h + rng.normal(scale=0.001, size=(400, 50)), 2)
    assert isinstance(dec, Decomposition)
    assert (dec.components >= 0).all() and (dec.abundances >= 0).all()
    corr = np.corrcoef(np.vstack([dec.components, h]))[:2, 2:]
    assert np.sort(corr.max(axis=1)).min() > 0.99
    assert dec.residual.mean() < 0.01


@pytest.mark.parametrize("n", [600, 30000])
def test_kmeans_separates_clusters(n):
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 3, size=n)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    x = centres[truth] + rng.normal(size=(n, 2))
    dec = kmeans(x, 3)
    labels = dec.details["labels"]
    # same partition up to a permutation of labels
    table = np.zeros((3, 3), int)
    np.add.at(table, (truth, labels), 1)
    assert (table.max(axis=1).sum() / n) > 0.999
    assert dec.abundances.sum(axis=1).tolist() == [1.0] * n
    # RMS over 2 features of unit normal errors: E[sqrt(chi2_2 / 2)] = sqrt(pi) / 2
    assert dec.residual.mean() == pytest.approx(np.sqrt(np.pi) / 2, rel=0.05)


def test_nnls_with_per_pixel_references():
    rng = np.random.default_rng(12)
    refs = rng.uniform(0.1, 1.0, size=(300, 2, 25))        # a different pair of references per pixel
    a = rng.uniform(0, 1, size=(300, 2))
    a[:40, 1] = 0
    od = np.einsum("pj,pjf->pf", a, refs)
    fit = nnls_fit(od, refs, constant=False)
    np.testing.assert_allclose(fit.abundances, a, atol=1e-8)
    with pytest.raises(ValueError):
        nnls_fit(od[:10], refs, constant=False)
