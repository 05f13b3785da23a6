"""The Python API at ceimap's top level (CONTRACT.md "Python API"): the same results as the command line."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import ceimap
from ceimap.segment import CLASS_CODES
from ceimap.segment.errors import CeimapInputError
from ceimap.stats.cli import main
from ceimap.stats.compare import compare_runs

TIME_STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?(\+00:00| ?UTC)?")


def test_class_codes():
    assert [(c.name, int(c)) for c in ceimap.Class] == [("OUTSIDE", 0), ("NMC", 1), ("INTERPHASE", 2),
                                                         ("ELECTROLYTE", 3), ("VOID", 4)]
    assert CLASS_CODES == {c.name.lower(): int(c) for c in ceimap.Class}
    assert ceimap.Class.INTERPHASE == 2 and ceimap.Class(3) is ceimap.Class.ELECTROLYTE


def test_public_names():
    assert {"run", "Result", "read_results", "compare", "train", "Class"} <= set(ceimap.__all__)
    assert ceimap.__version__


@pytest.fixture(scope="module")
def two_lamellae(tmp_path_factory, small_lamella_manifest):
    """Two manifests of the small lamella under other names and samples."""
    root = tmp_path_factory.mktemp("api_inputs")
    manifests = []
    for name, sample in (("one", "first sample"), ("two", "second sample")):
        folder = shutil.copytree(small_lamella_manifest.parent, root / name)
        text = (folder / "lamella.toml").read_text()
        text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text)
        (folder / "lamella.toml").write_text(re.sub(r'(?m)^sample = ".*"$', f'sample = "{sample}"', text))
        manifests.append(folder / "lamella.toml")
    return manifests


@pytest.fixture(scope="module")
def computed(two_lamellae):
    return ceimap.run(two_lamellae[0])


@pytest.fixture(scope="module")
def cli_runs(two_lamellae, tmp_path_factory):
    """``ceimap run`` of both lamellae: the reference folders."""
    out = tmp_path_factory.mktemp("api_cli")
    for manifest in two_lamellae:
        assert main(["run", str(manifest), "--out", str(out / manifest.parent.name)]) == 0
    return [out / m.parent.name for m in two_lamellae]


def test_run_returns_maps_tables_and_summary(computed):
    r = computed
    assert r.classes.dtype == np.uint8 and r.particles_map.dtype == np.uint32 and r.egt2g.dtype == np.float32
    assert r.classes.shape == r.particles_map.shape == r.egt2g.shape
    assert set(np.unique(r.classes)) <= {int(c) for c in ceimap.Class}
    assert isinstance(r.particles, pd.DataFrame) and isinstance(r.thickness, pd.DataFrame)
    assert len(r.particles) == r.summary["n_particles"] == len(np.unique(r.particles_map[r.particles_map > 0]))
    assert len(r.thickness) == r.summary["interphase_thickness_nm"]["n"]
    assert list(r.thickness.columns) == ["particle_id", "x_nm", "y_nm", "thickness_nm"]
    assert r.summary["name"] == "one" and r.summary["sample"] == "first sample"
    assert r.folder is None


def _comparable(path: Path):
    """A file's content with what changes from run to run taken out (time stamps, timings)."""
    if path.suffix == ".json":
        d = json.loads(path.read_text())
        if "provenance" in d:
            d["provenance"].pop("created_utc")
            d["provenance"].pop("timings_s", None)
        return d
    if path.suffix == ".html":
        return TIME_STAMP.sub("<time>", path.read_text())
    return path.read_bytes()


def test_write_writes_exactly_what_ceimap_run_writes(computed, cli_runs, tmp_path):
    report = computed.write(tmp_path / "one")
    assert report == tmp_path / "one" / "report.html" and computed.folder == tmp_path / "one"
    written = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert written == sorted(p.name for p in cli_runs[0].iterdir())
    for name in written:
        assert _comparable(tmp_path / "one" / name) == _comparable(cli_runs[0] / name), name
    with pytest.raises(CeimapInputError, match="not empty"):
        computed.write(tmp_path / "one")
    computed.write(tmp_path / "one", overwrite=True)


def test_read_results_round_trip(cli_runs, tmp_path):
    r = ceimap.read_results(cli_runs[0])
    assert np.array_equal(r.classes, tifffile.imread(cli_runs[0] / "classes.tif"))
    pd.testing.assert_frame_equal(r.particles, pd.read_csv(cli_runs[0] / "particles.csv"))
    assert r.summary == json.loads((cli_runs[0] / "summary.json").read_text())
    assert len(r.particles) == r.summary["n_particles"]
    r.write(tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(p.name for p in cli_runs[0].iterdir())
    with pytest.raises(CeimapInputError, match="summary.json"):
        ceimap.read_results(tmp_path)


def test_compare_in_memory(computed, cli_runs, two_lamellae):
    from_files = compare_runs(cli_runs)
    assert ceimap.compare(cli_runs) == from_files
    assert ceimap.compare([ceimap.read_results(d) for d in cli_runs]) == from_files
    in_memory = ceimap.compare([computed, ceimap.run(two_lamellae[1])])
    assert in_memory["samples"] == from_files["samples"] == ["first sample", "second sample"]
    # a result records its folder once written (an earlier test may have written this one), else None
    assert in_memory["run_dirs"] == [None if computed.folder is None else str(computed.folder.resolve()), None]
    for key in ("interphase_thickness", "egt2g_bulk", "egt2g_surface_electrolyte", "egt2g_surface_void"):
        a, b = in_memory[key], from_files[key]
        assert a["method"] == b["method"]
        for name, v in b["per_sample"].items():
            assert a["per_sample"][name]["n_units"] == v["n_units"]
            if v["mean"] is not None:
                assert a["per_sample"][name]["mean"] == pytest.approx(v["mean"], rel=1e-5)
    with pytest.raises(CeimapInputError):
        ceimap.compare([computed])


def test_train_then_run_with_the_model(two_lamellae, tmp_path):
    model = ceimap.train(two_lamellae[:1])
    assert model.labels.size > 0
    path = tmp_path / "model.npz"
    model.save(path)
    assert main(["train", str(two_lamellae[0]), "--out", str(tmp_path / "cli.npz")]) == 0
    from ceimap.segment.classifier import PixelClassifier

    assert PixelClassifier.load(tmp_path / "cli.npz").sha256 == PixelClassifier.load(path).sha256
    r = ceimap.run(two_lamellae[1], model=path)
    assert r.summary["provenance"]["parameters"]["model"]["path"] == str(path.resolve())
    assert len(r.particles) == r.summary["n_particles"]
    with pytest.raises(CeimapInputError, match="annotation images"):
        ceimap.train(two_lamellae, annotations=[None])


@pytest.mark.slow
def test_the_python_example_in_docs_runs(tmp_path):
    """docs/python_api.py: the README's Python section on the example lamellae."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "docs" / "python_api.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bulk e_g/t_2g between samples" in proc.stdout
    for name in ("charged", "cycled_4p7v"):
        assert (tmp_path / "out" / name / "report.html").is_file()
