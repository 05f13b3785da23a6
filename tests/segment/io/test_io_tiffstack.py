"""Multipage TIFF + sidecar energy list, and the read_stack dispatcher."""

import h5py
import numpy as np
import pytest
import tifffile

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_stack, write_nxstxm, write_tiff_stack
from ceimap.segment.stack import Stack


def _stack(kind="od"):
    rng = np.random.default_rng(2)
    data = rng.uniform(0.0, 2.0, (4, 5, 6)) if kind == "od" else rng.poisson(900, (4, 5, 6)).astype(float)
    return Stack(data=data, energies_ev=np.array([160.0, 163.5, 164.0, 180.25]), pixel_size_nm=42.0,
                 kind=kind, edge="S-L")


def test_write_read_round_trip(tmp_path):
    s = _stack()
    p = tmp_path / "s_l.tif"
    sidecar = write_tiff_stack(p, s)
    assert sidecar == tmp_path / "s_l.energies.txt"
    r = read_stack(p)
    np.testing.assert_array_equal(r.data, s.data.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(r.energies_ev, s.energies_ev)
    assert r.pixel_size_nm == pytest.approx(42.0, rel=1e-6)
    assert r.kind == "od" and r.edge == "S-L"
    with tifffile.TiffFile(p) as tif:
        assert tif.series[0].dtype == np.float32 and len(tif.pages) == 4


def test_plain_tiff_with_txt_sidecar_unsorted_and_comments(tmp_path):
    frames = np.random.default_rng(0).integers(0, 60000, (3, 4, 5)).astype(np.uint16)
    p = tmp_path / "stack.tiff"
    tifffile.imwrite(p, frames, photometric="minisblack")
    (tmp_path / "stack.txt").write_text("# energies in eV\n852.0\n848.0\n\n870.0  # post edge\n")
    r = read_stack(p, pixel_size_nm=30.0)
    np.testing.assert_allclose(r.energies_ev, [848.0, 852.0, 870.0])
    np.testing.assert_array_equal(r.data, frames[[1, 0, 2]])
    assert r.kind == "counts" and r.pixel_size_nm == 30.0 and r.edge == "Ni-L"


def test_missing_sidecar(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 3), np.float32), photometric="minisblack")
    with pytest.raises(CeimapInputError) as err:
        read_stack(p)
    assert str(p) in str(err.value) and "stack.energies.txt" in str(err.value)


def test_frame_count_mismatch_and_bad_line(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 3), np.float32), photometric="minisblack", resolution=(1e5, 1e5), resolutionunit="CENTIMETER")
    side = tmp_path / "stack.energies.txt"
    side.write_text("850\n851\n852\n")
    with pytest.raises(CeimapInputError, match="2 frame.*3 energies") as err:
        read_stack(p)
    assert str(p) in str(err.value)
    side.write_text("850\nabc\n")
    with pytest.raises(CeimapInputError) as err:
        read_stack(p)
    assert str(side) in str(err.value) and "line 2" in str(err.value)


def test_uncalibrated_tiff_stack(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 3), np.float32), photometric="minisblack")
    (tmp_path / "stack.txt").write_text("850\n851\n")
    with pytest.raises(CeimapInputError, match="pixel size") as err:
        read_stack(p)
    assert str(p) in str(err.value)


# ------------------------------------------------------------------------------------------- dispatcher

def test_hdf5_content_wins_over_extension(tmp_path):
    p = tmp_path / "scan.stack"
    s = _stack(kind="counts")
    write_nxstxm(p, s)
    r = read_stack(p)
    np.testing.assert_array_equal(r.data, s.data)


def test_unknown_format_missing_and_folder(tmp_path):
    p = tmp_path / "scan.xyz"
    p.write_text("nothing")
    with pytest.raises(CeimapInputError) as err:
        read_stack(p)
    assert str(p) in str(err.value) and "unknown STXM stack format" in str(err.value) and ".ncb" in str(err.value)
    with pytest.raises(CeimapInputError, match="not found"):
        read_stack(tmp_path / "none.hdf5")
    with pytest.raises(CeimapInputError, match="folder"):
        read_stack(tmp_path)


def test_wrong_option_for_format(tmp_path):
    p = tmp_path / "a.hdf5"
    write_nxstxm(p, _stack(kind="counts"))
    with pytest.raises(TypeError, match="channel"):
        read_stack(p, channel=1)


def test_kind_guess_rule():
    from ceimap.segment.io._assemble import guess_kind
    rng = np.random.default_rng(0)
    assert guess_kind(rng.poisson(50, (2, 3, 3)).astype(np.float64)) == "counts"  # integral floats
    assert guess_kind(rng.uniform(0, 2.5, (2, 3, 3))) == "od"
    assert guess_kind(rng.uniform(100, 2000, (2, 3, 3))) == "counts"  # normalised counts: large
    assert guess_kind(rng.integers(0, 3, (2, 3, 3))) == "counts"  # integer dtype
    assert guess_kind(np.full((1, 2, 2), np.nan)) == "counts"


def test_kind_override(tmp_path):
    p = tmp_path / "a.hdf5"
    write_nxstxm(p, _stack(kind="counts"))
    assert read_stack(p, kind="od").kind == "od"
    with h5py.File(p, "r") as f:
        assert f["entry1/counter0/data"].attrs["units"] == b"counts"


def test_frames_stored_as_contiguous_samples(tmp_path):
    # some tools store a 3-energy stack as one RGB page (y, x, sample)
    frames = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    p = tmp_path / "rgb_stack.tif"
    tifffile.imwrite(p, np.moveaxis(frames, 0, -1), photometric="rgb")
    (tmp_path / "rgb_stack.txt").write_text("850\n851\n852\n")
    r = read_stack(p, pixel_size_nm=30.0)
    np.testing.assert_array_equal(r.data, frames)


def test_hdf4_file_named_hdf(tmp_path):
    p = tmp_path / "old.hdf"
    p.write_bytes(b"\x0e\x03\x13\x01" + bytes(100))
    with pytest.raises(CeimapInputError) as err:
        read_stack(p)
    assert str(p) in str(err.value) and "HDF4" in str(err.value)
