"""Bad input through the real command line: every row of docs/bad_input.md.

Each refusal is checked the same way (:func:`refused`): exit status 2, exactly one line on stderr, starting
``ceimap: error:``, naming the offending file and the problem, no traceback, and no output folder. The
pipeline itself is replaced by a tripwire (``no_processing``), so a refusal that comes too late fails the
test at once instead of running the whole analysis. Graceful cases (statistics that cannot be computed)
are checked on the analysis of hand-made maps.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "stats"))

import bad_input_files as B  # noqa: E402
from ceimap.segment.errors import CeimapInputError  # noqa: E402
from ceimap.segment.io import read_stack  # noqa: E402
from ceimap import segment, stats  # noqa: E402,F401 - segment.pipeline, stats.run are patched below
from ceimap.stats.cli import main  # noqa: E402


@pytest.fixture
def no_processing(monkeypatch):
    """Make reaching the pipeline an internal error: every case here must be refused before it."""
    import ceimap.segment.pipeline  # noqa: F401 - loads segment.pipeline
    import ceimap.stats.run  # noqa: F401 - loads stats.run

    def tripwire(*args, **kwargs):
        raise AssertionError("bad input reached the processing stages")

    monkeypatch.setattr(stats.run, "process_lamella", tripwire)
    monkeypatch.setattr(segment.pipeline, "preprocess_lamella", tripwire)


@pytest.fixture
def ceimap(no_processing, capsys):
    """Run ``ceimap ARGS``; returns (exit status, stderr)."""
    def run(*args):
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err
    return run


def refused(result, out: Path | None, file, *words):
    """Exit 2, one line naming ``file`` and each of ``words``, no traceback, no output folder.

    Progress lines (``[  0.1 s] …``) may precede the error."""
    code, err = result
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("ceimap: error: ")
    assert str(file) in lines[0], lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    if out is not None:
        assert not out.exists()
    return lines[0]


def outdir(tmp_path: Path) -> Path:
    """The results folder of a test: beside its input folder (ceimap refuses one inside it)."""
    return tmp_path.with_name(tmp_path.name + "-out")


def run_args(folder: Path, stack: Path, edge="Ni-L", sem: Path | None = None):
    sem = B.write_sem(folder) if sem is None else sem
    return ["run", "--sem", sem, "--stxm", f"{edge}={stack}", "--out", outdir(folder)]


def cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# -------------------------------------------------------------------------------------------------------
# truncated or corrupt files, each format
# -------------------------------------------------------------------------------------------------------

def test_truncated_hdf5(ceimap, tmp_path):
    stack = cut(B.write_h5(tmp_path), 0.5)
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "truncated or corrupt")


def test_truncated_real_pollux_hdf5(ceimap, tmp_path, realdata_dir):
    stack = tmp_path / "pollux.hdf5"
    shutil.copy(realdata_dir / "pollux_nxstxm" / "Sample_Stack_2021-03-16_128.hdf5", stack)
    cut(stack, 0.6)
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "hdf5")


def test_corrupt_hdf5_data_chunks(ceimap, tmp_path):
    """Bytes overwritten inside the compressed frames: the decompression error is a bad-input error."""
    stack = B.write_h5(tmp_path)
    raw = bytearray(stack.read_bytes())
    with h5py.File(stack, "r") as fh:
        offset = fh["entry1/counter0/data"].id.get_chunk_info(3).byte_offset
    raw[offset + 8: offset + 64] = b"\xff" * 56
    stack.write_bytes(bytes(raw))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "cannot read the NXstxm data")


def test_hdf5_extension_but_not_hdf5(ceimap, tmp_path):
    stack = tmp_path / "ni_l.hdf5"
    stack.write_text("ni_l stack, exported as text by mistake\n")
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "not an HDF5 file")


def test_truncated_sem_tiff(ceimap, tmp_path):
    sem = cut(B.write_sem(tmp_path, image=np.random.default_rng(0).integers(0, 255, (200, 200)).astype(np.uint8)),
              0.5)
    stack = B.write_h5(tmp_path)
    refused(ceimap(*run_args(tmp_path, stack, sem=sem)), outdir(tmp_path), sem, "truncated")


def test_sem_that_is_not_a_tiff(ceimap, tmp_path):
    sem = tmp_path / "sem.tif"
    sem.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    refused(ceimap(*run_args(tmp_path, B.write_h5(tmp_path), sem=sem)), outdir(tmp_path), sem, "not a readable TIFF")


SEM_PAGE_LOOP = [("insert", 0.8443632566103562, 237, 5), ("delete", 0.1763934346256708, 187, 12),
                 ("insert", 0.025263604961809127, 236, 8)]
"""The mutation of ``write_sem``'s file that makes its IFD chain loop (``shared/badfiles/sem_page_loop.tif``)."""


def sem_page_loop(folder: Path) -> Path:
    from reader_fuzzing import mutate

    sem = B.write_sem(folder)
    sem.write_bytes(mutate(sem.read_bytes(), SEM_PAGE_LOOP))
    return sem


def test_sem_whose_page_chain_loops(ceimap, tmp_path):
    sem = sem_page_loop(tmp_path)
    refused(ceimap(*run_args(tmp_path, B.write_h5(tmp_path), sem=sem)), outdir(tmp_path), sem,
            "loops back to page 0")


def test_sem_page_loop_command_exits_2_with_one_line(tmp_path):
    """The real command on the looping TIFF: exit 2, one line on stderr (tifffile walked it for ever, printing
    245 MB of messages), nothing on stdout, no output folder."""
    import subprocess

    sem = sem_page_loop(tmp_path)
    out = outdir(tmp_path)
    args = [sys.executable, "-m", "ceimap.stats.cli", *map(str, run_args(tmp_path, B.write_h5(tmp_path), sem=sem))]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("[")]
    assert len(lines) == 1 and str(sem) in lines[0] and "loops back" in lines[0], result.stderr[-2000:]
    assert len(result.stderr) < 2000 and not out.exists()


def test_truncated_tiff_stack(ceimap, tmp_path):
    stack = cut(B.write_tif_stack(tmp_path), 0.4)
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "tiff")


def test_tiff_stack_without_energy_list(ceimap, tmp_path):
    stack = B.write_tif_stack(tmp_path)
    (tmp_path / "ni_l.energies.txt").unlink()
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "no energy list")


def test_truncated_ncb(ceimap, tmp_path):
    stack = cut(B.write_ncb(tmp_path), 0.7)
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "truncated file")


def test_ncb_without_dat(ceimap, tmp_path):
    stack = B.write_ncb(tmp_path)
    stack.with_suffix(".dat").unlink()
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "ni_l.dat", "not found")


def test_dat_with_garbage(ceimap, tmp_path):
    stack = B.write_ncb(tmp_path)
    dat = stack.with_suffix(".dat")
    lines = dat.read_text().splitlines()
    lines[1] = "0 zero point five"
    dat.write_text("\n".join(lines) + "\n")
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), dat, "not numeric")


def test_truncated_xim_frame(ceimap, tmp_path):
    hdr = B.write_als(tmp_path)
    frame = tmp_path / "stack_a004.xim"
    lines = frame.read_text().splitlines()
    frame.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    refused(ceimap(*run_args(tmp_path, hdr)), outdir(tmp_path), frame, "truncated")


def test_truncated_hdr(ceimap, tmp_path):
    hdr = B.write_als(tmp_path)
    hdr.write_text(hdr.read_text()[:200])
    refused(ceimap(*run_args(tmp_path, hdr)), outdir(tmp_path), hdr, "header")


def test_xim_without_its_header(ceimap, tmp_path):
    hdr = B.write_als(tmp_path)
    hdr.unlink()
    frame = tmp_path / "stack_a000.xim"
    refused(ceimap(*run_args(tmp_path, frame)), outdir(tmp_path), "stack.hdr", "missing")


# -------------------------------------------------------------------------------------------------------
# wrong dimensions
# -------------------------------------------------------------------------------------------------------

def test_nxstxm_axis_lengths_do_not_match_the_data(ceimap, tmp_path):
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        del fh["entry1/counter0/sample_x"]
        fh["entry1/counter0/sample_x"] = np.arange(9) * 0.04
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "does not match the axes")


def test_dat_describes_another_size(ceimap, tmp_path):
    stack = B.write_ncb(tmp_path)
    dat = stack.with_suffix(".dat")
    lines = dat.read_text().splitlines()
    lines[0] = "20 12 -1"
    dat.write_text("\n".join(lines) + "\n")
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "belongs to another stack")


def test_tiff_stack_frames_and_energies_disagree(ceimap, tmp_path):
    stack = B.write_tif_stack(tmp_path)
    sidecar = tmp_path / "ni_l.energies.txt"
    sidecar.write_text("".join(sidecar.read_text().splitlines(keepends=True)[:-2]))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "15 frame(s)", "13 energies")


def test_xim_frame_of_another_shape(ceimap, tmp_path):
    hdr = B.write_als(tmp_path)
    frame = tmp_path / "stack_a002.xim"
    frame.write_text("\n".join(frame.read_text().splitlines()[:-3]) + "\n")
    refused(ceimap(*run_args(tmp_path, hdr)), outdir(tmp_path), frame, "header says 12 × 14")


def test_sem_that_is_a_stack(ceimap, tmp_path):
    sem = tmp_path / "sem.tif"
    tifffile.imwrite(sem, np.zeros((3, 40, 40), np.uint8), imagej=True, resolution=(1e6, 1e6),
                     metadata={"unit": "nm"})
    refused(ceimap(*run_args(tmp_path, B.write_h5(tmp_path), sem=sem)), outdir(tmp_path), sem, "2-D")


# -------------------------------------------------------------------------------------------------------
# energies
# -------------------------------------------------------------------------------------------------------

def test_non_monotonic_energies_are_sorted_with_their_frames(tmp_path):
    """Graceful: frames are put in energy order (recorded in metadata), every format."""
    st = B.stack()
    order = np.random.default_rng(3).permutation(st.n_energy)
    shuffled = B.stack(st.energies_ev[order], data=st.data[order])
    for write in (B.write_h5, B.write_tif_stack, B.write_ncb):
        got = read_stack(write(tmp_path, st=shuffled), edge="Ni-L")
        assert np.array_equal(got.energies_ev, st.energies_ev)
        assert np.array_equal(got.data, st.data)
        assert got.metadata["frames_sorted_by_energy"] is True


@pytest.mark.parametrize("writer", ["h5", "ncb", "tif"])
def test_duplicated_energies(ceimap, tmp_path, writer):
    energies = B.NI_ENERGIES.copy()
    energies[5] = energies[4]
    write = {"h5": B.write_h5, "ncb": B.write_ncb, "tif": B.write_tif_stack}[writer]
    stack = write(tmp_path, st=B.stack(energies))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "849 eV appears more than once")


def test_energies_of_the_other_edge_in_a_manifest(ceimap, tmp_path):
    B.write_sem(tmp_path)
    B.write_h5(tmp_path, "s_l.hdf5", B.stack(B.S_ENERGIES, edge="S-L"))
    manifest = B.write_manifest(tmp_path, stacks=(("Ni-L", "s_l.hdf5"),))
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest,
            "says Ni-L", "S-L edge")


def test_energies_of_the_other_edge_on_the_command_line(ceimap, tmp_path):
    stack = B.write_h5(tmp_path)  # Ni-L energies given as S-L
    refused(ceimap(*run_args(tmp_path, stack, edge="S-L")), outdir(tmp_path), stack, "files swapped")


def test_energies_in_kev(ceimap, tmp_path):
    stack = B.write_ncb(tmp_path, st=B.stack(B.NI_ENERGIES / 1e3))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "look like keV", "Ni-L")


def test_stack_with_too_few_energies_in_the_ni_l3_window(ceimap, tmp_path):
    energies = np.array([840.0, 846.0, 850.0, 852.0, 856.0, 860.0, 866.0, 870.0, 875.0])
    stack = B.write_h5(tmp_path, st=B.stack(energies))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "at least 8 energies", "it has 4")


def test_edge_energy_needs_match_the_spectral_fits():
    """check_lamella's windows are the fits' own: 1 energy fewer than needed makes the fit itself fail."""
    from ceimap.segment.lamella import EDGE_ENERGY_NEEDS
    from ceimap.segment.spectra import egt2g_map, s_edge_map

    for edge, fit in (("Ni-L", egt2g_map), ("S-L", s_edge_map)):
        lo, hi, n_min, _ = EDGE_ENERGY_NEEDS[edge]
        inside = np.linspace(lo, hi, n_min - 1)
        energies = np.concatenate([[lo - 3.0], inside, [hi + 3.0]])
        od = B.stack(energies, data=np.random.default_rng(0).uniform(0.1, 1.0, (energies.size, 6, 6)),
                     edge=edge, kind="od")
        with pytest.raises(ValueError, match=f"only {n_min - 1} energies"):
            fit(od)
        just_outside = np.concatenate([[lo - 0.01], inside[1:], [hi + 0.01]])
        od = B.stack(just_outside, data=np.ones((just_outside.size, 6, 6)), edge=edge, kind="od")
        with pytest.raises(ValueError, match=f"only {n_min - 2} energies"):
            fit(od)


# -------------------------------------------------------------------------------------------------------
# values
# -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_values(ceimap, tmp_path, bad):
    data = B.counts(B.NI_ENERGIES)
    data[4, 2, 7] = bad
    stack = B.write_h5(tmp_path, st=B.stack(data=data))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "NaN or infinite", "frame 4", "row 2")


def test_nan_in_a_tiff_stack(ceimap, tmp_path):
    data = B.counts(B.NI_ENERGIES)
    data[0, 0, 0] = np.nan
    stack = B.write_tif_stack(tmp_path, st=B.stack(data=data))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "NaN or infinite")


def test_frame_without_counts(ceimap, tmp_path):
    data = B.counts(B.NI_ENERGIES)
    data[6] = 0
    stack = B.write_ncb(tmp_path, st=B.stack(data=data))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "1 of 15 frame(s) hold no counts",
            "851 eV")


def test_negative_counts_everywhere(ceimap, tmp_path):
    stack = B.write_h5(tmp_path, st=B.stack(data=-B.counts(B.NI_ENERGIES)))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "15 of 15 frame(s) hold no counts")


def test_some_zero_or_negative_counts_are_saturated_not_infinite(tmp_path):
    """Graceful: isolated zero / negative counts become the frame's OD ceiling and are counted."""
    from ceimap.segment.stack import optical_density

    data = B.counts(B.NI_ENERGIES)
    data[3, 5, 6] = 0
    data[7, 6, 8] = -4
    st = read_stack(B.write_h5(tmp_path, st=B.stack(data=data)))
    od, report = optical_density(st)
    assert np.all(np.isfinite(od.data))
    assert report["n_zero_counts"] == 2 and report["n_saturated"] >= 2
    assert od.data[3, 5, 6] == pytest.approx(report["od_ceiling"][3])
    assert od.data[7, 6, 8] == pytest.approx(report["od_ceiling"][7])


def test_single_frame_real_image_as_a_stack(ceimap, tmp_path, realdata_dir):
    image = realdata_dir / "pollux_nxstxm" / "Sample_Image_2021-03-16_095.hdf5"
    refused(ceimap(*run_args(tmp_path, image)), outdir(tmp_path), image, "single image")


def test_single_frame_stack(ceimap, tmp_path):
    stack = B.write_tif_stack(tmp_path, st=B.stack(B.NI_ENERGIES[6:7], data=B.counts(B.NI_ENERGIES[6:7])))
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "single image at 851 eV")


# -------------------------------------------------------------------------------------------------------
# geometry: pixel sizes, fields
# -------------------------------------------------------------------------------------------------------

def test_missing_sem_pixel_size(ceimap, tmp_path):
    sem = tmp_path / "sem.tif"
    tifffile.imwrite(sem, B.sem_image())
    refused(ceimap(*run_args(tmp_path, B.write_h5(tmp_path), sem=sem)), outdir(tmp_path), sem, "--sem-pixel-nm")


def test_missing_stack_pixel_size(ceimap, tmp_path):
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        for name in ("sample_x", "sample_y"):
            data = np.zeros_like(fh[f"entry1/counter0/{name}"][()])
            del fh[f"entry1/counter0/{name}"]
            fh[f"entry1/counter0/{name}"] = data
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "pixel step is zero")


def test_sem_and_stxm_fields_of_incompatible_size(ceimap, tmp_path):
    """A pixel size in the wrong unit (µm typed as nm): the fields cannot overlap."""
    stack = B.write_h5(tmp_path)
    sem = B.write_sem(tmp_path)
    result = ceimap("run", "--sem", sem, "--sem-pixel-nm", "0.01", "--stxm", f"Ni-L={stack}", "--out",
                    outdir(tmp_path))
    refused(result, outdir(tmp_path), stack, "1000-fold", "check the pixel sizes")


def test_non_square_stxm_pixels(ceimap, tmp_path):
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        x = fh["entry1/counter0/sample_x"][()]
        del fh["entry1/counter0/sample_x"]
        fh["entry1/counter0/sample_x"] = x * 1.5
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "square pixels")


# -------------------------------------------------------------------------------------------------------
# annotations and training
# -------------------------------------------------------------------------------------------------------

def _train(ceimap, tmp_path, labels):
    B.write_sem(tmp_path)
    B.write_h5(tmp_path)
    manifest = B.write_manifest(tmp_path)
    return ceimap("train", manifest, "--annotations", labels, "--out", tmp_path / "model.npz")


def test_annotations_of_the_wrong_shape(ceimap, tmp_path):
    labels = B.write_annotations(tmp_path, shape=(40, 56))
    line = refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "SEM grid")
    assert "40×56" in line and "48×56" in line


def test_annotations_with_unknown_codes(ceimap, tmp_path):
    labels = B.write_annotations(tmp_path, values=(1, 7))
    refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "found 7")


def test_annotations_in_colour(ceimap, tmp_path):
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, np.zeros((48, 56, 3), np.uint8), photometric="rgb")
    refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "single-channel")


def test_annotations_with_nothing_annotated(ceimap, tmp_path):
    labels = B.write_annotations(tmp_path, values=(0, 0))
    refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "no annotated pixel")


def test_annotations_of_a_single_class(ceimap, tmp_path):
    labels = B.write_annotations(tmp_path, values=(1, 1))
    refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "only class 1")


def test_class_without_annotation_is_named_in_a_warning(tmp_path, capsys, monkeypatch):
    """Graceful: training goes on (the model cannot predict the missing classes); stderr names them."""
    import ceimap.segment.pipeline  # noqa: F401 - loads segment.pipeline

    def stop(*args, **kwargs):
        raise CeimapInputError("stopped before training (test)")

    monkeypatch.setattr(segment.pipeline, "train_classifier", stop)
    labels = B.write_annotations(tmp_path, values=(1, 3))
    B.write_sem(tmp_path)
    B.write_h5(tmp_path)
    manifest = B.write_manifest(tmp_path)
    assert main(["train", str(manifest), "--annotations", str(labels), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "no annotated pixel of class 2 (interphase), 4 (void)" in err and "never predict" in err


# -------------------------------------------------------------------------------------------------------
# lamellae with nothing to measure: statistics not computable, with the reason
# -------------------------------------------------------------------------------------------------------

def _analyse(scene):
    from ceimap.segment.spectra import EgT2gMap
    from ceimap.stats.analysis import AnalysisParameters, StxmGrid, analyse_maps
    from stats_scenes import NI_MATRIX, SEM_PIXEL_NM, STXM_PIXEL_NM

    return analyse_maps(scene["classes"], scene["particles"], SEM_PIXEL_NM,
                        EgT2gMap(scene["egt2g"], scene["egt2g_sigma"], scene["egt2g_valid"]),
                        StxmGrid(NI_MATRIX, STXM_PIXEL_NM), parameters=AnalysisParameters(n_boot=19))


def test_lamella_without_voids_marks_the_void_comparison_not_computable():
    import json

    from stats_scenes import lamella_scene

    s = _analyse(lamella_scene(3, void_sector_deg=0.0, n_rows=2, n_cols=2)).summary
    assert s["class_fractions"]["void"] == 0.0 and s["n_particles"] == 4
    test = s["tests"]["surface_electrolyte_vs_void"]
    assert test["p_value"] is None and "0 with a void band" in test["reason"]
    assert s["egt2g"]["surface_void"]["n"] == 0 and s["egt2g"]["surface_void"]["mean"] is None
    assert s["egt2g"]["bulk"]["n"] > 0  # what can be measured still is
    json.dumps(s, allow_nan=False)


def test_lamella_without_particles_marks_every_particle_statistic_not_computable():
    import json

    from stats_scenes import lamella_scene

    scene = lamella_scene(3, n_rows=2, n_cols=2)
    scene["classes"][np.isin(scene["classes"], (1, 2))] = 3
    scene["particles"][:] = 0
    a = _analyse(scene)
    s = a.summary
    assert s["n_particles"] == 0 and len(a.particles) == 0 and len(a.thickness) == 0
    assert s["interphase_thickness_nm"]["mean"] is None and "0 boundary samples" in s["interphase_thickness_nm"]["reason"]
    assert s["bimodality"]["bulk_particles"]["bimodal"] is None and s["bimodality"]["bulk_particles"]["reason"]
    for key in ("egt2g_vs_size", "egt2g_vs_contact_ratio"):
        assert s["correlations"][key]["r"] is None and "0 unit(s)" in s["correlations"][key]["reason"]
    assert s["tests"]["surface_electrolyte_vs_void"]["reason"]
    json.dumps(s, allow_nan=False)


# -------------------------------------------------------------------------------------------------------
# manifests
# -------------------------------------------------------------------------------------------------------

def test_manifest_naming_a_missing_file(ceimap, tmp_path):
    B.write_sem(tmp_path)
    manifest = B.write_manifest(tmp_path, stacks=(("Ni-L", "ni_l_missing.hdf5"),))
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest,
            "ni_l_missing.hdf5", "does not exist")


def test_manifest_path_escaping_its_folder_is_followed_and_checked(ceimap, tmp_path):
    """``..`` is allowed (data often sit beside the analysis folder) but must name a usable file."""
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    B.write_h5(folder)
    manifest = B.write_manifest(folder, sem="../../../../../../../../../../etc/passwd")
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), "/etc/passwd",
            "not a readable TIFF", "listed as 'sem.path'")


def test_manifest_path_of_an_unknown_users_home(ceimap, tmp_path):
    """``~name/…`` of a user the machine does not know (found by tools/fuzz_readers.py: a RuntimeError from
    pathlib, exit 1, before)."""
    B.write_sem(tmp_path)
    manifest = B.write_manifest(tmp_path, stacks=(("Ni-L", "~i_l.hdf5"),))
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest,
            "'~i_l.hdf5' is no user's home folder")


def test_manifest_naming_a_device(ceimap, tmp_path):
    """/dev/zero would be read forever: only regular files are read."""
    B.write_h5(tmp_path)
    manifest = B.write_manifest(tmp_path, sem="/dev/zero")
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest,
            "/dev/zero", "not a regular file")


def test_manifest_naming_a_folder(ceimap, tmp_path):
    B.write_sem(tmp_path)
    (tmp_path / "stacks").mkdir()
    manifest = B.write_manifest(tmp_path, stacks=(("Ni-L", "stacks"),))
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest, "a folder")


def test_manifest_that_is_not_toml(ceimap, tmp_path):
    manifest = tmp_path / "lamella.toml"
    manifest.write_text('name = "x"\n[sem\npath = "sem.tif"\n')
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest, "not valid TOML")


def test_manifest_without_ni_l(ceimap, tmp_path):
    B.write_sem(tmp_path)
    B.write_h5(tmp_path, "s_l.hdf5", B.stack(B.S_ENERGIES, edge="S-L"))
    manifest = B.write_manifest(tmp_path, stacks=(("S-L", "s_l.hdf5"),))
    refused(ceimap("run", manifest, "--out", outdir(tmp_path)), outdir(tmp_path), manifest,
            "a Ni-L stack is required", "found edges: S-L")


# -------------------------------------------------------------------------------------------------------
# untrusted files: HDF5 that points elsewhere, headers claiming absurd sizes, tampered models
# -------------------------------------------------------------------------------------------------------

def test_hdf5_external_link_refused(ceimap, tmp_path):
    secret = B.write_h5(tmp_path, "elsewhere.hdf5")
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        del fh["entry1/counter0/data"]
        fh["entry1/counter0/data"] = h5py.ExternalLink(str(secret), "/entry1/counter0/data")
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "external link", "elsewhere.hdf5")


def test_hdf5_virtual_dataset_refused(ceimap, tmp_path):
    source = B.write_h5(tmp_path, "source.hdf5")
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        shape, dtype = fh["entry1/counter0/data"].shape, fh["entry1/counter0/data"].dtype
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(source), "entry1/counter0/data", shape=shape)
        del fh["entry1/counter0/data"]
        fh["entry1/counter0"].create_virtual_dataset("data", layout)
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "virtual dataset", "source.hdf5")


def test_hdf5_external_raw_storage_refused(ceimap, tmp_path):
    """A dataset whose values live in another file: here /etc/hostname-like raw bytes."""
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(15 * 12 * 14, dtype="<u2").tobytes())
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        del fh["entry1/counter0/data"]
        fh["entry1/counter0"].create_dataset("data", shape=(15, 12, 14), dtype="<u2",
                                             external=[(str(raw), 0, raw.stat().st_size)])
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "external raw file")


def test_hdf5_claiming_an_absurd_size(ceimap, tmp_path):
    stack = B.write_h5(tmp_path)
    with h5py.File(stack, "r+") as fh:
        del fh["entry1/counter0/data"]
        fh["entry1/counter0"].create_dataset("data", shape=(15, 10**6, 10**6), dtype="<u2", chunks=(1, 64, 64))
    assert stack.stat().st_size < 100_000  # a tiny file that claims 15 × 10¹² values
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), stack, "15 × 1000000 × 1000000",
            "TiB of memory", "refused")


def _tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A small valid TIFF whose ImageWidth / ImageLength tags are rewritten to claim another size."""
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tif.pages[0].tags[name]
            assert tag.dtype == 3 or tag.dtype == 4
            if tag.dtype == 3:  # SHORT: make it LONG in place (the value field holds 4 bytes)
                raw[tag.offset + 2: tag.offset + 4] = (4).to_bytes(2, "little")
            raw[tag.valueoffset: tag.valueoffset + 4] = value.to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return path


def test_sem_tiff_claiming_an_absurd_size(ceimap, tmp_path):
    sem = _tiff_claiming(tmp_path / "sem.tif", 10**6, 10**6)
    refused(ceimap(*run_args(tmp_path, B.write_h5(tmp_path), sem=sem)), outdir(tmp_path), sem,
            "1000000 × 1000000", "memory")


def test_annotations_claiming_an_absurd_size(ceimap, tmp_path):
    labels = _tiff_claiming(tmp_path / "labels.tif", 4_000_000, 4_000_000)
    refused(_train(ceimap, tmp_path, labels), tmp_path / "model.npz", labels, "4000000 × 4000000", "memory")


def test_dat_claiming_an_absurd_size(ceimap, tmp_path):
    stack = B.write_ncb(tmp_path)
    dat = stack.with_suffix(".dat")
    lines = dat.read_text().splitlines()
    lines[0] = "1000000 1000000 -1"
    dat.write_text("\n".join(lines) + "\n")
    refused(ceimap(*run_args(tmp_path, stack)), outdir(tmp_path), dat, "1000000 × 1000000", "memory")


def test_tampered_model_refused_by_the_cli(ceimap, tmp_path):
    import json

    from ceimap.segment.classifier import PixelClassifier, TrainingSamples
    from ceimap.segment.features import FeatureSpec

    spec = FeatureSpec()
    rng = np.random.default_rng(0)
    samples = TrainingSamples("x", rng.normal(size=(40, len(spec.names))).astype(np.float32),
                              np.repeat(np.arange(1, 5, dtype=np.uint8), 10), B.SEM_PIXEL_NM,
                              {"Ni-L": B.STXM_PIXEL_NM}, {"Ni-L": (845.0, 870.0)})
    good = tmp_path / "good.npz"
    PixelClassifier(spec, [samples]).save(good)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["features"] = arrays["features"] + np.float32(1.0)  # the stored hash no longer matches
    model = tmp_path / "tampered.npz"
    np.savez(model, **arrays)
    assert json.loads(arrays["header"].tobytes())["sha256"]
    B.write_sem(tmp_path)
    stack = B.write_h5(tmp_path)
    result = ceimap("run", "--sem", tmp_path / "sem.tif", "--stxm", f"Ni-L={stack}", "--model", model,
                    "--out", outdir(tmp_path))
    refused(result, outdir(tmp_path), model, "SHA-256")


# -------------------------------------------------------------------------------------------------------
# every format, valid: read, and accepted up to the processing stages
# -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["h5", "tif", "ncb", "als"])
def test_valid_small_lamella_of_every_format_reaches_processing(tmp_path, fmt, monkeypatch, capsys):
    """The control for everything above: the same small files, unharmed, are accepted."""
    import ceimap.stats.run  # noqa: F401 - loads stats.run

    class Reached(Exception):
        pass

    def reached(lamella, **kwargs):
        assert set(lamella.stacks) == {"Ni-L", "S-L"}
        raise Reached

    monkeypatch.setattr(stats.run, "process_lamella", reached)
    manifest = B.valid_lamella(tmp_path / "in", fmt)
    with pytest.raises(Reached):
        from ceimap.stats.cli import cmd_run, build_parser
        cmd_run(build_parser().parse_args(["run", str(manifest), "--out", str(outdir(tmp_path))]))
    assert not (outdir(tmp_path)).exists()


# -------------------------------------------------------------------------------------------------------
# no code path deserialises objects from a file
# -------------------------------------------------------------------------------------------------------

def _unsafe_calls(source: str) -> list[tuple[int, str]]:
    """Calls that can execute code or build arbitrary objects from file contents (see the test below)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = ast.unparse(func)
        keywords = {k.arg: k.value for k in node.keywords}
        last = name.rsplit(".", 1)[-1]
        if name in ("np.load", "numpy.load"):
            value = keywords.get("allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                found.append((node.lineno, f"{name} without allow_pickle=False"))
        elif name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load", "dill.loads", "cloudpickle.load",
                      "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open", "torch.load",
                      "yaml.unsafe_load", "yaml.full_load", "skops.io.load", "sio.load") or last == "read_pickle":
            found.append((node.lineno, name))
        elif name == "yaml.load" and "SafeLoader" not in ast.unparse(node):
            found.append((node.lineno, "yaml.load without SafeLoader"))
        elif name in ("eval", "exec", "compile", "__import__"):
            found.append((node.lineno, name))
    return found


def test_unsafe_call_finder_finds_what_it_should():
    bad = ("import numpy as np\nnp.load(f)\nnp.load(f, allow_pickle=True)\nimport pandas as pd\npd.read_pickle(f)\n"
           "eval(text)\nimport yaml\nyaml.load(t)\npickle.loads(b)\n")
    assert [line for line, _ in _unsafe_calls(bad)] == [2, 3, 5, 6, 8, 9]
    assert _unsafe_calls("np.load(f, allow_pickle=False)\nyaml.load(t, Loader=yaml.SafeLoader)\n") == []


def test_no_package_deserialises_objects_from_files():
    """segment, stats, napari_plugin and tools: no pickle / joblib / dill / marshal / shelve / torch loads,
    no ``np.load`` without an explicit ``allow_pickle=False``, no pandas pickles, no unsafe YAML, no
    eval / exec / __import__. (tests/segment/test_classifier.py scans the same by text patterns.)"""
    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("segment", "stats", "napari_plugin", "tools"):
        for path in sorted((repo / package).rglob("*.py")):
            for line, what in _unsafe_calls(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(repo)}:{line}: {what}")
    assert not offenders, "\n".join(offenders)
