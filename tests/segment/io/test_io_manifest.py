"""LAMELLA.toml manifests and annotation images."""

import numpy as np
import pytest
import tifffile

from ceimap.segment.edges import EDGES, edge_from_energies
from ceimap.segment.errors import CeimapInputError
from ceimap.segment.io import read_annotations, read_lamella, write_nxstxm, write_sem_tiff
from ceimap.segment.stack import Stack


def _make(folder, manifest_text=None, ann=None):
    rng = np.random.default_rng(0)
    write_sem_tiff(folder / "sem.tif", rng.integers(0, 255, (20, 30)).astype(np.uint8), 6.0)
    ni = Stack(rng.poisson(800, (4, 5, 6)).astype(float), np.array([848.0, 850.0, 852.0, 870.0]), 40.0)
    write_nxstxm(folder / "ni_l.hdf5", ni)
    # S-L as aXis2000 .ncb + .dat
    s = rng.uniform(0, 1, (3, 5, 6)).astype("<f4")
    s.tofile(folder / "s_l.ncb")
    (folder / "s_l.dat").write_text("6 5 -1\n0 0.2\n0 0.16\n3\n160\n164\n175\n")
    if ann is None:
        ann = np.zeros((20, 30), np.uint8)
        ann[2:5, 3:9] = 1
        ann[10:12, 10:20] = 3
    tifffile.imwrite(folder / "annotations.tif", ann)
    if manifest_text is None:
        manifest_text = MANIFEST
    m = folder / "lamella.toml"
    m.write_text(manifest_text)
    return m


MANIFEST = """
name = "charged"
sample = "one charge to 4.25 V"
annotations = "annotations.tif"

[sem]
path = "sem.tif"

[[stxm]]
edge = "Ni-L"
path = "ni_l.hdf5"

[[stxm]]
edge = "S-L"
path = "s_l.ncb"
kind = "od"
"""


def test_read_lamella(tmp_path):
    m = _make(tmp_path)
    lam = read_lamella(m)
    assert lam.name == "charged" and lam.sample == "one charge to 4.25 V"
    assert list(lam.stacks) == ["Ni-L", "S-L"]
    assert lam.stacks["Ni-L"].data.shape == (4, 5, 6) and lam.stacks["S-L"].kind == "od"
    assert lam.sem.pixel_size_nm == pytest.approx(6.0) and lam.sem.image.shape == (20, 30)
    assert lam.annotations_path == tmp_path / "annotations.tif"
    assert lam.manifest_path == m
    names = [p.name for p in lam.input_paths]
    assert names == ["lamella.toml", "sem.tif", "ni_l.hdf5", "s_l.ncb", "s_l.dat", "annotations.tif"]


def test_pixel_size_in_manifest_overrides(tmp_path):
    m = _make(tmp_path, MANIFEST.replace('path = "sem.tif"', 'path = "sem.tif"\npixel_size_nm = 4.5'))
    lam = read_lamella(m)
    assert lam.sem.pixel_size_nm == 4.5 and lam.sem.pixel_size_source == "user"


@pytest.mark.filterwarnings("ignore:.*unknown key")
@pytest.mark.parametrize("change, words", [
    (('name = "charged"\n', ""), ["missing key 'name'"]),
    (('[sem]\npath = "sem.tif"', '[sem]\nfile = "sem.tif"'), ["missing key 'sem.path'"]),
    (('path = "sem.tif"', 'path = "sem.tif"\npixel_size_nm = "5 nm"'), ["sem.pixel_size_nm", "number"]),
    (('path = "sem.tif"', 'path = "sem.tif"\npixel_size_nm = -5'), ["sem.pixel_size_nm", "positive"]),
    (('path = "ni_l.hdf5"', 'path = "missing.hdf5"'), ["stxm[0].path", "missing.hdf5", "does not exist"]),
    (('edge = "S-L"', 'edge = "Ni-L"'), ["'Ni-L' is listed twice", "stxm[1].edge"]),
    (('sample = "one charge to 4.25 V"', "sample = 3"), ["'sample' must be a string"]),
    (('edge = "Ni-L"', 'edge = "O-K"'), ["O-K", "Ni-L edge", "ni_l.hdf5"]),
    (('name = "charged"', 'name = "charged'), ["not valid TOML"]),
])
def test_manifest_errors(tmp_path, change, words):
    m = _make(tmp_path, MANIFEST.replace(*change, 1))
    with pytest.raises(CeimapInputError) as err:
        read_lamella(m)
    msg = str(err.value)
    assert str(m) in msg, msg
    for w in words:
        assert w in msg, msg


def test_no_stacks(tmp_path):
    m = _make(tmp_path, 'name = "a"\nsample = "b"\nstxm = []\n[sem]\npath = "sem.tif"\n')
    with pytest.raises(CeimapInputError, match="no stacks"):
        read_lamella(m)


def test_manifest_missing(tmp_path):
    with pytest.raises(CeimapInputError, match="not found"):
        read_lamella(tmp_path / "lamella.toml")


def test_unknown_key_warns(tmp_path):
    m = _make(tmp_path, MANIFEST.replace('path = "sem.tif"', 'path = "sem.tif"\npixelsize = 3'))
    with pytest.warns(UserWarning, match="sem.pixelsize"):
        read_lamella(m)


def test_annotations_wrong_shape_via_manifest(tmp_path):
    m = _make(tmp_path, ann=np.zeros((21, 30), np.uint8))
    with pytest.raises(CeimapInputError) as err:
        read_lamella(m)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "annotations.tif")) and "21×30" in msg and "20×30" in msg
    assert f"listed as 'annotations' in {m}" in msg


def test_error_in_listed_stack_names_file_and_key(tmp_path):
    m = _make(tmp_path)
    (tmp_path / "s_l.ncb").write_bytes(b"short")
    with pytest.raises(CeimapInputError) as err:
        read_lamella(m)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "s_l.ncb")) and "5 bytes" in msg
    assert f"listed as 'stxm[1].path' in {m}" in msg


def test_read_annotations_values_and_types(tmp_path):
    p = tmp_path / "a.tif"
    a = np.zeros((4, 5), np.int32)
    a[0, 0], a[1, 1] = 4, 2
    tifffile.imwrite(p, a)
    out = read_annotations(p, (4, 5))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)
    a[2, 2] = 7
    tifffile.imwrite(p, a)
    with pytest.raises(CeimapInputError) as err:
        read_annotations(p, (4, 5))
    assert str(p) in str(err.value) and "found 7" in str(err.value)
    tifffile.imwrite(p, np.full((4, 5), 1.5, np.float32))
    with pytest.raises(CeimapInputError, match="fractional"):
        read_annotations(p, (4, 5))
    tifffile.imwrite(p, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(CeimapInputError, match="single-channel"):
        read_annotations(p, (4, 5))
    with pytest.raises(CeimapInputError, match="not found"):
        read_annotations(tmp_path / "none.tif", (4, 5))


# ------------------------------------------------------------------------------------------------ edges

@pytest.mark.parametrize("energies, edge", [
    (np.linspace(845, 875, 40), "Ni-L"),
    (np.linspace(158, 185, 60), "S-L"),
    ([280.0, 284.5, 285.0, 320.0], "C-K"),
    (np.linspace(525, 560, 30), "O-K"),
    (np.linspace(635, 660, 30), "Mn-L"),
    (np.linspace(772, 798, 30), "Co-L"),
    (np.linspace(683, 698, 10), "F-K"),
    (np.linspace(130, 148, 10), "P-L"),
    ([10.0, 20.0], None),
    ([], None),
])
def test_edge_from_energies(energies, edge):
    assert edge_from_energies(energies) == edge


def test_edge_windows_do_not_overlap():
    edges = sorted(EDGES.values(), key=lambda e: e.min_ev)
    for a, b in zip(edges, edges[1:]):
        assert a.max_ev < b.min_ev, (a.name, b.name)
    for e in edges:
        assert e.min_ev <= e.onset_ev <= e.max_ev
