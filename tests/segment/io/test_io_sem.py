"""SEM TIFF reader and writer: every pixel-size source, RGB, and refusals."""

import numpy as np
import pytest
import tifffile

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_sem, write_sem_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_keeps_values_and_pixel_size(tmp_path, dtype):
    rng = np.random.default_rng(1)
    img = (rng.random((40, 56)) * 200).astype(dtype)
    p = tmp_path / "sem.tif"
    write_sem_tiff(p, img, 7.3)
    with tifffile.TiffFile(p) as tif:
        assert tif.pages[0].dtype == np.dtype(dtype)
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.0073)
        assert int(tif.pages[0].tags["ResolutionUnit"].value) == 3  # centimetre
    s = read_sem(p)
    np.testing.assert_array_equal(s.image, img.astype(np.float32))
    assert s.image.dtype == np.float32
    assert s.pixel_size_nm == pytest.approx(7.3, rel=1e-6)
    assert s.pixel_size_source == "tiff-resolution" and s.source == str(p)


def test_float64_written_as_float32(tmp_path):
    p = tmp_path / "f64.tif"
    write_sem_tiff(p, np.linspace(0, 1, 30 * 20).reshape(30, 20), 5.0)
    with tifffile.TiffFile(p) as tif:
        assert tif.pages[0].dtype == np.float32


def test_user_pixel_size_overrides(tmp_path):
    p = tmp_path / "sem.tif"
    write_sem_tiff(p, np.zeros((10, 10), np.uint8), 7.3)
    s = read_sem(p, pixel_size_nm=4.0)
    assert s.pixel_size_nm == 4.0 and s.pixel_size_source == "user"


def test_imagej_unit_with_unitless_resolution(tmp_path):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint16), imagej=True, resolution=(1 / 0.0125, 1 / 0.0125),
                     metadata={"unit": "micron"})
    s = read_sem(p)
    assert s.pixel_size_nm == pytest.approx(12.5, rel=1e-6) and s.pixel_size_source == "imagej"


def test_ome_physical_size(tmp_path):
    p = tmp_path / "x.ome.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 3.25, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 3.25, "PhysicalSizeYUnit": "nm"})
    s = read_sem(p)
    assert s.pixel_size_nm == pytest.approx(3.25) and s.pixel_size_source == "ome"


def test_fei_pixel_width_beats_default_dpi(tmp_path):
    p = tmp_path / "fei.tif"
    header = "[User]\nDate=01/01/2024\n[Scan]\nPixelWidth=4.5e-009\nPixelHeight=4.5e-009\n[Beam]\nHV=5000\n"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), resolution=(72, 72), resolutionunit="INCH",
                     extratags=[(34682, "s", 0, header, True)])
    s = read_sem(p)
    assert s.pixel_size_nm == pytest.approx(4.5) and s.pixel_size_source == "fei"


def test_default_dpi_is_not_a_calibration(tmp_path):
    p = tmp_path / "dpi.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(CeimapInputError) as err:
        read_sem(p)
    assert str(p) in str(err.value) and "--sem-pixel-nm" in str(err.value)


def test_no_pixel_size_anywhere(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.float32))
    with pytest.raises(CeimapInputError) as err:
        read_sem(p)
    assert str(p) in str(err.value) and "pixel size" in str(err.value)


def test_rgb_converted_to_grey_with_warning(tmp_path):
    p = tmp_path / "rgb.tif"
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 0] = 100
    rgb[..., 1] = 200
    write = dict(photometric="rgb", resolution=(1e7 / 10.0, 1e7 / 10.0), resolutionunit="CENTIMETER")
    tifffile.imwrite(p, rgb, **write)
    with pytest.warns(UserWarning, match="grey"):
        s = read_sem(p)
    np.testing.assert_allclose(s.image, 0.2125 * 100 + 0.7154 * 200, rtol=1e-6)
    assert s.pixel_size_nm == pytest.approx(10.0)


def test_grey_stored_as_rgb_needs_no_conversion(tmp_path):
    p = tmp_path / "greyrgb.tif"
    g = np.arange(42, dtype=np.uint8).reshape(6, 7)
    tifffile.imwrite(p, np.stack([g, g, g], -1), photometric="rgb")
    s = read_sem(p, pixel_size_nm=5)
    np.testing.assert_array_equal(s.image, g)


def test_stack_is_not_an_sem_image(tmp_path):
    p = tmp_path / "vol.tif"
    tifffile.imwrite(p, np.zeros((5, 8, 9), np.uint8))
    with pytest.raises(CeimapInputError) as err:
        read_sem(p, pixel_size_nm=5)
    assert str(p) in str(err.value) and "2-D" in str(err.value)


def test_not_a_tiff(tmp_path):
    p = tmp_path / "sem.tif"
    p.write_bytes(b"GIF89a not a tiff at all")
    with pytest.raises(CeimapInputError) as err:
        read_sem(p, pixel_size_nm=5)
    assert str(p) in str(err.value) and "TIFF" in str(err.value)


def test_truncated_tiff(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.random.default_rng(0).random((200, 200)).astype(np.float32))
    bad = tmp_path / "cut.tif"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CeimapInputError) as err:
        read_sem(bad, pixel_size_nm=5)
    assert str(bad) in str(err.value)


def test_missing_file_and_bad_user_size(tmp_path):
    with pytest.raises(CeimapInputError, match="not found"):
        read_sem(tmp_path / "nope.tif")
    p = tmp_path / "sem.tif"
    write_sem_tiff(p, np.zeros((4, 4), np.uint8), 5.0)
    with pytest.raises(CeimapInputError, match="positive"):
        read_sem(p, pixel_size_nm=-1)


def test_anisotropic_pixels_refused(tmp_path):
    p = tmp_path / "aniso.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), resolution=(1e6, 1.2e6), resolutionunit="CENTIMETER")
    with pytest.raises(CeimapInputError) as err:
        read_sem(p)
    assert str(p) in str(err.value) and "square" in str(err.value)


def test_imagej_nm_unit(tmp_path):
    p = tmp_path / "ij_nm.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), imagej=True, resolution=(0.25, 0.25),
                     metadata={"unit": "nm"})
    s = read_sem(p)
    assert s.pixel_size_nm == pytest.approx(4.0) and s.pixel_size_source == "imagej"


def test_zeiss_pixel_size(tmp_path):
    p = tmp_path / "zeiss.tif"
    text = "0\r\n\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 2.233 nm\r\nAP_WD\r\nWD = 5.0 mm\r\n"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint8), extratags=[(34118, "s", 0, text, True)])
    s = read_sem(p)
    assert s.pixel_size_nm == pytest.approx(2.233) and s.pixel_size_source == "zeiss"


def test_fei_data_bar_removed(tmp_path):
    p = tmp_path / "fei_bar.tif"
    img = np.zeros((10, 9), np.uint8)
    img[8:] = 255  # the data bar
    header = "[Image]\nResolutionX=9\nResolutionY=8\n[Scan]\nPixelWidth=2e-9\nPixelHeight=2e-9\n"
    tifffile.imwrite(p, img, extratags=[(34682, "s", 0, header, True)])
    with pytest.warns(UserWarning, match="data bar"):
        s = read_sem(p)
    assert s.image.shape == (8, 9) and s.image.max() == 0
    assert s.pixel_size_nm == pytest.approx(2.0)
