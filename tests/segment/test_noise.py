"""Tests of segment.noise: the OD noise scale measured from the data."""

import numpy as np
from scipy import ndimage

from ceimap.segment.noise import od_noise_scale
from tests.segment.scenes import NI_E, ni_spectra


def test_od_noise_scale_recovers_poisson_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:80, :80]
    disc = ndimage.gaussian_filter(((yy - 40) ** 2 + (xx - 40) ** 2 < 25 ** 2) * 1.0, 1.5)
    nmc, _, ely = ni_spectra(ratio_nmc=(1.8,))
    od_true = disc[None] * nmc[0][:, None, None] + (1 - disc)[None] * ely[:, None, None]
    i0 = np.linspace(3000.0, 30000.0, NI_E.size)[:, None, None]
    od = -np.log(rng.poisson(i0 * np.exp(-od_true)) / i0)
    np.testing.assert_allclose(od_noise_scale(od), 1 / np.sqrt(i0[:, 0, 0]), rtol=0.1)
    # cubic-spline drift correction correlates neighbours; the low-rank residual still sees the noise
    shifted = np.stack([ndimage.shift(f, (0.5, 0.5), order=3, mode="nearest") for f in od])
    est = od_noise_scale(shifted)
    assert np.median(est * np.sqrt(i0[:, 0, 0])) > 0.6
