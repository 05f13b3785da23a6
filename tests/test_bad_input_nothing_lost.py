"""Nothing lost: results appear all at once or not at all, ``--overwrite`` is needed to replace them, inputs
are never modified, and the same inputs give byte-identical results.

The fast tests drive the real ``ceimap run`` (reading, checks, provenance, the atomic move) with the science
replaced by stand-ins, so that a failure can be injected at any step; the slow test runs a small lamella for
real, twice.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import bad_input_files as B  # noqa: E402
from ceimap.stats.cli import main  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """sha256 and modification time of every file under ``folder``."""
    return {p.relative_to(folder): (sha256(p), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def lamella(tmp_path):
    return B.valid_lamella(tmp_path / "in", "h5")


@pytest.fixture
def stand_ins(monkeypatch):
    """Replace processing and analysis by stand-ins; the writer writes the CONTRACT files one by one, and
    ``state["fail_after"]`` makes it raise after that many files. Records where it wrote."""
    from ceimap.stats import run as stats_run

    state = {"fail_after": None, "folders": [], "exception": RuntimeError}
    names = ["classes.tif", "particles.tif", "egt2g.tif", "registration.json", "particles.csv", "thickness.csv",
             "summary.json", "report.html"]

    def write_results(out, result, analysis, prov, **kwargs):
        state["folders"].append(Path(out))
        state["target_existed_while_writing"] = state["target"].exists()
        for k, name in enumerate(names):
            if state["fail_after"] is not None and k == state["fail_after"]:
                raise state["exception"]("injected failure while writing results")
            text = json.dumps({"provenance": prov}) if name == "summary.json" else f"{name} of this run\n"
            (Path(out) / name).write_text(text)

    monkeypatch.setattr(stats_run, "analyse_result", lambda result: object())
    monkeypatch.setattr(stats_run, "compact_record", lambda record, *a, **k: {})
    monkeypatch.setattr(stats_run, "write_results", write_results)

    class FakeResult:
        details = {"segmentation": {}}
        od_reports = {}

    monkeypatch.setattr(stats_run, "process_lamella", lambda lamella, **kw: FakeResult())
    return state


def _run(lamella, out, *extra):
    return main(["run", str(lamella), "--out", str(out), *extra])


def test_results_are_written_beside_out_and_moved_into_place(lamella, tmp_path, stand_ins, capsys):
    out = tmp_path / "results" / "run1"
    stand_ins["target"] = out
    inputs_before = snapshot(lamella.parent)
    assert _run(lamella, out) == 0
    written_in = stand_ins["folders"][0]
    assert written_in != out and written_in.parent == out.parent and written_in.name.startswith(".run1.partial-")
    assert stand_ins["target_existed_while_writing"] is False
    assert not written_in.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["run1"]  # nothing partial left beside it
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
    assert snapshot(lamella.parent) == inputs_before  # inputs untouched (content and modification time)
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    recorded = {Path(i["path"]).name: i["sha256"] for i in prov["inputs"]}
    assert recorded == {p.name: sha256(p) for p in lamella.parent.iterdir()}  # every input, hashed


@pytest.mark.parametrize("fail_after", [0, 3, 7])
def test_failure_while_writing_leaves_no_result(lamella, tmp_path, stand_ins, capsys, fail_after):
    out = tmp_path / "results" / "run1"
    stand_ins.update(target=out, fail_after=fail_after)
    assert _run(lamella, out) == 1  # an internal error
    err = capsys.readouterr().err
    assert "injected failure" in err and "internal error" in err
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # and no partial folder either


def test_interrupt_while_writing_leaves_no_result(lamella, tmp_path, stand_ins, capsys):
    out = tmp_path / "results" / "run1"
    stand_ins.update(target=out, fail_after=4, exception=KeyboardInterrupt)
    assert _run(lamella, out) == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_failure_keeps_the_previous_result_intact(lamella, tmp_path, stand_ins, capsys):
    out = tmp_path / "results" / "run1"
    stand_ins["target"] = out
    assert _run(lamella, out) == 0
    before = snapshot(out)
    stand_ins["fail_after"] = 5
    assert _run(lamella, out, "--overwrite") == 1
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["run1"]


def test_overwrite_is_required_to_replace_a_result(lamella, tmp_path, stand_ins, capsys):
    out = tmp_path / "results" / "run1"
    stand_ins["target"] = out
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("the user's own notes")
    assert _run(lamella, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    assert (out / "notes.txt").read_text() == "the user's own notes" and stand_ins["folders"] == []
    assert _run(lamella, out, "--overwrite") == 0
    # replaced as a whole: no stale file of an earlier run can be mistaken for part of this one
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["classes.tif", "particles.tif", "egt2g.tif", "registration.json", "particles.csv", "thickness.csv",
         "summary.json", "report.html"])


def test_out_inside_the_input_folder_is_refused(lamella, stand_ins, capsys):
    stand_ins["target"] = lamella.parent / "results"
    assert _run(lamella, lamella.parent / "results") == 2
    assert "never writes into its input folders" in capsys.readouterr().err
    assert not (lamella.parent / "results").exists()


# -------------------------------------------------------------------------------------------------------
# the real pipeline, twice
# -------------------------------------------------------------------------------------------------------

def _comparable_summary(path: Path) -> dict:
    summary = json.loads(path.read_text())
    summary["provenance"].pop("created_utc")  # the time of day and the step timings may differ; nothing else
    summary["provenance"].pop("timings_s", None)
    return summary


@pytest.mark.slow
def test_same_inputs_give_byte_identical_results_and_inputs_stay_untouched(tmp_path):
    """Two runs of one small lamella: every table, map and JSON file byte-identical (summary.json apart from
    its timestamp and timings), the inputs unmodified, and their sha256 in the provenance."""
    lamella = B.valid_lamella(tmp_path / "in", "h5")
    inputs_before = snapshot(lamella.parent)
    first, second = tmp_path / "first", tmp_path / "second"
    # the toy lamella (a 12 × 14 px STXM field with one absorbing rectangle, symmetric under a half turn) is
    # too small for the registration's chance test to tell its place from its turned copies: the documented
    # way through for such fields (docs/bad_input.md) — byte identity is what this test is about
    accept = "--accept-registration"
    assert main(["run", str(lamella), accept, "--out", str(first)]) == 0
    assert main(["run", str(lamella), accept, "--out", str(second)]) == 0
    assert snapshot(lamella.parent) == inputs_before

    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"classes.tif", "particles.tif", "egt2g.tif", "registration.json", "particles.csv", "thickness.csv",
            "summary.json", "report.html"} <= set(names)
    for name in names:
        if name in ("summary.json", "report.html"):
            continue
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    a, b = _comparable_summary(first / "summary.json"), _comparable_summary(second / "summary.json")
    assert a == b
    recorded = {Path(i["path"]).name: i["sha256"] for i in a["provenance"]["inputs"]}
    assert recorded == {p.name: sha256(p) for p in lamella.parent.iterdir()}
    # what could not be computed says why, in summary.json and in the report
    import html

    report = (first / "report.html").read_text()
    test = a["tests"]["surface_electrolyte_vs_void"]
    if test["p_value"] is None:
        assert test["reason"] and html.escape(test["reason"]) in report
    thickness = a["interphase_thickness_nm"]
    if thickness["mean"] is None:
        assert thickness["reason"] and html.escape(thickness["reason"]) in report
