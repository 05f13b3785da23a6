"""Bounded TIFF reading: the IFD chain walk, layout-tag checks, claimed sizes against stored bytes, log capture."""

import logging
import struct
import warnings

import numpy as np
import pytest
import tifffile

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io.tiff import (
    check_page_data,
    library_messages,
    open_tiff,
    read_tiff_image,
    tiff_page_offsets,
)


def _ifd_pointer_offsets(path):
    """Byte positions of the 'next IFD' pointers of a classic little-endian TIFF, in chain order."""
    data = path.read_bytes()
    assert data[:4] == b"II*\x00"
    pointers, offset = [], struct.unpack("<I", data[4:8])[0]
    while offset:
        n = struct.unpack("<H", data[offset: offset + 2])[0]
        at = offset + 2 + 12 * n
        pointers.append((offset, at))
        offset = struct.unpack("<I", data[at: at + 4])[0]
    return pointers


def _write_pages(path, frames):
    """One IFD per frame (tifffile writes a small contiguous stack with one IFD)."""
    with tifffile.TiffWriter(path) as tif:
        for frame in frames:
            tif.write(frame, contiguous=False)


def _set_u32(path, at, value):
    data = bytearray(path.read_bytes())
    data[at: at + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("bigtiff", [False, True])
def test_page_offsets_of_a_valid_stack(tmp_path, bigtiff):
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7), bigtiff=bigtiff)
    offsets, problem = tiff_page_offsets(p)
    with tifffile.TiffFile(p) as tif:
        assert offsets == [page.offset for page in tif.pages]
    assert len(offsets) == 5 and problem is None


def test_a_chain_that_loops_is_refused(tmp_path):
    p = tmp_path / "loop.tif"
    _write_pages(p, np.zeros((3, 4, 4), np.uint8))
    (first, _), _, (_, last_pointer) = _ifd_pointer_offsets(p)
    _set_u32(p, last_pointer, first)  # the last page points back to the first
    with pytest.raises(CeimapInputError, match=r"loops back to page 0 .* after page 2"):
        tiff_page_offsets(p)


def test_a_later_page_outside_the_file_ends_the_chain_with_a_warning(tmp_path):
    p = tmp_path / "dangling.tif"
    _write_pages(p, np.ones((2, 4, 4), np.uint8))
    _, (_, last_pointer) = _ifd_pointer_offsets(p)
    _set_u32(p, last_pointer, 10**9)
    offsets, problem = tiff_page_offsets(p)
    assert len(offsets) == 2 and "outside the" in problem
    with pytest.warns(UserWarning, match="the TIFF has problems"):
        image = read_tiff_image(p)
    assert image.shape == (2, 4, 4)


@pytest.mark.parametrize("data, words", [
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "does not start with II or MM"),
    (b"II\x2c\x00" + bytes(40), "unknown TIFF version 44"),
    (b"II*\x00\x00\x00\x00\x00", "points to no image directory"),
    (b"II*\x00\xff\xff\x00\x00" + bytes(20), "outside the 28-byte file"),
])
def test_headers_that_are_not_tiff_are_refused(tmp_path, data, words):
    p = tmp_path / "x.tif"
    p.write_bytes(data)
    with pytest.raises(CeimapInputError, match=words):
        tiff_page_offsets(p, "SEM image")


def test_a_corrupted_layout_tag_of_the_first_page_is_refused(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.ones((8, 8), np.uint8))
    data = bytearray(p.read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first: first + 2])[0]
    for i in range(n):
        entry = first + 2 + 12 * i
        if struct.unpack("<H", data[entry: entry + 2])[0] == 273:  # StripOffsets
            data[entry + 2: entry + 4] = struct.pack("<H", 99)  # no such field type
    p.write_bytes(bytes(data))
    with pytest.raises(CeimapInputError, match=r"tag 273 \(StripOffsets\) has the invalid field type 99"):
        tiff_page_offsets(p)


def test_claimed_size_beyond_the_stored_bytes_is_refused(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.ones((8, 8), np.uint8))  # 64 bytes, uncompressed
    with tifffile.TiffFile(p) as tif:
        page = tif.pages.first
        check_page_data(page, p, "image")  # as written: fine
        check_page_data(page, p, "stack", shape=(1, 8, 8))
        with pytest.raises(CeimapInputError, match=r"claims 9 × 8 × 8 values \(576 bytes\) but the file stores"):
            check_page_data(page, p, "stack", shape=(9, 8, 8))


def test_compressed_pages_may_expand_up_to_their_codec_bound(tmp_path):
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, np.zeros((512, 512), np.uint8), compression="zlib")  # 256 kB stored in ~300 bytes
    with tifffile.TiffFile(p) as tif:
        page = tif.pages.first
        stored = sum(page.databytecounts)
        assert 512 * 512 / stored > 100
        check_page_data(page, p, "image")
    np.testing.assert_array_equal(read_tiff_image(p), 0)


def test_library_messages_are_gathered_and_the_logger_restored():
    logger = logging.getLogger("tifffile")
    propagate, level = logger.propagate, logger.level
    with library_messages("tifffile") as log:
        for i in range(1000):
            logger.error("page %d is broken", i)
    assert log.count == 1000
    assert log.summary() == "page 0 is broken; page 1 is broken; page 2 is broken and 997 more"
    assert (logger.propagate, logger.level) == (propagate, level)
    assert log not in logger.handlers


def test_open_tiff_turns_library_errors_into_one_input_error(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.ones((8, 8), np.uint8))
    with pytest.raises(CeimapInputError, match=r"t.tif: not a readable SEM image \(RuntimeError: boom\)"):
        with open_tiff(p, "SEM image"):
            raise RuntimeError("boom")


def test_read_tiff_image_of_a_valid_file_says_nothing(tmp_path):
    p = tmp_path / "classes.tif"
    labels = np.random.default_rng(0).integers(0, 5, (30, 40)).astype(np.uint8)
    tifffile.imwrite(p, labels, compression="zlib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_tiff_image(p), labels)
    with pytest.raises(CeimapInputError, match="not found"):
        read_tiff_image(tmp_path / "missing.tif")
