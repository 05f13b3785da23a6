"""Interphase thickness on bands of exactly known width: rings at sub-pixel offsets, straight bands,
facing particles whose bands merge, band edges at the analysed area's border."""

import numpy as np
import pandas as pd
import pytest

from ceimap.stats.thickness import (THICKNESS_COLUMNS, assign_band_to_particles, interphase_thickness,
                             summarise_thickness, thickness_area_check)
from stats_scenes import lamella_scene, ring_classes

RINGS = [(40.0, 43.0), (40.0, 45.3), (50.0, 60.7), (30.0, 32.2)]
OFFSETS = [(0.0, 0.0), (0.3, 0.7), (0.5, 0.5), (0.21, 0.83)]


@pytest.mark.parametrize("r_inner, r_outer", RINGS)
def test_ring_width_at_subpixel_offsets(r_inner, r_outer):
    width = r_outer - r_inner
    for dy, dx in OFFSETS:
        classes, particles = ring_classes(r_inner, r_outer, 110 + dy, 110 + dx)
        df = interphase_thickness(classes, particles, 8.0)
        assert list(df.columns) == THICKNESS_COLUMNS
        assert df["thickness_nm"].mean() / 8.0 == pytest.approx(width, abs=0.12)
        # spread is the digitisation of the ring, well below a pixel
        assert df["thickness_nm"].std() / 8.0 < 0.3
        # sample points lie on the NMC boundary (radius r_inner within a pixel)
        r = np.hypot(df.y_nm / 8.0 - (110 + dy), df.x_nm / 8.0 - (110 + dx))
        assert np.abs(r - r_inner).max() < 1.0
        check = thickness_area_check(classes, particles, 8.0)
        assert check["area_thickness_nm"].iloc[0] / 8.0 == pytest.approx(width, abs=0.12)


def test_methods_agree_on_a_ring_and_edt_is_quantised():
    classes, particles = ring_classes(50.0, 60.7, 110.3, 110.7)
    normal = interphase_thickness(classes, particles, 1.0, method="normal")["thickness_nm"]
    distance = interphase_thickness(classes, particles, 1.0, method="distance")["thickness_nm"]
    edt = interphase_thickness(classes, particles, 1.0, method="edt")["thickness_nm"]
    assert normal.mean() == pytest.approx(10.7, abs=0.1)
    assert distance.mean() == pytest.approx(10.7, abs=0.15)
    assert edt.mean() == pytest.approx(10.7, abs=0.35)
    assert edt.std() > normal.std()
    with pytest.raises(ValueError):
        interphase_thickness(classes, particles, 1.0, method="porespy")


def test_straight_band_is_exact():
    classes = np.full((60, 80), 3, np.uint8)
    classes[:, :30] = 1
    classes[:, 30:37] = 2
    particles = (classes == 1).astype(np.uint32)
    df = interphase_thickness(classes, particles, 5.0, details=True)
    # the band touches the image top and bottom: those samples end at the border and are dropped
    assert df["thickness_nm"].median() == pytest.approx(35.0, abs=0.01)
    assert set(df["outer"]) == {"electrolyte"}
    assert np.allclose(df["x_nm"], 29.5 * 5.0, atol=0.05)


def test_facing_particles_merged_band_is_split_at_the_midline():
    # two disks (radius 35 px) whose edges are 9 px apart (columns 91–99), the gap entirely interphase;
    # elsewhere each wears a 5 px band
    classes, particles = np.full((120, 200), 3, np.uint8), np.zeros((120, 200), np.uint32)
    yy, xx = np.mgrid[0:120, 0:200]
    for pid, cx in ((1, 55.0), (2, 135.0)):
        r = np.hypot(yy - 60, xx - cx)
        classes[(r <= 40) & (classes != 1)] = 2
        classes[r <= 35] = 1
        particles[r <= 35] = pid
    gap = (slice(45, 76), slice(85, 106))
    classes[gap] = np.where(particles[gap] > 0, 1, 2)
    df = interphase_thickness(classes, particles, 10.0, details=True)
    assert (df["outer"] == "particle").sum() > 0
    gap_samples = df[(np.abs(df.y_nm / 10 - 60) < 2) & (np.abs(df.x_nm / 10 - 95) < 10)]
    assert len(gap_samples) >= 4
    # the bands meet half-way: each reads about half the ~95 nm gap (the tie column goes to particle 1,
    # 5.5 vs 4.5 px), never the whole gap
    assert gap_samples["thickness_nm"].max() < 65.0
    assert gap_samples["thickness_nm"].mean() == pytest.approx(50.0, abs=6.0)
    owner = assign_band_to_particles(classes, particles)
    assert np.all(owner[60, 91:95] == 1) and np.all(owner[60, 96:100] == 2)


def test_band_cut_by_the_analysed_area_is_dropped_by_default():
    classes, particles = ring_classes(40.0, 46.0, 110.0, 110.0)
    classes[:, :75] = 0          # left part of the ring outside the analysed area
    particles[:, :75] = 0
    kept = interphase_thickness(classes, particles, 1.0, details=True)
    everything = interphase_thickness(classes, particles, 1.0, details=True, include_outside=True)
    assert "outside" not in set(kept["outer"])
    assert (everything["outer"] == "outside").sum() > 0
    assert kept["thickness_nm"].mean() == pytest.approx(6.0, abs=0.15)


def test_no_interphase_gives_an_empty_table_and_not_resolvable():
    classes = np.full((50, 50), 3, np.uint8)
    classes[10:40, 10:40] = 1
    df = interphase_thickness(classes, (classes == 1).astype(np.uint32), 10.0)
    assert len(df) == 0 and list(df.columns) == THICKNESS_COLUMNS
    s = summarise_thickness(df, 50.0)
    assert s["n"] == 0 and s["resolvable"] is False and s["mean"] is None and "samples" in s["reason"]


def test_summary_resolvability():
    thin = pd.DataFrame({"particle_id": [1] * 50 + [2] * 50, "thickness_nm": np.linspace(20, 40, 100)})
    s = summarise_thickness(thin, 50.0)
    assert s["resolvable"] is False and "below the resolution" in s["reason"]
    assert s["mean"] == pytest.approx(30.0) and s["median"] == pytest.approx(30.0)
    assert s["sd"] == pytest.approx(np.std(np.linspace(20, 40, 100), ddof=1))
    assert s["n"] == 100 and s["n_particles"] == 2
    thick = thin.assign(thickness_nm=thin["thickness_nm"] + 60)
    assert summarise_thickness(thick, 50.0)["resolvable"] is True
    assert summarise_thickness(thick.iloc[:5], 50.0)["resolvable"] is False


def test_scene_with_void_sectors_reads_the_band_width():
    scene = lamella_scene(2, band_px=8)
    df = interphase_thickness(scene["classes"], scene["particles"], 10.0)
    assert df["thickness_nm"].mean() == pytest.approx(80.0, rel=0.03)
    assert df["thickness_nm"].std() < 8.0
    assert set(df["particle_id"]) == set(range(1, 13))


@pytest.mark.parametrize("name, mean_tol, sd_tol", [("cycled_4p25v", 0.10, 0.20), ("cycled_4p7v", 0.10, 0.20)])
def test_thickness_on_the_example_truth_class_maps(datasets_dir, name, mean_tol, sd_tol):
    """On the generator's TRUTH class map the measured band agrees with the generated thickness.

    Pointwise, where the band ends at electrolyte, the two agree within a few nm; the remaining deficit comes
    from merged bands between facing particles (each particle gets half the gap, while the truth reports the
    thickness that was generated before the bands met) and bands cut by voids.
    """
    from ceimap.segment.synthetic import load_truth

    lamella = datasets_dir / name
    if not (lamella / "truth" / "thickness.csv").is_file():
        pytest.skip(f"example lamella {lamella} not generated")
    truth = load_truth(lamella)
    df = interphase_thickness(truth["classes"], truth["particles"], truth["sem_pixel_nm"])
    expected = truth["thickness"]["thickness_nm"]
    assert df["thickness_nm"].mean() == pytest.approx(expected.mean(), rel=mean_tol)
    assert df["thickness_nm"].std() == pytest.approx(expected.std(), rel=sd_tol)
    assert summarise_thickness(df, 50.0)["resolvable"] is True


def test_no_interphase_on_the_charged_example(datasets_dir):
    from ceimap.segment.synthetic import load_truth

    lamella = datasets_dir / "charged"
    if not (lamella / "truth" / "classes.tif").is_file():
        pytest.skip(f"example lamella {lamella} not generated")
    truth = load_truth(lamella)
    df = interphase_thickness(truth["classes"], truth["particles"], truth["sem_pixel_nm"])
    assert summarise_thickness(df, 50.0)["resolvable"] is False


def soft_ring(r_inner, r_outer, cy, cx, shape=(220, 220)):
    """Class probabilities of a ring: the area fraction of each pixel on each side (linear edge model)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(yy - cy, xx - cx)
    p_nmc = np.clip(r_inner - r + 0.5, 0, 1)
    p_in = np.clip(r_outer - r + 0.5, 0, 1)
    prob = np.zeros((5,) + shape)
    prob[1], prob[2], prob[3] = p_nmc, p_in - p_nmc, 1 - p_in
    classes = np.argmax(prob, axis=0).astype(np.uint8)
    return classes, (classes == 1).astype(np.uint32), prob


@pytest.mark.parametrize("r_inner, r_outer", [(40.0, 42.2), (30.0, 31.6), (50.0, 60.7)])
def test_class_probabilities_locate_boundaries_between_pixels(r_inner, r_outer):
    for dy, dx in OFFSETS:
        classes, particles, prob = soft_ring(r_inner, r_outer, 110 + dy, 110 + dx)
        hard = interphase_thickness(classes, particles, 1.0)["thickness_nm"]
        soft = interphase_thickness(classes, particles, 1.0, probabilities=prob)["thickness_nm"]
        assert soft.mean() == pytest.approx(r_outer - r_inner, abs=0.03)
        assert soft.std() < 0.05 < hard.std()
        assert len(soft) == len(hard)
