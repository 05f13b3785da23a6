"""aXis2000 .ncb + .dat: round trips with an independent writer written from the format description."""

import numpy as np
import pytest

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_stack


def write_ncb(base, data, energies, x=(0.0, 1.0), y=(0.0, 1.0), scale=-1.0, dwell=None, extra_lines=""):
    """Independent writer: .dat text + raw little-endian .ncb (x fastest, then y, then energy)."""
    ne, ny, nx = data.shape
    lines = [f"\t{nx}\t{ny}\t{scale:.6f}", f"\t{x[0]:.6f}\t{x[1]:.6f}", f"\t{y[0]:.6f}\t{y[1]:.6f}", f"\t{ne}"]
    lines += [f"\t{e:.6f}" for e in energies]
    if dwell is not None:
        lines += [f"image{i + 1}\t{e:.6f}\t{d:.6f}" for i, (e, d) in enumerate(zip(energies, dwell))]
    base.with_suffix(".dat").write_text("\n".join(lines) + "\n" + extra_lines)
    if scale < 0:
        data.astype("<f4").tofile(base.with_suffix(".ncb"))
    else:
        np.round(data * scale).astype("<i2").tofile(base.with_suffix(".ncb"))
    return base.with_suffix(".ncb")


def test_float32_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(0.0, 2.0, (5, 6, 8)).astype(np.float32)
    e = np.linspace(160.0, 180.0, 5)
    p = write_ncb(tmp_path / "s_stack", data, e, x=(2.0, 2.0 + 0.05 * 7), y=(-1.0, -1.0 + 0.05 * 5),
                  dwell=[1.0, 1.0, 2.0, 2.0, 2.0])
    s = read_stack(p)
    np.testing.assert_array_equal(s.data, data.astype(np.float64))
    np.testing.assert_allclose(s.energies_ev, e)
    assert s.pixel_size_nm == pytest.approx(50.0)
    assert (s.origin_x_nm, s.origin_y_nm) == pytest.approx((2000.0, -1000.0))
    np.testing.assert_allclose(s.dwell_ms, [1, 1, 2, 2, 2])
    assert s.kind == "od" and s.edge == "S-L"
    assert s.metadata["companions"] == [str(tmp_path / "s_stack.dat")]


def test_int16_scaled_counts_reversed_x_unsorted_energies(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3000, (3, 4, 5)).astype(float) / 10.0  # one decimal: int16 × 10 is exact
    e = np.array([855.0, 850.0, 860.0])
    p = write_ncb(tmp_path / "ni", data, e, x=(1.0, 1.0 - 0.03 * 4), y=(0.0, 0.03 * 3), scale=10.0)
    s = read_stack(tmp_path / "ni.dat")  # the .dat finds its .ncb too
    order = np.argsort(e)
    np.testing.assert_allclose(s.data, data[order][:, :, ::-1], atol=1e-12)
    np.testing.assert_allclose(s.energies_ev, [850.0, 855.0, 860.0])
    assert s.pixel_size_nm == pytest.approx(30.0)
    assert s.metadata["flipped_axes"] == ["x"] and s.edge == "Ni-L"
    assert s.dwell_ms is None and s.source == str(p)


def _err(path, *words):
    with pytest.raises(CeimapInputError) as err:
        read_stack(path)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_dat(tmp_path):
    p = write_ncb(tmp_path / "a", np.ones((2, 3, 3)), [850.0, 851.0])
    p.with_suffix(".dat").unlink()
    _err(p, "a.dat", "not found")


def test_ncb_of_wrong_size(tmp_path):
    p = write_ncb(tmp_path / "a", np.ones((2, 3, 3)), [850.0, 851.0])
    p.write_bytes(p.read_bytes()[:-4])
    _err(p, str(p), "68 bytes", "72 bytes")


def test_dat_with_too_few_energies(tmp_path):
    p = write_ncb(tmp_path / "a", np.ones((3, 3, 3)), [850.0, 851.0, 852.0])
    dat = p.with_suffix(".dat")
    lines = dat.read_text().splitlines()
    dat.write_text("\n".join(lines[:6]) + "\n")
    _err(p, str(dat), "lists 2 energies", "3")


def test_dat_with_bad_number(tmp_path):
    p = write_ncb(tmp_path / "a", np.ones((2, 3, 3)), [850.0, 851.0])
    dat = p.with_suffix(".dat")
    dat.write_text(dat.read_text().replace("851.000000", "85l.0"))
    _err(p, str(dat), "line 6", "85l.0")


def test_scale_zero_and_bad_header(tmp_path):
    p = write_ncb(tmp_path / "a", np.ones((2, 3, 3)), [850.0, 851.0])
    dat = p.with_suffix(".dat")
    dat.write_text(dat.read_text().replace("-1.000000", "0", 1))
    _err(p, str(dat), "scale")
    dat.write_text("3 3\n")
    _err(p, str(dat), "too short")


def test_reads_what_mantis_writes(tmp_path):
    """Optional cross-check against MANTiS's own .ncb writer (skipped when mantis-xray is absent)."""
    plugin = pytest.importorskip("mantis_xray.file_plugins.file_ncb")

    class MantisStack:  # the attributes MANTiS's writer uses; its data are (x, y, energy)
        pass

    s = MantisStack()
    nx, ny, ne = 5, 3, 4
    s.absdata = np.random.default_rng(0).integers(100, 2000, (nx, ny, ne)).astype(float)
    s.n_cols, s.n_rows, s.n_ev = nx, ny, ne
    s.ev = np.array([850.0, 851.0, 852.0, 853.0])
    s.x_dist, s.y_dist = np.arange(nx) * 0.05, np.arange(ny) * 0.05
    s.data_dwell = np.ones(ne)
    plugin.write(str(tmp_path / "m.ncb"), s, "stack")
    r = read_stack(tmp_path / "m.ncb")
    np.testing.assert_allclose(r.data, np.transpose(s.absdata, (2, 1, 0)))
    np.testing.assert_allclose(r.energies_ev, s.ev)
    assert r.pixel_size_nm == pytest.approx(50.0)
