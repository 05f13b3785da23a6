"""NXstxm reader and writer: round trips, beamline-like layouts written with raw h5py, real files, errors."""

import h5py
import numpy as np
import pytest

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_stack, write_nxstxm
from ceimap.segment.io.nxstxm import read_nxstxm
from ceimap.segment.stack import Stack


def _stack(n_e=6, ny=9, nx=11, kind="counts", seed=0, **kw):
    rng = np.random.default_rng(seed)
    if kind == "counts":
        data = rng.poisson(3000, (n_e, ny, nx)).astype(float)
    else:
        data = rng.uniform(0.05, 2.5, (n_e, ny, nx))
    fields = dict(energies_ev=np.linspace(845.0, 872.5, n_e), pixel_size_nm=35.0, kind=kind, edge="Ni-L",
                  origin_x_nm=1250.0, origin_y_nm=-3400.0, dwell_ms=np.full(n_e, 2.5))
    fields.update(kw)
    return Stack(data=data, **fields)


def test_round_trip_counts_with_ring_current(tmp_path):
    s = _stack(monitor=np.linspace(401.0, 399.5, 6).reshape(6, 1, 1), monitor_kind="ring_current")
    p = tmp_path / "ni.hdf5"
    write_nxstxm(p, s)
    r = read_stack(p)
    np.testing.assert_array_equal(r.data, s.data)
    np.testing.assert_array_equal(r.energies_ev, s.energies_ev)
    assert r.pixel_size_nm == pytest.approx(35.0, rel=1e-12)
    assert (r.origin_x_nm, r.origin_y_nm) == pytest.approx((1250.0, -3400.0))
    np.testing.assert_allclose(r.dwell_ms, 2.5)
    assert r.kind == "counts" and r.edge == "Ni-L" and r.monitor_kind == "ring_current"
    np.testing.assert_array_equal(np.broadcast_to(r.monitor, r.data.shape),
                                  np.broadcast_to(s.monitor, s.data.shape))
    assert r.metadata["detector"] == "counter0" and r.metadata["entry"] == "entry1"


def test_round_trip_od_and_i0_monitor(tmp_path):
    s = _stack(kind="od", edge="S-L", energies_ev=np.linspace(160.0, 185.0, 6),
               monitor=np.arange(6 * 9 * 11, dtype=float).reshape(6, 9, 11) + 1.0, monitor_kind="i0")
    p = tmp_path / "s.nxs"
    write_nxstxm(p, s)
    r = read_stack(p)
    np.testing.assert_array_equal(r.data, s.data)
    assert r.kind == "od" and r.metadata["kind_source"] == "file" and r.edge == "S-L"
    assert r.monitor_kind == "i0"
    np.testing.assert_array_equal(r.monitor, s.monitor)


def test_writer_layout_is_what_mantis_and_nexus_need(tmp_path):
    s = _stack(monitor=np.full((6, 1, 1), 400.0))
    p = tmp_path / "layout.hdf5"
    write_nxstxm(p, s)
    with h5py.File(p, "r") as f:
        e = f["entry1"]
        assert e.attrs["NX_class"] == b"NXentry"
        d = e["definition"]
        assert d.shape == (1,) and d.dtype.kind == "S" and d[0] == b"NXstxm"
        c = e["counter0"]
        assert c.attrs["NX_class"] == b"NXdata" and c.attrs["signal"] == b"data"
        assert [a for a in c.attrs["axes"]] == [b"energy", b"sample_y", b"sample_x"]
        assert c.attrs["axes"].dtype.kind == "S"
        assert int(c.attrs["energy_indices"][0]) == 0 and int(c.attrs["sample_x_indices"][0]) == 2
        assert c["data"].shape == (6, 9, 11) and c["data"].dtype.kind == "u"
        assert c["data"].compression == "gzip" and c["data"].shuffle
        assert c["stxm_scan_type"][0] == b"sample image stack" and c["stxm_scan_type"].dtype.kind == "S"
        np.testing.assert_allclose(c["count_time"][()], 0.0025)
        assert c["energy"].attrs["units"] == b"eV"
        np.testing.assert_allclose(np.diff(c["sample_x"][()]), 0.035)
        assert e["control"].attrs["NX_class"] == b"NXmonitor"
        assert e["control"]["data"].shape == (6, 9, 11)
        assert e["control"].attrs["monitor_kind"] == b"ring_current"
        assert e["instrument/monochromator"].attrs["NX_class"] == b"NXmonochromator"
        np.testing.assert_array_equal(e["instrument/monochromator/energy"][()], s.energies_ev)
        assert e["instrument/source"].attrs["NX_class"] == b"NXsource"
        assert e["instrument/counter0"].attrs["NX_class"] == b"NXdetector"
        assert e["sample"].attrs["NX_class"] == b"NXsample"
        assert "start_time" not in e


def test_writer_is_deterministic_and_small(tmp_path):
    s = _stack(n_e=20, ny=64, nx=64)
    p = tmp_path / "a.hdf5"
    write_nxstxm(p, s)
    first = p.read_bytes()
    write_nxstxm(p, s)
    assert p.read_bytes() == first
    # Poisson counts around 3000 need 12 bits; uint16 + shuffle + gzip stays below the raw 16-bit size.
    assert len(first) < 20 * 64 * 64 * 2


def test_timestamp_written_when_given(tmp_path):
    p = tmp_path / "t.hdf5"
    write_nxstxm(p, _stack(), timestamp="2024-01-02T03:04:05Z")
    with h5py.File(p, "r") as f:
        assert f["entry1/start_time"][0] == b"2024-01-02T03:04:05Z"


def test_single_frame_round_trip(tmp_path):
    s = _stack(n_e=1, energies_ev=np.array([853.0]))
    p = tmp_path / "one.hdf5"
    write_nxstxm(p, s)
    r = read_stack(p)
    assert r.data.shape == (1, 9, 11)
    np.testing.assert_array_equal(r.data, s.data)


def _beamline_file(p):
    """A beamline-style file: odd names, several entries, transposed axes, decreasing x, keV, bytes/str mix."""
    rng = np.random.default_rng(3)
    n_e, ny, nx = 4, 5, 7
    truth = rng.integers(100, 5000, (n_e, ny, nx)).astype(np.int32)
    energies_kev = np.array([0.8530, 0.8450, 0.8700, 0.8600])  # unsorted on purpose
    x_um = 12.0 - 0.04 * np.arange(nx)  # decreasing
    y_um = 3.0 + 0.04 * np.arange(ny)
    with h5py.File(p, "w") as f:
        a = f.create_group("aaa_tomo")
        a.attrs["NX_class"] = "NXentry"
        a["definition"] = np.array([b"NXtomo"])
        e = f.create_group("scan_0042")
        e.attrs["NX_class"] = np.bytes_(b"NXentry")
        e["definition"] = "NXstxm"  # variable-length str scalar, not a byte array
        diode = e.create_group("Diode")
        diode.attrs["NX_class"] = "NXdata"
        diode.attrs["signal"] = "data"
        diode["data"] = np.arange(4.0)
        pmt = e.create_group("PMT_ch1")
        pmt.attrs["NX_class"] = "NXdata"
        pmt.attrs["signal"] = np.bytes_(b"counts_map")
        pmt.attrs["axes"] = ["sample_x", "sample_y", "energy"]  # stored (x, y, energy)
        pmt["counts_map"] = np.transpose(truth, (2, 1, 0))
        pmt["energy"] = energies_kev
        pmt["energy"].attrs["units"] = "keV"
        pmt["sample_x"] = x_um
        pmt["sample_x"].attrs["units"] = np.bytes_("µm".encode("latin-1"))
        pmt["sample_y"] = y_um
        pmt["sample_y"].attrs["units"] = "um"
        pmt["count_time"] = np.array([1.5])
        pmt["count_time"].attrs["units"] = "ms"
        pmt2 = e.create_group("TEY")
        pmt2.attrs["NX_class"] = "NXdata"
        pmt2.attrs["signal"] = "data"
        pmt2.attrs["axes"] = ["energy", "sample_y", "sample_x"]
        pmt2["data"] = np.ones((n_e, ny, nx))
        for k, v in (("energy", energies_kev), ("sample_x", x_um), ("sample_y", y_um)):
            pmt2[k] = v
        pmt2["energy"].attrs["units"] = "keV"
        ctrl = e.create_group("control")
        ctrl.attrs["NX_class"] = "NXmonitor"
        ctrl["data"] = np.array([10.0, 11.0, 12.0, 13.0])
        ctrl["data"].attrs["units"] = "counts"
        ctrl["type"] = np.array([b"I0 diode"])
    return truth, energies_kev, x_um


def test_beamline_layout_with_odd_names(tmp_path):
    p = tmp_path / "odd.h5"
    truth, energies_kev, _ = _beamline_file(p)
    r = read_stack(p)
    order = np.argsort(energies_kev)
    np.testing.assert_allclose(r.energies_ev, energies_kev[order] * 1000.0)
    expected = truth[order][:, :, ::-1]  # frames sorted, x flipped to increase with the index
    np.testing.assert_array_equal(r.data, expected)
    assert r.pixel_size_nm == pytest.approx(40.0)
    assert r.origin_x_nm == pytest.approx((12.0 - 0.04 * 6) * 1000.0)
    assert r.metadata["entry"] == "scan_0042" and r.metadata["detector"] == "PMT_ch1"
    assert r.metadata["detectors"] == ["PMT_ch1", "TEY"]
    assert r.metadata["flipped_axes"] == ["x"] and r.metadata["frames_sorted_by_energy"]
    np.testing.assert_allclose(r.dwell_ms, 1.5)
    assert r.monitor_kind == "i0"
    np.testing.assert_array_equal(r.monitor.ravel(), np.array([10.0, 11.0, 12.0, 13.0])[order])
    assert r.edge == "Ni-L"
    # choose the other detector by keyword
    t = read_stack(p, detector="TEY", edge="custom")
    assert t.metadata["detector"] == "TEY" and t.edge == "custom"
    np.testing.assert_array_equal(t.data, 1.0)


def test_real_pollux_stack(realdata_dir):
    p = realdata_dir / "pollux_nxstxm" / "Sample_Stack_2021-03-16_128.hdf5"
    s = read_stack(p)
    assert s.data.shape == (4, 50, 50)
    np.testing.assert_allclose(s.energies_ev, [280.0, 284.5, 285.0, 320.0])
    assert s.pixel_size_nm == pytest.approx(500.0)
    assert s.kind == "counts" and s.edge == "C-K"
    assert s.monitor_kind == "ring_current" and s.metadata["monitor"] == "/entry1/control"
    assert s.monitor.shape[0] == 4 and np.all((s.monitor > 399) & (s.monitor < 403))
    np.testing.assert_allclose(s.dwell_ms, 10.0)
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(s.data, f["entry1/counter0/data"][()])
        assert s.origin_x_nm == pytest.approx(f["entry1/counter0/sample_x"][0] * 1000.0)


def test_real_pollux_single_image(realdata_dir):
    s = read_stack(realdata_dir / "pollux_nxstxm" / "Sample_Image_2021-03-16_095.hdf5")
    assert s.data.shape == (1, 50, 50) and s.n_energy == 1
    np.testing.assert_allclose(s.energies_ev, [350.0])
    assert s.pixel_size_nm == pytest.approx(1000.0)
    assert s.metadata["scan_type"] == "sample image"


def test_real_autogenerated_placeholder_refused(realdata_dir):
    p = realdata_dir / "pollux_nxstxm" / "NXstxm_autogenerated.hdf5"
    with pytest.raises(CeimapInputError) as err:
        read_stack(p)
    msg = str(err.value)
    assert "NXstxm_autogenerated.hdf5" in msg and "single number" in msg and "template" in msg


# ------------------------------------------------------------------------------------------- bad inputs

def _raises(path, *words, **kw):
    with pytest.raises(CeimapInputError) as err:
        read_stack(path, **kw)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_not_hdf5_with_hdf5_extension(tmp_path):
    p = tmp_path / "fake.hdf5"
    p.write_text("hello")
    _raises(p, "not an HDF5 file")


def test_truncated_hdf5(tmp_path):
    good = tmp_path / "good.hdf5"
    write_nxstxm(good, _stack(n_e=10, ny=40, nx=40))
    bad = tmp_path / "cut.hdf5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises(bad, "truncated")


def test_hdf5_that_is_not_nxstxm(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("entry")
        g.attrs["NX_class"] = "NXentry"
        g["definition"] = np.array([b"NXtomo"])
    _raises(p, "not an NXstxm file", "entry")


def test_axes_inconsistent_with_data(tmp_path):
    p = tmp_path / "bad_axes.hdf5"
    write_nxstxm(p, _stack())
    with h5py.File(p, "r+") as f:
        del f["entry1/counter0/energy"]
        f["entry1/counter0/energy"] = np.linspace(845, 870, 5)
    _raises(p, "energ")


def test_duplicate_energies_refused(tmp_path):
    p = tmp_path / "dup.hdf5"
    e = np.array([850.0, 851.0, 851.0, 852.0, 853.0, 854.0])
    write_nxstxm(p, _stack(energies_ev=e))
    _raises(p, "851 eV appears more than once")


def test_non_square_pixels_refused(tmp_path):
    p = tmp_path / "rect.hdf5"
    write_nxstxm(p, _stack())
    with h5py.File(p, "r+") as f:
        f["entry1/counter0/sample_y"][...] = f["entry1/counter0/sample_y"][()] * 1.05
    _raises(p, "pixel sizes differ")


def test_unknown_detector_and_entry(tmp_path):
    p = tmp_path / "x.hdf5"
    write_nxstxm(p, _stack())
    _raises(p, "'nope'", detector="nope")
    _raises(p, "'nope'", entry="nope")


def test_reader_does_not_modify_file(tmp_path):
    p = tmp_path / "ro.hdf5"
    write_nxstxm(p, _stack())
    before = p.read_bytes()
    read_nxstxm(p)
    assert p.read_bytes() == before


def test_mantis_reads_our_file(tmp_path):
    """Optional: MANTiS's own NXstxm plugin opens what we write (skipped when mantis-xray is absent)."""
    plugin = pytest.importorskip("mantis_xray.file_plugins.file_nexus_hdf5")
    s = _stack(monitor=np.full((6, 1, 1), 400.0))
    p = tmp_path / "for_mantis.hdf5"
    write_nxstxm(p, s)
    assert plugin.identify(str(p))

    class Target:
        def fill_h5_struct_from_stk(self):
            pass

    t = Target()
    plugin.read(str(p), t, selection=(0, 0, 0))
    np.testing.assert_array_equal(t.ev, s.energies_ev)
    # MANTiS stores (x, y, energy)
    np.testing.assert_array_equal(t.absdata, np.transpose(s.data, (2, 1, 0)))
    assert t.n_cols == 11 and t.n_rows == 9


def test_axes_as_one_colon_separated_string(tmp_path):
    p = tmp_path / "colon.h5"
    truth = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(4, 3, 2)  # stored (x, y, energy)
    with h5py.File(p, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e["definition"] = np.array([b"NXstxm"])
        d = e.create_group("det")
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "data"
        d.attrs["axes"] = "sample_x:sample_y:energy"
        d["data"] = truth
        d["energy"] = [700.0, 710.0]
        d["sample_x"] = [0.0, 0.1, 0.2, 0.3]
        d["sample_y"] = [0.0, 0.1, 0.2]
    s = read_stack(p)
    np.testing.assert_array_equal(s.data, np.transpose(truth, (2, 1, 0)))
    assert s.pixel_size_nm == pytest.approx(100.0) and s.dwell_ms is None and s.monitor is None


def test_given_edge_contradicting_energies_refused(tmp_path):
    p = tmp_path / "ni.hdf5"
    write_nxstxm(p, _stack())
    _raises(p, "given as the S-L edge", "Ni-L", edge="S-L")


def test_stack_in_second_entry_preferred_over_image_in_first(tmp_path):
    p = tmp_path / "two.hdf5"
    image = _stack(n_e=1, energies_ev=np.array([850.0]), seed=1)
    stack = _stack(seed=2)
    write_nxstxm(p, image)
    with h5py.File(p, "r+") as f:
        f.copy("entry1", "entry0")  # entry0 (first by name) holds the single image
        del f["entry1"]
    other = tmp_path / "other.hdf5"
    write_nxstxm(other, stack)
    with h5py.File(other, "r") as src, h5py.File(p, "r+") as dst:
        src.copy("entry1", dst, "entry1")
    s = read_stack(p)
    assert s.metadata["entry"] == "entry1" and s.metadata["entries"] == ["entry0", "entry1"]
    np.testing.assert_array_equal(s.data, stack.data)
    t = read_stack(p, entry="entry0")
    np.testing.assert_array_equal(t.data, image.data)


def test_dataspace_claiming_more_than_the_file_stores_is_refused(tmp_path):
    """A corrupted dataspace can claim any size; HDF5 returns fill values for chunks never written, so the
    claim is checked against the stored bytes before anything is read (a 30 kB file asking for 5 GB)."""
    path = tmp_path / "s.hdf5"
    write_nxstxm(path, _stack())
    with h5py.File(path, "r+") as f:
        grp = f["entry1/counter0"]
        del grp["data"]
        grp.create_dataset("data", shape=(6, 12000, 14000), dtype="uint16", chunks=(1, 1000, 1000))
    with pytest.raises(CeimapInputError, match=r"/entry1/counter0/data claims shape \(6, 12000, 14000\) "
                                               r"\(2016000000 bytes\) but the file stores 0 bytes"):
        read_stack(path)


def test_gzip_data_may_expand_within_deflate_bound(tmp_path):
    """Constant counts compress several hundredfold; deflate's bound (1032) still admits them."""
    st = _stack(n_e=4, ny=200, nx=210)
    st.data[:] = 500.0
    path = tmp_path / "flat.hdf5"
    write_nxstxm(path, st)
    with h5py.File(path, "r") as f:
        ds = f["entry1/counter0/data"]
        assert ds.size * ds.dtype.itemsize / ds.id.get_storage_size() > 50
    np.testing.assert_array_equal(read_stack(path).data, 500.0)
