"""Tests of the napari plugin's contributions as plain functions (no Qt, no viewer).

Layer data tuples are also turned into real napari layers with ``Layer.create`` (napari's model, no Qt),
so a wrong keyword or shape fails here and not in a user's viewer.
"""

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from napari.layers import Layer  # noqa: E402

from ceimap.napari_plugin._layers import affine_stxm_to_world  # noqa: E402
from ceimap.napari_plugin._reader import (  # noqa: E402
    get_reader, read_lamella_layers, read_run_folder, read_stack_layers,
)
from ceimap.napari_plugin._writer import write_classes  # noqa: E402
from ceimap.segment.errors import CeimapInputError  # noqa: E402
from ceimap.segment.stack import Stack  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "napari_plugin" / "napari.yaml"
SEM_NM, STXM_NM = 10.0, 40.0


def _resolve(python_name):
    module, _, attr = python_name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _layers_ok(layer_data):
    """Every tuple is (data, dict, type) and napari can build the layer."""
    layers = []
    for item in layer_data:
        assert isinstance(item, tuple) and len(item) == 3
        data, kwargs, kind = item
        assert isinstance(kwargs, dict) and kind in ("image", "labels")
        layers.append(Layer.create(data, kwargs, kind))
    return layers


def _counts_stack(n_e=5, ny=12, nx=16, seed=0):
    """Counts: an empty (I0) band in the top rows, an absorbing disc with an edge in the middle."""
    rng = np.random.default_rng(seed)
    energies = np.linspace(850.0, 854.0, n_e)
    i0 = 5000.0 * (1 + 0.1 * np.arange(n_e))
    yy, xx = np.mgrid[:ny, :nx]
    thick = 0.5 * ((yy >= 4) & (np.hypot(yy - 8, xx - 8) < 6))
    mu = 1.0 + np.linspace(0, 1, n_e)
    counts = i0[:, None, None] * np.exp(-mu[:, None, None] * thick[None])
    counts = rng.poisson(counts).astype(float)
    return Stack(data=counts, energies_ev=energies, pixel_size_nm=STXM_NM, kind="counts", edge="Ni-L",
                 origin_x_nm=100.0, origin_y_nm=-50.0)


@pytest.fixture
def lamella_files(tmp_path):
    from ceimap.segment.io import write_nxstxm, write_sem_tiff

    sem = np.random.default_rng(1).normal(100, 5, (48, 64)).astype(np.float32)
    write_sem_tiff(tmp_path / "sem.tif", sem, SEM_NM)
    write_nxstxm(tmp_path / "ni_l.hdf5", _counts_stack())
    ann = np.zeros((48, 64), np.uint8)
    ann[5:8, 5:20] = 1
    ann[30:33, 40:60] = 3
    import tifffile

    tifffile.imwrite(tmp_path / "annotations.tif", ann)
    (tmp_path / "lamella.toml").write_text(
        'name = "tiny"\nsample = "test"\nannotations = "annotations.tif"\n\n[sem]\npath = "sem.tif"\n'
        f"pixel_size_nm = {SEM_NM}\n\n[[stxm]]\nedge = \"Ni-L\"\npath = \"ni_l.hdf5\"\n")
    return tmp_path


# -- manifest ---------------------------------------------------------------------------------------

def test_manifest_is_valid_and_every_command_imports():
    from npe2 import PluginManifest

    m = PluginManifest.from_file(MANIFEST)
    assert m.name == "ceimap"
    m.validate_imports()  # what `npe2 validate --imports` does: every python_name resolves
    commands = {c.id: c for c in m.contributions.commands}
    for c in commands.values():
        assert c.id.startswith("ceimap.") and callable(_resolve(c.python_name))
    used = ([r.command for r in m.contributions.readers] + [w.command for w in m.contributions.writers]
            + [s.command for s in m.contributions.sample_data] + [w.command for w in m.contributions.widgets])
    assert set(used) <= set(commands)  # no contribution points at an undeclared command
    assert {s.key for s in m.contributions.sample_data} == {"charged", "cycled_4p25v", "cycled_4p7v"}
    assert {w.command for w in m.contributions.widgets} >= {
        "ceimap.preprocess_widget", "ceimap.register_widget", "ceimap.decompose_widget", "ceimap.segment_widget",
        "ceimap.measure_widget"}
    assert m.contributions.writers[0].layer_types == ["labels"]


# -- readers ----------------------------------------------------------------------------------------

def test_reader_returns_none_for_what_it_does_not_handle(tmp_path):
    import h5py
    import tifffile

    (tmp_path / "notes.txt").write_text("hello")
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))  # no energy sidecar
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(tmp_path / "tomo.nxs", "w") as f:  # NeXus, but not STXM
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = np.array([b"NXtomo"])
    (tmp_path / "config.toml").write_text('[tool]\nname = "x"\n')
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "envi.hdr").write_text("ENVI\nsamples = 10\nlines = 10\nbands = 3\n")
    for p in ("notes.txt", "plain.tif", "other.h5", "config.toml", "empty_dir", "missing.hdf5", "envi.hdr",
              "tomo.nxs"):
        assert get_reader(str(tmp_path / p)) is None, p
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "plain.tif")]) is None


def test_nxstxm_reader_gives_od_stack_with_energy_slider(lamella_files):
    path = str(lamella_files / "ni_l.hdf5")
    reader = get_reader(path)
    assert reader is read_stack_layers
    layer_data = reader(path)
    assert len(layer_data) == 1
    data, kwargs, kind = layer_data[0]
    assert kind == "image" and data.shape == (5, 12, 16) and data.dtype == np.float32
    assert kwargs["scale"] == (1.0, STXM_NM, STXM_NM)
    assert kwargs["units"] == ("pixel", "nm", "nm")
    assert kwargs["translate"] == (0.0, -50.0, 100.0)
    assert kwargs["metadata"]["energies_ev"] == pytest.approx(np.linspace(850, 854, 5).tolist())
    assert kwargs["metadata"]["kind"] == "od" and kwargs["name"] == "Ni-L OD"
    # OD of the empty band is ~0, of the disc ~ mu * t > 0
    assert abs(np.median(data[:, :3])) < 0.05
    assert np.median(data[-1, 6:10, 6:10]) == pytest.approx(1.0, abs=0.1)
    (layer,) = _layers_ok(layer_data)
    assert layer.ndim == 3


def test_tiff_stack_with_sidecar_is_read(tmp_path):
    from ceimap.segment.io import write_tiff_stack

    out = tmp_path / "stack.tif"
    write_tiff_stack(out, _counts_stack())
    reader = get_reader(str(out))
    assert reader is read_stack_layers
    data, kwargs, kind = reader(str(out))[0]
    assert data.shape == (5, 12, 16) and kind == "image"


def test_ncb_reader(tmp_path):
    stack = _counts_stack()
    n_e, ny, nx = stack.data.shape
    lines = [f"{nx} {ny} -1.0", f"0 {(nx - 1) * STXM_NM / 1000}", f"0 {(ny - 1) * STXM_NM / 1000}", f"{n_e}"]
    lines += [f"{e:.3f}" for e in stack.energies_ev]
    lines += [f"frame{k} {e:.3f} 1.0" for k, e in enumerate(stack.energies_ev)]
    (tmp_path / "s.dat").write_text("\n".join(lines) + "\n")
    stack.data.astype("<f4").tofile(tmp_path / "s.ncb")
    assert get_reader(str(tmp_path / "s.ncb")) is read_stack_layers
    data, kwargs, _ = read_stack_layers(str(tmp_path / "s.ncb"))[0]
    assert data.shape == (5, 12, 16)
    assert kwargs["scale"][1:] == pytest.approx((STXM_NM, STXM_NM), rel=1e-3)
    (tmp_path / "s.dat").unlink()
    assert get_reader(str(tmp_path / "s.ncb")) is None  # its companion .dat is missing


def test_real_als_hdr_is_read(realdata_dir):
    hdr = realdata_dir / "als_cosmic_ni_l3" / "stxm-scan.hdr"
    reader = get_reader(str(hdr))
    assert reader is read_stack_layers
    data, kwargs, kind = reader(str(hdr))[0]
    assert data.shape == (2, 120, 120)
    assert kwargs["scale"][1] == pytest.approx(27.0, rel=0.05)
    _layers_ok([(data, kwargs, kind)])


def test_real_nxstxm_is_read_and_placeholder_file_refused(realdata_dir):
    stack = realdata_dir / "pollux_nxstxm" / "Sample_Stack_2021-03-16_128.hdf5"
    data, kwargs, _ = get_reader(str(stack))(str(stack))[0]
    assert data.shape == (4, 50, 50) and kwargs["scale"][1] == pytest.approx(500.0, rel=0.01)
    bad = realdata_dir / "pollux_nxstxm" / "NXstxm_autogenerated.hdf5"
    reader = get_reader(str(bad))
    if reader is not None:
        with pytest.raises(CeimapInputError, match="NXstxm_autogenerated"):
            reader(str(bad))


def test_lamella_reader_places_stack_on_sem_frame(lamella_files):
    manifest = str(lamella_files / "lamella.toml")
    assert get_reader(manifest) is not None
    assert get_reader(str(lamella_files)) is not None  # the folder holding the manifest
    layer_data = read_lamella_layers(manifest, register=False)
    names = [kw["name"] for _, kw, _ in layer_data]
    assert names == ["tiny: SEM", "tiny: Ni-L OD", "tiny: annotations"]
    sem, stack, ann = layer_data
    assert sem[0].shape == (48, 64) and sem[1]["scale"] == (SEM_NM, SEM_NM) and sem[2] == "image"
    assert sem[1]["units"] == ("nm", "nm")
    assert stack[0].shape == (5, 12, 16)
    # pixel-size placement: STXM pixel (y=2, x=3) -> SEM pixel (8, 12) -> world (80, 120) nm
    a = stack[1]["affine"]
    assert a.shape == (4, 4)
    assert a @ np.array([4, 2, 3, 1.0]) == pytest.approx([4, 2 * STXM_NM, 3 * STXM_NM, 1])
    assert stack[1]["metadata"]["registration"].startswith("pixel sizes only")
    assert ann[2] == "labels" and ann[0].dtype == np.uint8 and ann[1]["scale"] == (SEM_NM, SEM_NM)
    assert int(ann[0][6, 10]) == 1 and int(ann[0][31, 50]) == 3
    layers = _layers_ok(layer_data)
    # napari places the STXM pixel where the affine says
    assert layers[1].data_to_world([0, 2, 3]) == pytest.approx([0, 80, 120])
    assert layers[0].data_to_world([8, 12]) == pytest.approx([80, 120])


@pytest.mark.slow
def test_lamella_reader_default_registers_or_says_it_did_not(lamella_files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer_data = get_reader(str(lamella_files / "lamella.toml"))(str(lamella_files / "lamella.toml"))
    stack = layer_data[1]
    assert stack[1]["affine"].shape == (4, 4)
    assert stack[1]["metadata"]["registration"]


def test_affine_follows_registration_matrix():
    # 4x scale, 10 degree rotation, offset: STXM (x, y) = (3, 2)
    th = np.deg2rad(10)
    m = np.array([[4 * np.cos(th), -4 * np.sin(th), 5.0], [4 * np.sin(th), 4 * np.cos(th), 7.0], [0, 0, 1]])
    x_sem, y_sem, _ = m @ [3.0, 2.0, 1.0]
    a = affine_stxm_to_world(m, SEM_NM, n_leading=1)
    assert a @ [9, 2.0, 3.0, 1.0] == pytest.approx([9, y_sem * SEM_NM, x_sem * SEM_NM, 1])


def test_run_folder_reader(tmp_path):
    import tifffile

    run = tmp_path / "run"
    run.mkdir()
    classes = np.zeros((20, 30), np.uint8)
    classes[2:10, 2:10] = 1
    classes[10:, :] = 3
    particles = (classes == 1).astype(np.uint32) * 7
    egt2g = np.where(classes == 1, 1.5, np.nan).astype(np.float32)
    tifffile.imwrite(run / "classes.tif", classes)
    tifffile.imwrite(run / "particles.tif", particles)
    tifffile.imwrite(run / "egt2g.tif", egt2g)
    tifffile.imwrite(run / "sem.tif", np.ones((20, 30), np.float32))
    (run / "summary.json").write_text(json.dumps({"sem_pixel_nm": 7.5}))
    (run / "particles.csv").write_text("particle_id,area_nm2,egt2g_mean\n7,3600.0,1.5\n")
    assert get_reader(str(run)) is read_run_folder
    layer_data = read_run_folder(str(run))
    kinds = {kw["metadata"]["kind"]: (d, kw, t) for d, kw, t in layer_data}
    assert set(kinds) == {"sem", "egt2g", "classes", "particles"}
    for d, kw, t in layer_data:
        assert kw["scale"] == (7.5, 7.5) and d.shape == (20, 30)
    assert kinds["classes"][2] == "labels" and np.array_equal(kinds["classes"][0], classes)
    assert kinds["particles"][2] == "labels" and kinds["particles"][0].max() == 7
    feats = kinds["particles"][1]["features"]  # row i describes label i
    assert len(feats) == 8 and feats.loc[7, "egt2g_mean"] == 1.5 and np.isnan(feats.loc[3, "area_nm2"])
    assert kinds["egt2g"][1]["contrast_limits"] == (0.7, 2.4)
    layers = _layers_ok(layer_data)
    assert [la for la in layers if la.name == "particles"][0].features.loc[7, "area_nm2"] == 3600.0
    lab = [la for la in layers if la.name == "classes"][0]
    assert np.allclose(lab.colormap.map(np.array([1]))[0][:3], [0xd6 / 255, 0x27 / 255, 0x28 / 255], atol=0.01)


# -- writer -----------------------------------------------------------------------------------------

def test_writer_round_trips_through_read_annotations(tmp_path):
    from ceimap.segment.io import read_annotations, read_sem

    labels = np.zeros((15, 25), np.int32)
    labels[3:6, 4:9] = 2
    labels[10, :] = 4
    out = write_classes(str(tmp_path / "ann.tif"), labels, {"scale": (10.0, 10.0), "name": "annotations"})
    assert out == [str(tmp_path / "ann.tif")]
    back = read_annotations(out[0], labels.shape)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    assert read_sem(out[0]).pixel_size_nm == pytest.approx(10.0)
    # default scale 1: written without a pixel size
    out = write_classes(str(tmp_path / "plain.tif"), labels, {"scale": (1.0, 1.0)})
    assert np.array_equal(read_annotations(out[0], labels.shape), labels)


def test_writer_refuses_non_class_labels(tmp_path):
    with pytest.raises(CeimapInputError, match="class codes must be 0"):
        write_classes(str(tmp_path / "x.tif"), np.full((4, 4), 9, np.uint16), {})
    with pytest.raises(CeimapInputError, match="2-D"):
        write_classes(str(tmp_path / "x.tif"), np.zeros((2, 4, 4), np.uint8), {})
    assert not (tmp_path / "x.tif").exists()


# -- sample data ------------------------------------------------------------------------------------

def test_every_sample_data_entry_opens(datasets_dir):
    from npe2 import PluginManifest

    from ceimap.segment.io import read_lamella

    m = PluginManifest.from_file(MANIFEST)
    commands = {c.id: c for c in m.contributions.commands}
    for sample in m.contributions.sample_data:
        folder = datasets_dir / sample.key
        if not (folder / "lamella.toml").is_file():
            pytest.skip(f"example lamella {folder} not generated yet")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer_data = _resolve(commands[sample.command].python_name)()
        lam = read_lamella(folder / "lamella.toml")
        by_name = {kw["name"].split(": ", 1)[1]: (d, kw, t) for d, kw, t in layer_data}
        assert all(kw["name"].startswith(f"{sample.key}: ") for _, kw, _ in layer_data)
        sem = by_name["SEM"]
        assert sem[1]["scale"] == (lam.sem.pixel_size_nm,) * 2 and sem[0].shape == lam.sem.image.shape
        for edge, stack in lam.stacks.items():
            d, kw, t = by_name[f"{edge} OD"]
            assert t == "image" and d.shape == stack.data.shape
            truth = json.loads((folder / "truth" / "transforms.json").read_text())[edge]["matrix"]
            assert np.allclose(kw["affine"], affine_stxm_to_world(truth, lam.sem.pixel_size_nm))
        assert by_name["truth classes"][2] == "labels"
        assert by_name["truth classes"][0].shape == lam.sem.image.shape
        if lam.annotations_path is not None:
            assert by_name["annotations"][2] == "labels"
        _layers_ok(layer_data)
