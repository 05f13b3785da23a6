"""Tests of segment.signatures: resonance, absorption and names on hand-made spectra."""

import numpy as np
import pytest

from ceimap.segment.signatures import edge_signature, name_spectrum
from tests.segment.scenes import NI_E, S_E, ni_spectra, s_spectra


def test_edge_signature_measures_resonance_above_pre_edge():
    nmc, inter, ely = ni_spectra(ratio_nmc=(1.8,))
    sig = edge_signature(NI_E, np.stack([nmc[0], inter, ely, np.zeros_like(ely)]), "Ni-L", 0.01)
    res = sig["resonance"]
    # electrolyte and vacuum: smooth background only -> no resonance (within the baseline curvature)
    assert abs(res[2]) < 0.01 and res[3] == 0.0
    # the interphase holds about a third of NMC's Ni
    assert res[0] > 0.3 and 0.25 < res[1] / res[0] < 0.45
    assert sig["absorption"][3] == 0.0 and sig["absorption_snr"][0] > 100


@pytest.mark.parametrize("with_s", [True, False])
def test_name_spectrum_from_signatures(with_s):
    nmc_ni, _, ely_ni = ni_spectra(ratio_nmc=(1.3,))
    nmc_s, _, ely_s = s_spectra()
    noise = {"Ni-L": 0.01, "S-L": 0.04}
    rng = np.random.default_rng(1)

    def spectra(ni, s):
        out = {"Ni-L": (NI_E, ni + rng.normal(0, 0.01, ni.shape))}
        if with_s:
            out["S-L"] = (S_E, s + rng.normal(0, 0.04, s.shape))
        return out

    assert name_spectrum(spectra(nmc_ni[0], nmc_s), noise) == "nmc"
    assert name_spectrum(spectra(ely_ni, ely_s), noise) == "electrolyte"
    assert name_spectrum(spectra(0 * ely_ni, 0 * ely_s), noise) == "void"
    # a thin (20 nm) electrolyte still absorbs clearly
    assert name_spectrum(spectra(0.2 * ely_ni, 0.2 * ely_s), noise) == "electrolyte"
