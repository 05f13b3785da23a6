"""ALS .hdr + .xim stacks: hand-written headers and frames, the real COSMIC example, refusals."""

import numpy as np
import pytest

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_stack
from ceimap.segment.io.als import parse_hdr


def _points(values):
    return "(" + ", ".join([str(len(values))] + [f"{v:.4f}" for v in values]) + ")"


def write_als(folder, frames, energies, frame_numbers=None, x0=-0.5, y0=7.25, step=0.0272, dwell=2.5,
              listed=None, per_frame=False, regions=None, channels=("V/F",), base="scan", scan_type="NEXAFS Image Scan"):
    """Independent writer of an SDF header + tab-separated integer frames (with a trailing tab, as ALS)."""
    ne, ny, nx = frames.shape
    numbers = list(range(ne)) if frame_numbers is None else list(frame_numbers)
    listed = energies if listed is None else listed
    x = x0 + step * np.arange(nx)
    y = y0 + step * np.arange(ny)
    chans = ", ".join('{ Name = "%s"; Unit = "counts";}' % c for c in channels)
    hdr = (
        f'ScanDefinition = {{ Label = "{base}.hdr"; Type = "{scan_type}"; Flags = "Image Stack"; Dwell = {dwell};\n'
        f"\tRegions = (1,\n{{\n\t\t\tPAxis = {{ Name = \"Sample X\"; Unit = \"um\"; Min = {x[0]}; Max = {x[-1]}; Dir = 1;\n"
        f"\t\t\t\tPoints = {_points(x)};\n}};\n\n"
        f"\t\t\tQAxis = {{ Name = \"Sample Y\"; Unit = \"um\"; Min = {y[0]}; Max = {y[-1]}; Dir = 1;\n"
        f"\t\t\t\tPoints = {_points(y)};\n}};\n}});\n\n"
        f"\tStackAxis = {{ Name = \"Energy\"; Unit = \"eV\"; Min = 840; Max = 880; Dir = 1;\n"
        f"\t\tPoints = {_points(listed)};\n}};\n\n"
        f"\tChannels = ({len(channels)},\n{chans});\n}};\n"
        ' Time = "2018 November 10 23:57:34"; BeamFeedback = false;\n'
    )
    if regions is not None:
        regs = ",\n".join("{ StartEnergy = %g; EndEnergy = %g; Range = 1; Step = %g; Points = %d; DwellTime = 4;}"
                          % (a, a + s * (n - 1), s, n) for a, s, n in regions)
        hdr += f"ImageScan = {{ ScanType = \"Image\"; EnergyRegions = ({len(regions)},\n{regs});\n}};\n"
    if per_frame:
        for k, e in zip(numbers, energies):
            hdr += f"Image{k:03d}_0 = {{StorageRingCurrent = 0.00; Energy = {e:.2f}; Time = \"t\";}};\n"
    (folder / f"{base}.hdr").write_text(hdr)
    for k, frame in zip(numbers, frames):
        for ci, _ in enumerate(channels):
            text = "\n".join("\t".join(str(int(v) + ci) for v in row) + "\t" for row in frame)
            (folder / f"{base}_{'abc'[ci]}{k:03d}.xim").write_text(text + "\n")
    return folder / f"{base}.hdr"


def _frames(ne=3, ny=4, nx=6, seed=0):
    return np.random.default_rng(seed).integers(1000, 30000, (ne, ny, nx)).astype(float)


def test_parse_hdr_nested():
    h = parse_hdr('A = { B = "x y"; C = (2, 1.5, -2e3); D = (1, { E = 4;}); }; F = 7;')
    assert h == {"A": {"B": "x y", "C": [2, 1.5, -2000.0], "D": [1, {"E": 4}]}, "F": 7}


def test_full_stack_orientation_and_axes(tmp_path):
    frames = _frames()
    e = np.array([850.0, 852.0, 855.0])
    hdr = write_als(tmp_path, frames, e)
    s = read_stack(hdr)
    np.testing.assert_array_equal(s.data, frames)  # row 0 of the file is the first Sample Y point
    np.testing.assert_allclose(s.energies_ev, e)
    assert s.pixel_size_nm == pytest.approx(27.2)
    assert (s.origin_x_nm, s.origin_y_nm) == pytest.approx((-500.0, 7250.0))
    np.testing.assert_allclose(s.dwell_ms, 2.5)
    assert s.kind == "counts" and s.edge == "Ni-L"
    assert s.metadata["energy_pairing"] == "frame number indexes the StackAxis energies"
    assert len(s.metadata["companions"]) == 3


def test_frames_not_from_zero_paired_by_count(tmp_path):
    frames = _frames()
    e = np.array([850.0, 852.0, 855.0])
    hdr = write_als(tmp_path, frames, e, frame_numbers=[2, 5, 9])
    s = read_stack(hdr)
    np.testing.assert_array_equal(s.data, frames)
    np.testing.assert_allclose(s.energies_ev, e)
    assert s.metadata["frame_numbers"] == [2, 5, 9]
    assert "in order" in s.metadata["energy_pairing"]


def test_subset_of_frames_indexes_listed_energies(tmp_path):
    frames = _frames(ne=2)
    listed = np.array([850.0, 851.0, 852.0, 853.0])
    hdr = write_als(tmp_path, frames, listed[[1, 3]], frame_numbers=[1, 3], listed=listed)
    s = read_stack(hdr)
    np.testing.assert_allclose(s.energies_ev, [851.0, 853.0])
    np.testing.assert_array_equal(s.data, frames)


def test_energy_regions_pairing(tmp_path):
    # like the COSMIC file, without per-frame records: frames 3 and 19 of a 34-energy scan
    frames = _frames(ne=2)
    hdr = write_als(tmp_path, frames, [853.0, 857.75], frame_numbers=[3, 19],
                    regions=[(850, 1, 4), (854, 0.25, 25), (861, 1, 5)])
    s = read_stack(hdr)
    np.testing.assert_allclose(s.energies_ev, [853.0, 857.75])
    assert s.metadata["energy_pairing"] == "frame number indexes the ImageScan EnergyRegions"


def test_per_frame_records_win_and_unsorted_frames_are_sorted(tmp_path):
    frames = _frames()
    e = np.array([860.0, 850.0, 855.0])  # frame 0 at the highest energy
    hdr = write_als(tmp_path, frames, e, per_frame=True, listed=np.sort(e))
    s = read_stack(hdr)
    np.testing.assert_allclose(s.energies_ev, [850.0, 855.0, 860.0])
    np.testing.assert_array_equal(s.data, frames[[1, 2, 0]])
    assert s.metadata["frame_numbers"] == [1, 2, 0]


def test_channel_by_name_and_xim_path(tmp_path):
    frames = _frames()
    hdr = write_als(tmp_path, frames, [850.0, 852.0, 855.0], channels=("PMT", "Diode"))
    s = read_stack(hdr, channel="Diode")
    np.testing.assert_array_equal(s.data, frames + 1)
    t = read_stack(tmp_path / "scan_a001.xim")
    np.testing.assert_array_equal(t.data, frames)


def _err(path, *words, **kw):
    with pytest.raises(CeimapInputError) as err:
        read_stack(path, **kw)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg


def test_unpairable_frames_refused(tmp_path):
    hdr = write_als(tmp_path, _frames(), [850.0, 852.0, 855.0], frame_numbers=[4, 7, 8], listed=[850.0, 852.0])
    _err(hdr, str(hdr), "cannot pair 3 frame", "2 energies")


def test_frame_of_wrong_shape(tmp_path):
    hdr = write_als(tmp_path, _frames(), [850.0, 852.0, 855.0])
    bad = tmp_path / "scan_a001.xim"
    bad.write_text("\n".join(bad.read_text().splitlines()[:-1]) + "\n")
    _err(hdr, str(bad), "3 rows", "4 × 6")


def test_frame_with_garbage(tmp_path):
    hdr = write_als(tmp_path, _frames(), [850.0, 852.0, 855.0])
    bad = tmp_path / "scan_a002.xim"
    bad.write_text(bad.read_text().replace("\t", "\tx", 1))
    _err(hdr, str(bad), "non-numeric")


def test_no_frames_and_missing_header_and_bad_header(tmp_path):
    hdr = write_als(tmp_path, _frames(), [850.0, 852.0, 855.0])
    for f in tmp_path.glob("*.xim"):
        f.unlink()
    _err(hdr, str(hdr), "no frame files")
    hdr.write_text("ScanDefinition = { Type = \"NEXAFS Image Scan\"; Regions = (1, { PAxis = { Points = (2, 1")
    _err(hdr, str(hdr), "header")
    _err(tmp_path / "other.hdr", "not found")


def test_line_scan_refused(tmp_path):
    hdr = write_als(tmp_path, _frames(), [850.0, 852.0, 855.0], scan_type="NEXAFS Line Scan")
    _err(hdr, str(hdr), "Line Scan", "not an image stack")


def test_real_cosmic_pairing(realdata_dir):
    folder = realdata_dir / "als_cosmic_ni_l3"
    s = read_stack(folder / "stxm-scan.hdr")
    assert s.data.shape == (2, 120, 120)
    np.testing.assert_allclose(s.energies_ev, [853.00, 857.75])
    assert s.pixel_size_nm == pytest.approx(27.18, abs=0.01)
    assert s.edge == "Ni-L" and s.kind == "counts"
    assert s.metadata["frame_numbers"] == [3, 19]
    np.testing.assert_array_equal(s.data[0], np.loadtxt(folder / "stxm-scan_a003.xim"))
    np.testing.assert_array_equal(s.data[1], np.loadtxt(folder / "stxm-scan_a019.xim"))
    np.testing.assert_allclose(s.dwell_ms, 4.0)
    assert s.origin_x_nm == pytest.approx(-618.0) and s.origin_y_nm == pytest.approx(7249.6)


def test_single_image_without_frame_number(tmp_path):
    frames = _frames(ne=1)
    hdr = write_als(tmp_path, frames, [852.0], frame_numbers=[0])
    (tmp_path / "scan_a000.xim").rename(tmp_path / "scan_a.xim")
    s = read_stack(hdr)
    assert s.data.shape == (1, 4, 6) and s.metadata["energy_pairing"] == "single image"
    np.testing.assert_array_equal(s.data, frames)
    np.testing.assert_allclose(s.energies_ev, [852.0])


def test_header_nested_too_deep_is_a_syntax_error():
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        parse_hdr("A = " + "{B = " * 5000)  # a RecursionError before


def test_frame_too_small_for_the_header_is_refused_before_parsing(tmp_path):
    frames = np.random.default_rng(0).poisson(1000, (2, 6, 7)).astype(float)
    hdr = write_als(tmp_path, frames, [850.0, 852.0])
    (tmp_path / "scan_a001.xim").write_text("1\t2\n")
    with pytest.raises(CeimapInputError, match=r"scan_a001.xim: frame file has 4 bytes, too few for the 6 × 7"):
        read_stack(hdr)
