"""Bad input found only by registering: SEM and STXM of different places, images that cannot be registered.

Rows "SEM and STXM of comparable size but of different places" and "registration that fails from every start"
of docs/bad_input.md. The files are small scenes of disks (an SEM of 256 × 256 px at 10 nm, an STXM stack of
64 × 64 px at 40 nm; on 40 × 40 px fields of 8 disks the MI statistic is too noisy, see the docs), so that
every test registers in a few seconds; they run the real CLI up to the
registration (the stages after it are replaced by a stop).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

import bad_input_files as B  # noqa: E402
from ceimap.stats.cli import main  # noqa: E402


def disks(seed: int, shape=(256, 256), n: int = 16) -> np.ndarray:
    """A scene of ``n`` disks of radius 8–22 SEM px (1 inside, 0 outside)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    img = np.zeros(shape)
    for _ in range(n * max(1, nx // ny)):
        cy, cx = rng.uniform(15, ny - 15), rng.uniform(15, nx - 15)
        img[np.hypot(yy - cy, xx - cx) < rng.uniform(8, 22)] = 1.0
    return img


def sem_of(scene: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed + 1000)
    return np.clip(80 + 120 * ndimage.gaussian_filter(scene, 1) + noise.normal(0, 5, scene.shape), 0, 255
                   ).astype(np.uint8)


def stxm_stack_of(scene: np.ndarray, seed: int):
    """Ni-L counts of the scene seen by a 40 nm STXM (4 SEM px per STXM px, 80 nm blur)."""
    ny, nx = (n // 4 for n in scene.shape)
    od = ndimage.gaussian_filter(scene, 2).reshape(ny, 4, nx, 4).mean(axis=(1, 3))
    energies = B.NI_ENERGIES
    scale = 0.5 + np.linspace(0.0, 1.0, energies.size)[:, None, None]
    rng = np.random.default_rng(seed + 2000)
    return B.stack(energies, data=rng.poisson(3000.0 * np.exp(-od[None] * scale)).astype(float))


class Registered(BaseException):
    """Raised by the stop put after the registration (not an Exception: the CLI must not catch it)."""


@pytest.fixture
def ceimap_to_registration(monkeypatch, capsys):
    """``ceimap run`` through reading, checking, OD and registration; stops (Registered) after it."""
    from ceimap.stats import run as stats_run
    from ceimap.segment.pipeline import preprocess_lamella

    def up_to_registration(lamella, **kwargs):
        out = preprocess_lamella(lamella, accept_unmatched=kwargs.get("accept_unmatched", False))
        raise Registered(out[3])

    monkeypatch.setattr(stats_run, "process_lamella", up_to_registration)

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except Registered as stop:
            return "registered", stop.args[0]
        return code, capsys.readouterr().err
    return run


def write_case(folder: Path, stxm_scene: np.ndarray, sem_scene: np.ndarray, seed: int):
    folder.mkdir(parents=True, exist_ok=True)
    sem = B.write_sem(folder, image=sem_of(sem_scene, seed))
    stack = B.write_h5(folder, st=stxm_stack_of(stxm_scene, seed))
    return sem, stack, folder.with_name(folder.name + "-out")


def one_line_refusal(result, out: Path, *words):
    code, err = result
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("ceimap: error: "), err
    for word in words:
        assert str(word).lower() in lines[0].lower(), (word, lines[0])
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_sem_and_stxm_of_the_same_place_pass_the_chance_test(ceimap_to_registration, tmp_path, seed):
    """The control: the matching pair is registered and kept, with its chance test recorded."""
    scene = disks(seed)
    sem, stack, out = write_case(tmp_path / "in", scene, scene, seed)
    status, registrations = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out)
    assert status == "registered"
    chance = registrations["Ni-L"].metrics["chance"]
    assert chance["better_than_chance"]
    edges, info = chance["edge_correlation"], chance["mutual_information"]
    assert edges["margin"] > 0 and edges["p_value"] < chance["alpha"]
    # MI is tested when at least 3 turned/mirrored copies overlap the SEM as much as half the image does
    assert info["better_than_chance"] and ("note" in info or info["p_value"] < chance["alpha"])
    assert registrations["Ni-L"].metrics["scale_sem_px_per_stxm_px"] == pytest.approx(4.0, rel=0.02)


@pytest.mark.parametrize("seed", [0, 1])
def test_sem_of_another_lamella_is_refused(ceimap_to_registration, tmp_path, seed):
    """SEM and STXM fields of the same size and pixel sizes, but of two different scenes."""
    sem, stack, out = write_case(tmp_path / "in", disks(seed), disks(seed + 100), seed)
    result = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out)
    one_line_refusal(result, out, stack, sem, "do not show the same place", "no better than chance",
                     "significance 0.01", "edge correlation", "mutual information")


def test_sem_crop_from_elsewhere_in_the_same_scene_is_refused(ceimap_to_registration, tmp_path):
    """One scene, twice the SEM field: the STXM sees its left half, the SEM file is a crop of its right half."""
    wide = disks(7, shape=(256, 512))
    sem, stack, out = write_case(tmp_path / "in", wide[:, :256], wide[:, 256:], 7)
    result = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out)
    one_line_refusal(result, out, stack, sem, "do not show the same place")


def test_the_crop_of_the_same_scene_that_holds_the_stxm_field_is_kept(ceimap_to_registration, tmp_path):
    """The control of the previous test: the crop of the STXM's own half."""
    wide = disks(7, shape=(256, 512))
    sem, stack, out = write_case(tmp_path / "in", wide[:, :256], wide[:, :256], 7)
    status, registrations = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out)
    assert status == "registered" and registrations["Ni-L"].metrics["chance"]["better_than_chance"]


def test_blank_sem_fails_registration_from_every_start_with_exit_2(ceimap_to_registration, tmp_path):
    """A featureless (one grey value) SEM image: ITK's registration cannot start from anywhere."""
    sem, stack, out = write_case(tmp_path / "in", disks(0), disks(0), 0)
    B.write_sem(tmp_path / "in", image=np.full((256, 256), 117, np.uint8))
    result = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out)
    one_line_refusal(result, out, stack, sem, "cannot be registered", "failed from every start",
                     "the SEM image is featureless")


def test_chance_refusal_names_the_manifest_files(ceimap_to_registration, tmp_path):
    """Through a LAMELLA.toml too: both files named, exit 2, no output."""
    folder = tmp_path / "in"
    sem, stack, out = write_case(folder, disks(3), disks(103), 3)
    manifest = B.write_manifest(folder)
    result = ceimap_to_registration("run", manifest, "--out", out)
    one_line_refusal(result, out, stack.name, sem.name, "no better than chance")


def test_accept_registration_keeps_an_unmatched_registration_and_records_its_test(ceimap_to_registration, tmp_path):
    """The way out for a small or symmetric field that does match: ``--accept-registration`` keeps the
    registration the refusal would have rejected, with the failed chance test in its metrics; the refusal
    message names the option."""
    sem, stack, out = write_case(tmp_path / "in", disks(0), disks(100), 0)
    line = one_line_refusal(ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}", "--out", out),
                            out, "--accept-registration")
    assert "no better than chance" in line
    status, registrations = ceimap_to_registration("run", "--sem", sem, "--stxm", f"Ni-L={stack}",
                                                   "--accept-registration", "--out", out)
    assert status == "registered"
    assert registrations["Ni-L"].metrics["chance"]["better_than_chance"] is False
