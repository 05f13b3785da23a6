"""The synthetic lamella generator: physics, geometry, determinism and the null option on small lamellae."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from ceimap.segment import CLASS_CODES
from ceimap.segment.synthetic import CONDITIONS, load_truth, make_lamella, make_spec, write_lamella
from ceimap.segment.synthetic.chemistry import particle_parameters
from ceimap.segment.synthetic.imaging import drift_walk
from ceimap.segment.synthetic.microstructure import make_microstructure
from ceimap.segment.synthetic.spec import ni_l_energies, s_l_energies
from ceimap.segment.synthetic.spectra_model import SpectraModel, l3_amplitudes, ni_basis, s_basis

SMALL = dict(field_width_nm=2600.0, field_height_nm=2500.0, n_particles=4, n_free_voids=1)


@pytest.fixture(scope="module")
def small_cycled():
    return make_lamella(make_spec("cycled_4p25v", 11, **SMALL))


@pytest.fixture(scope="module")
def small_cycled_null():
    return make_lamella(make_spec("cycled_4p25v", 11, **SMALL), null=True)


def test_spec_draws_within_documented_ranges():
    for cond in CONDITIONS:
        for seed in range(5):
            s = make_spec(cond, seed)
            assert 6400 <= s.field_width_nm <= 7600 and 6400 <= s.field_height_nm <= 7600
            assert 8 <= s.sem_pixel_nm <= 12
            assert 10 <= s.n_particles <= 16
            for es in s.edges:
                assert 35 <= es.stxm_pixel_nm <= 45
                assert 0.01 <= abs(es.scale_error) <= 0.02
                assert 1 <= abs(es.rotation_deg) <= 5
                assert 45 <= es.psf_fwhm_nm <= 55
            ni, sl = s.edge_spec("Ni-L"), s.edge_spec("S-L")
            assert 50 <= len(ni.energies_ev) <= 70 and 40 <= len(sl.energies_ev) <= 60
            assert 5000 <= ni.i0_counts <= 20000 and 300 <= sl.i0_counts <= 1000


def test_energy_grids_are_fine_across_l3_and_s_edge():
    for step in (0.2, 0.25):
        e = ni_l_energies(step)
        fine = e[(e >= 848) & (e <= 856)]
        assert np.allclose(np.diff(fine), step)
        assert e[0] == 845.0 and e[-1] == 875.0 and np.all(np.diff(e) > 0)
        s = s_l_energies(step)
        assert np.allclose(np.diff(s[(s >= 162) & (s <= 167)]), step)
        assert s[0] == 158.0 and s[-1] == 180.0


def test_ni_l3_amplitude_ratio_is_the_definition():
    e = np.linspace(845, 875, 3001)
    model = SpectraModel()
    b = ni_basis(e, model, 0.35)
    a_t, a_e = l3_amplitudes(1.7, model.ni_l3_peak_sum)
    spectrum = b["nmc"] + a_t * b["t2g"] + a_e * b["eg"]
    peaks_only = spectrum - b["nmc"]
    amps, *_ = np.linalg.lstsq(np.c_[b["t2g"], b["eg"]], peaks_only, rcond=None)
    assert amps[1] / amps[0] == pytest.approx(1.7, rel=1e-9)
    # the raw peak-height ratio differs only by the small overlap of the Gaussian tails
    raw = peaks_only[np.argmin(abs(e - 852.0))] / peaks_only[np.argmin(abs(e - 850.0))]
    assert raw == pytest.approx(1.7, rel=0.02)
    assert a_t + a_e == pytest.approx(model.ni_l3_peak_sum)
    assert np.all(b["electrolyte"] > 0) and np.ptp(b["electrolyte"]) < 0.03   # no Ni: smooth background only


def test_s_edge_interphase_shifted_by_0p2_ev():
    e = np.arange(158.0, 180.0, 0.001)
    b = s_basis(e, SpectraModel(), 163.9, 0.2, 0.35)
    window = (e > 162.5) & (e < 164.6)
    peak = lambda y: e[window][np.argmax(y[window])]   # noqa: E731
    assert peak(b["electrolyte"]) == pytest.approx(163.9, abs=0.05)   # the step under it moves the max a little
    assert peak(b["interphase"]) - peak(b["electrolyte"]) == pytest.approx(0.2, abs=0.005)
    assert b["interphase"][np.argmin(abs(e - 172))] > b["electrolyte"][np.argmin(abs(e - 172))]   # S0/SOx
    assert np.all(np.abs(np.diff(b["nmc"], 2)) < 1e-6)                                              # smooth


def test_bulk_ratio_groups_bimodal_only_at_4p7v():
    for cond in CONDITIONS:
        spec = make_spec(cond, 4)
        bulk = np.array([p["bulk"] for p in particle_parameters(spec, 14, np.random.default_rng(0))])
        assert np.all((bulk >= 0.7) & (bulk <= 2.4))
        if cond == "cycled_4p7v":
            low, high = bulk[bulk < 1.65], bulk[bulk >= 1.65]
            assert len(low) >= 5 and len(high) >= 5 and high.mean() - low.mean() > 0.5
        else:
            assert np.ptp(bulk) < 0.5
    def mean_bulk(cond):
        return np.mean([p["bulk"] for p in particle_parameters(make_spec(cond, 1), 200, np.random.default_rng(1))])

    charged, cycled = mean_bulk("charged"), mean_bulk("cycled_4p25v")
    assert 1.6 < charged < 1.9 and cycled > charged


def test_drift_walk_starts_at_zero_and_reaches_total():
    d = drift_walk(60, 1.3, np.random.default_rng(2))
    assert d.shape == (60, 2) and np.all(d[0] == 0)
    assert np.hypot(d[:, 0], d[:, 1]).max() == pytest.approx(1.3)
    assert np.abs(np.diff(d, axis=0)).max() < 0.8        # sub-pixel jitter between frames


def test_truth_maps_are_consistent(small_cycled):
    t = small_cycled.truth
    cls, pid, r = t["classes"], t["particles"], t["egt2g"]
    assert cls.shape == pid.shape == r.shape == small_cycled.sem.image.shape
    assert set(np.unique(cls)) <= set(CLASS_CODES.values())
    assert np.array_equal(pid > 0, cls == CLASS_CODES["nmc"])
    has_ni = (cls == CLASS_CODES["nmc"]) | (cls == CLASS_CODES["interphase"])
    assert np.array_equal(np.isfinite(r), has_ni)
    assert np.nanmin(r) >= 0.7 and np.nanmax(r) <= 2.4
    assert (cls == CLASS_CODES["interphase"]).any() and (cls == CLASS_CODES["outside"]).any()


def test_particles_are_connected_unless_cracked(small_cycled):
    t = small_cycled.truth
    table = t["particle_table"].set_index("particle_id")
    for p in np.unique(t["particles"][t["particles"] > 0]):
        _, n = ndi.label(t["particles"] == p, structure=np.ones((3, 3)))
        assert n == 1 or table.loc[p, "cracked"]


def test_interphase_lies_on_the_electrolyte_side(small_cycled):
    t = small_cycled.truth
    cls = t["classes"]
    inter = cls == CLASS_CODES["interphase"]
    px = small_cycled.spec.sem_pixel_nm
    d_nmc = ndi.distance_transform_edt(cls != CLASS_CODES["nmc"]) * px
    assert d_nmc[inter].max() <= t["thickness"]["thickness_nm"].max() + 3 * px
    cross = ndi.generate_binary_structure(2, 1)
    touching_void = inter & ndi.binary_dilation(cls == CLASS_CODES["void"], cross)
    assert touching_void.sum() < 0.05 * inter.sum()
    # every piece of interphase grows from an NMC surface (or is cut by the image border)
    labels, n = ndi.label(inter, structure=np.ones((3, 3)))
    near_nmc = ndi.binary_dilation(cls == CLASS_CODES["nmc"], np.ones((3, 3)))
    border = np.zeros_like(inter)
    border[[0, -1], :] = border[:, [0, -1]] = True
    ok = np.bincount(labels[near_nmc | border], minlength=n + 1)[1:] > 0
    assert n > 0 and ok.all()


def test_surface_reduction_only_at_electrolyte_contact(small_cycled, small_cycled_null):
    tab = small_cycled.truth["particle_table"].dropna(subset=["egt2g_surface_void", "egt2g_surface_electrolyte"])
    assert len(tab) >= 2
    el_drop = (tab["egt2g_bulk"] - tab["egt2g_surface_electrolyte"]).mean()
    void_drop = (tab["egt2g_bulk"] - tab["egt2g_surface_void"]).mean()
    assert el_drop > 0.1 and abs(void_drop) < 0.05
    null = small_cycled_null.truth["particle_table"].dropna(subset=["egt2g_surface_void", "egt2g_surface_electrolyte"])
    assert np.all(null["surface_reduction"] == 0)
    assert abs((null["egt2g_surface_electrolyte"] - null["egt2g_surface_void"]).mean()) < 0.05
    assert small_cycled_null.truth["info"]["null"] is True


def test_null_keeps_geometry_and_interphase(small_cycled, small_cycled_null):
    a, b = small_cycled.truth, small_cycled_null.truth
    assert np.array_equal(a["classes"], b["classes"])
    assert np.array_equal(a["particles"], b["particles"])
    assert np.array_equal(small_cycled.sem.image, small_cycled_null.sem.image)
    assert a["thickness"].equals(b["thickness"])


def test_transforms_are_similarities_with_documented_errors(small_cycled):
    spec = small_cycled.spec
    for es in spec.edges:
        tr = small_cycled.truth["transforms"][es.edge]
        m = np.asarray(tr["matrix"])
        scale = np.sqrt(abs(np.linalg.det(m[:2, :2])))
        assert scale == pytest.approx(es.stxm_pixel_nm * (1 + es.scale_error) / spec.sem_pixel_nm, rel=1e-9)
        assert 0.01 <= abs(scale * spec.sem_pixel_nm / es.stxm_pixel_nm - 1) <= 0.02
        angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
        assert 1 <= abs(angle) <= 5
        drift = np.asarray(tr["drift_px"])
        assert drift.shape == (len(es.energies_ev), 2)
        assert 1.0 <= np.hypot(drift[:, 0], drift[:, 1]).max() <= 1.6


def _stxm_classes(synth, edge, margin_sem_px):
    """Truth class of each STXM pixel where the class is pure within ``margin_sem_px`` (else 255)."""
    t = synth.truth
    st = synth.stacks[edge]
    m = np.asarray(t["transforms"][edge]["matrix"])
    ny, nx = st.shape_yx
    yy, xx = np.mgrid[0:ny, 0:nx]
    p = m @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    xs, ys = np.round(p[0]).astype(int), np.round(p[1]).astype(int)
    c = t["classes"]
    size = 2 * margin_sem_px + 1
    pure = ndi.maximum_filter(c, size) == ndi.minimum_filter(c, size)
    ok = (xs >= 0) & (ys >= 0) & (xs < c.shape[1]) & (ys < c.shape[0])
    out = np.full(xx.size, 255)
    out[ok] = np.where(pure[ys[ok], xs[ok]], c[ys[ok], xs[ok]], 255)
    return out.reshape(ny, nx)


def test_counts_are_poisson_and_void_is_transparent(small_cycled):
    spec = small_cycled.spec
    for es in spec.edges:
        st = small_cycled.stacks[es.edge]
        # drift (<= 1.6 STXM px) + PSF: stay ~3 STXM pixels inside a class
        margin = int(np.ceil(3 * es.stxm_pixel_nm / spec.sem_pixel_nm))
        cls = _stxm_classes(small_cycled, es.edge, margin)
        vac = cls == 0
        assert vac.sum() >= 20
        counts = st.data[:, vac]
        mean, var = counts.mean(axis=1), counts.var(axis=1, ddof=1)
        assert np.median(var / mean) == pytest.approx(1.0, abs=0.15)
        assert np.all(st.data == np.round(st.data)) and st.data.min() >= 0
        void = cls == CLASS_CODES["void"]
        if void.sum() >= 3:
            od_void = -np.log(st.data[:, void].mean(axis=1) / mean)
            assert abs(np.mean(od_void)) < 0.03


def test_ring_current_monitor_decays_slowly(small_cycled):
    for st in small_cycled.stacks.values():
        ring = np.asarray(st.monitor).ravel()
        assert st.monitor_kind == "ring_current"
        assert np.all(np.diff(ring) < 0) and 0.97 < ring[-1] / ring[0] < 1.0


def test_annotations_are_sparse_and_inside_their_class(small_cycled):
    a, cls = small_cycled.annotations, small_cycled.truth["classes"]
    assert a.dtype == np.uint8 and a.shape == cls.shape
    labelled = a > 0
    assert 0.001 < labelled.mean() < 0.05
    assert np.array_equal(a[labelled], cls[labelled])
    assert {1, 3} <= set(np.unique(a[labelled]))


def test_same_seed_identical_other_seed_different():
    spec = make_spec("cycled_4p7v", 5, field_width_nm=2000.0, field_height_nm=2000.0, n_particles=3,
                     n_free_voids=1)
    a, b = make_lamella(spec), make_lamella(spec)
    for edge in a.stacks:
        assert np.array_equal(a.stacks[edge].data, b.stacks[edge].data)
    assert np.array_equal(a.sem.image, b.sem.image)
    assert np.array_equal(a.annotations, b.annotations)
    for key in ("classes", "particles", "egt2g"):
        assert np.array_equal(a.truth[key], b.truth[key], equal_nan=(key == "egt2g"))
    assert a.truth["particle_table"].equals(b.truth["particle_table"])
    assert a.truth["transforms"] == b.truth["transforms"]
    other = make_microstructure(replace(spec, seed=6), np.random.default_rng(6))
    same = make_microstructure(spec, np.random.default_rng(5))
    assert not np.array_equal(same.classes, other.classes)


def test_write_and_load_round_trip(tmp_path, small_cycled):
    from ceimap.segment.io import read_annotations, read_lamella

    manifest = write_lamella(small_cycled, tmp_path / "lam")
    lam = read_lamella(manifest)
    assert lam.sem.pixel_size_nm == pytest.approx(small_cycled.spec.sem_pixel_nm, rel=1e-6)
    assert np.array_equal(lam.sem.image, small_cycled.sem.image)
    for edge, st in small_cycled.stacks.items():
        assert np.array_equal(lam.stacks[edge].data, st.data)
        assert np.allclose(lam.stacks[edge].energies_ev, st.energies_ev)
        assert lam.stacks[edge].pixel_size_nm == pytest.approx(st.pixel_size_nm, rel=1e-6)
    ann = read_annotations(lam.annotations_path, lam.sem.image.shape)
    assert np.array_equal(ann, small_cycled.annotations)
    truth = load_truth(tmp_path / "lam")
    for key in ("classes", "particles"):
        assert np.array_equal(truth[key], small_cycled.truth[key])
    assert np.array_equal(truth["egt2g"], small_cycled.truth["egt2g"], equal_nan=True)
    assert list(truth["thickness"].columns) == ["particle_id", "x_nm", "y_nm", "thickness_nm"]
    assert {"particle_id", "egt2g_bulk", "egt2g_surface_electrolyte", "egt2g_surface_void", "area_nm2",
            "equivalent_diameter_nm", "cracked"} <= set(truth["particle_table"].columns)
    assert truth["transforms"]["Ni-L"]["matrix"].shape == (3, 3)
    assert list(truth["spectra"].columns) == ["edge", "energy_ev", "nmc", "interphase", "electrolyte"]
    assert len(truth["spectra"]) == sum(len(st.energies_ev) for st in small_cycled.stacks.values())
    assert truth["s_edge_ev"]["interphase"] - truth["s_edge_ev"]["electrolyte"] == pytest.approx(0.2)


def test_load_truth_refuses_a_folder_without_truth(tmp_path):
    from ceimap.segment.errors import CeimapInputError

    with pytest.raises(CeimapInputError, match="truth"):
        load_truth(tmp_path)


def test_command_line_refuses_unknown_example(tmp_path, capsys):
    from ceimap.segment.synthetic.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "no_such_condition"])
    assert exc.value.code == 2
    assert "no_such_condition" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
