"""The ``ceimap`` command line: exit codes, messages, refusal rules, atomic outputs."""

import json
import subprocess
import sys

import pytest

from stats.cli import main
from stats.outputs import AtomicFolder, check_output_folder
from segment.errors import CeimapInputError


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


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "stats.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("demo", "run", "compare", "report"):
        assert command in result.stdout
