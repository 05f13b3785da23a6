"""The ``ceimap`` command line: exit codes, messages, refusal rules, atomic outputs."""

import json
import subprocess
import sys

import pytest

from ceimap.stats.cli import main
from ceimap.stats.outputs import AtomicFolder, check_output_folder
from ceimap.segment.errors import CeimapInputError


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])  # --out missing
    assert exc.value.code == 2


def test_run_without_inputs_names_the_problem(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "LAMELLA.toml" in capsys.readouterr().err


def test_missing_manifest_exit_2_names_file(tmp_path, capsys):
    missing = tmp_path / "nothing.toml"
    code = main(["run", str(missing), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "nothing.toml" in capsys.readouterr().err


def test_bad_stxm_option(tmp_path, capsys):
    sem = tmp_path / "sem.tif"
    sem.write_bytes(b"")
    code = main(["run", "--sem", str(sem), "--stxm", "no-equals-sign", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "sem.tif" in err or "EDGE=PATH" in err


def test_report_on_non_results_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_compare_on_non_results_folder(tmp_path, capsys):
    assert main(["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "c")]) == 2


def test_refuses_non_empty_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(CeimapInputError, match="not empty"):
        check_output_folder(out, [], overwrite=False)
    check_output_folder(out, [], overwrite=True)


def test_refuses_out_inside_input_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    stack = data / "stack.hdf5"
    stack.write_bytes(b"x")
    with pytest.raises(CeimapInputError, match="input folder"):
        check_output_folder(data / "results", [stack], overwrite=True)
    with pytest.raises(CeimapInputError, match="input folder"):
        check_output_folder(data, [stack], overwrite=True)
    check_output_folder(tmp_path / "elsewhere", [stack], overwrite=False)


def test_atomic_folder_failure_leaves_previous_result(tmp_path):
    target = tmp_path / "run"
    with AtomicFolder(target) as tmp:
        (tmp / "summary.json").write_text(json.dumps({"ok": 1}))
    with pytest.raises(RuntimeError):
        with AtomicFolder(target) as tmp:
            (tmp / "summary.json").write_text("half")
            raise RuntimeError("crash in the middle")
    assert json.loads((target / "summary.json").read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no partial folder left behind


def test_console_script_help(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ceimap.stats.cli", "--help"], capture_output=True, text=True,
                            cwd=tmp_path)  # outside the repository: its ceimap/ folder would hide a non-editable install
    assert result.returncode == 0
    for command in ("demo", "run", "compare", "report"):
        assert command in result.stdout


# ---------------------------------------------------------------------------------------------------------
# ceimap train / ceimap run --model
# ---------------------------------------------------------------------------------------------------------

def _manifest_without_annotations(tmp_path, datasets_dir, name="charged"):
    src = datasets_dir / name
    text = (f'name = "copy"\nsample = "copy"\n[sem]\npath = "{src / "sem.tif"}"\n'
            f'pixel_size_nm = 9.62\n[[stxm]]\nedge = "Ni-L"\npath = "{src / "ni_l.hdf5"}"\n'
            f'[[stxm]]\nedge = "S-L"\npath = "{src / "s_l.hdf5"}"\n')
    manifest = tmp_path / "lamella.toml"
    manifest.write_text(text)
    return manifest


def test_train_usage_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "m.npz")]) == 2
    assert "no lamella given" in capsys.readouterr().err
    assert main(["train", "lamella.toml"]) == 2
    assert "--out MODEL is required" in capsys.readouterr().err
    assert main(["train", "--annotations", "a.tif", "--out", str(tmp_path / "m.npz")]) == 2
    assert "must follow a LAMELLA.toml or --sem" in capsys.readouterr().err
    assert main(["train", "x.toml", "--out", str(tmp_path / "m.npz"), "--estimator", "svm"]) == 2
    assert "--estimator" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "annotations" in capsys.readouterr().out


def test_train_refuses_existing_model_file(tmp_path, capsys):
    out = tmp_path / "m.npz"
    out.write_bytes(b"keep")
    assert main(["train", "x.toml", "--out", str(out)]) == 2
    assert "m.npz" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_train_needs_annotations(tmp_path, datasets_dir, capsys):
    manifest = _manifest_without_annotations(tmp_path, datasets_dir)
    assert main(["train", str(manifest), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "lamella.toml" in err and "no annotations" in err


def test_train_refuses_annotations_of_another_shape(tmp_path, datasets_dir, capsys):
    import numpy as np
    import tifffile

    manifest = _manifest_without_annotations(tmp_path, datasets_dir)
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, np.ones((10, 12), np.uint8))
    assert main(["train", str(manifest), "--annotations", str(labels), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "labels.tif" in err and "SEM grid" in err
    assert not (tmp_path / "m.npz").exists()


def test_run_model_refusals(tmp_path, datasets_dir, capsys):
    import numpy as np

    from ceimap.segment.classifier import PixelClassifier, TrainingSamples
    from ceimap.segment.features import FeatureSpec

    manifest = datasets_dir / "charged" / "lamella.toml"
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--model", str(tmp_path / "none.npz"), "--out", str(out)]) == 2
    assert "none.npz: model file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_text("not a model")
    assert main(["run", str(manifest), "--model", str(junk), "--out", str(out)]) == 2
    assert "junk.npz: not a usable ceimap model file" in capsys.readouterr().err
    # a valid model trained at 40 nm SEM pixels: the 9.62 nm lamella is refused before any processing
    spec = FeatureSpec()
    rng = np.random.default_rng(0)
    samples = TrainingSamples("far", rng.normal(size=(40, len(spec.names))).astype(np.float32),
                              np.repeat(np.arange(1, 5, dtype=np.uint8), 10), 40.0,
                              {"Ni-L": 40.0, "S-L": 40.0}, {"Ni-L": (845.0, 870.0), "S-L": (158.0, 175.0)})
    model = tmp_path / "far.npz"
    PixelClassifier(spec, [samples]).save(model)
    assert main(["run", str(manifest), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "far.npz" in err and "SEM pixels" in err
    assert not out.exists()


def test_train_arguments_group_by_lamella():
    from ceimap.stats.cli import parse_train_args

    groups, options = parse_train_args([
        "a/lamella.toml", "--annotations", "a/extra.tif",
        "--sem", "b/sem.tif", "--sem-pixel-nm", "5", "--stxm", "Ni-L=b/ni.h5", "--stxm", "S-L=b/s.h5",
        "--annotations", "b/labels.tif",
        "c/lamella.toml", "--out=model.npz", "--seed", "7", "--overwrite"])
    assert [sorted(g) for g in groups] == [["annotations", "manifest", "stxm"],
                                           ["annotations", "sem", "sem_pixel_nm", "stxm"],
                                           ["manifest", "stxm"]]
    assert groups[1]["stxm"] == ["Ni-L=b/ni.h5", "S-L=b/s.h5"] and groups[1]["annotations"] == "b/labels.tif"
    assert options == {"overwrite": True, "estimator": "random_forest", "seed": 7, "out": "model.npz"}
    with pytest.raises(CeimapInputError, match="given twice"):
        parse_train_args(["a.toml", "--annotations", "x.tif", "--annotations", "y.tif", "--out", "m"])


def test_demo_records_the_final_run_folders(tmp_path, small_lamella_manifest):
    """``ceimap demo`` builds its results in a temporary folder and renames it into place: every path its
    outputs record names the final location (no ``.partial-`` folder, which no longer exists)."""
    import re
    import shutil

    datasets = tmp_path / "datasets"
    for name, sample in (("one", "first sample"), ("two", "second sample")):
        folder = shutil.copytree(small_lamella_manifest.parent, datasets / name)
        text = (folder / "lamella.toml").read_text()
        text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text)
        (folder / "lamella.toml").write_text(re.sub(r'(?m)^sample = ".*"$', f'sample = "{sample}"', text))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--datasets", str(datasets)]) == 0
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert compare["run_dirs"] == [str((out / "one").resolve()), str((out / "two").resolve())]
    report = (out / "compare" / "report.html").read_text()
    assert all(f"<code>{d}</code>" in report for d in compare["run_dirs"])
    written = [p for p in out.rglob("*") if p.suffix in (".json", ".html", ".csv")]
    assert len(written) > 10
    assert [p for p in written if ".partial-" in p.read_text(encoding="utf-8")] == []
