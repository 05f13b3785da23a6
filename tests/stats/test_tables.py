"""Per-particle table: exact geometry, perimeter contact ratios and e_g/t_2g by region."""

import numpy as np
import pandas as pd
import pytest

from ceimap.stats.tables import PARTICLE_COLUMNS, particle_table, perimeter_contacts


@pytest.fixture()
def two_particles():
    """Particle 1: a 10×10 px square with electrolyte left, interphase top, void right, particle 2 below.
    Particle 2: a 10×10 square below it, outside (class 0) to its right."""
    classes = np.full((40, 40), 3, np.uint8)
    particles = np.zeros((40, 40), np.uint32)
    classes[5:9, 10:20] = 2          # interphase strip above particle 1
    classes[9:19, 20:25] = 4         # void on its right
    classes[9:19, 10:20] = 1
    particles[9:19, 10:20] = 1
    classes[19:29, 10:20] = 1
    particles[19:29, 10:20] = 2
    classes[19:29, 20:40] = 0        # outside the analysed area right of particle 2
    return classes, particles


def test_perimeter_contacts_count_faces_by_kind(two_particles):
    classes, particles = two_particles
    faces = perimeter_contacts(classes, particles)
    # particle 1: left 10 electrolyte + top 10 interphase; right 10 void; bottom 10 particle 2
    assert faces.loc[1].tolist() == [20, 10, 10, 0]
    # particle 2: left 10 + bottom 10 electrolyte, top 10 particle 1, right 10 outside
    assert faces.loc[2].tolist() == [20, 0, 10, 10]


def test_image_border_counts_as_outside():
    classes = np.full((5, 5), 3, np.uint8)
    classes[0:2, 0:2] = 1
    faces = perimeter_contacts(classes, (classes == 1).astype(int))
    assert faces.loc[1].tolist() == [4, 0, 0, 4]


def test_particle_table_geometry_and_ratios(two_particles):
    classes, particles = two_particles
    pixels = pd.DataFrame({"x": [0, 1, 2, 3, 4, 5, 6], "y": [0] * 7,
                           "particle_id": [1, 1, 1, 1, 2, 2, 0],
                           "region": ["bulk", "bulk", "surface_electrolyte", "surface_void", "bulk",
                                      "interphase", "electrolyte"],
                           "egt2g": [1.5, 1.7, 1.2, 1.8, 1.4, 1.1, np.nan],
                           "egt2g_sigma": [0.01] * 7})
    # an edge pixel (within the probe's reach of the neighbours) enters no particle statistic
    pixels.loc[len(pixels)] = {"x": 7, "y": 0, "particle_id": 1, "region": "nmc_edge", "egt2g": 0.5,
                               "egt2g_sigma": 0.01}
    t = particle_table(classes, particles, 10.0, pixels).set_index("particle_id")
    assert list(t.reset_index().columns[:len(PARTICLE_COLUMNS)]) == PARTICLE_COLUMNS
    assert t.loc[1, "area_nm2"] == pytest.approx(100 * 100.0)
    assert t.loc[1, "equivalent_diameter_nm"] == pytest.approx(np.sqrt(4 * 10000 / np.pi))
    assert t.loc[1, "centroid_x_nm"] == pytest.approx(14.5 * 10)
    assert t.loc[1, "centroid_y_nm"] == pytest.approx(13.5 * 10)
    assert t.loc[1, "contact_ratio_electrolyte"] == pytest.approx(0.5)
    assert t.loc[1, "contact_ratio_void"] == pytest.approx(0.25)
    assert t.loc[1, "contact_ratio_nmc"] == pytest.approx(0.25)
    assert t.loc[2, "contact_ratio_electrolyte"] == pytest.approx(20 / 30)
    assert t.loc[2, "perimeter_fraction_outside"] == pytest.approx(0.25)
    # whole-particle statistics over NMC regions only (not the interphase)
    assert t.loc[1, "egt2g_mean"] == pytest.approx(np.mean([1.5, 1.7, 1.2, 1.8]))
    assert t.loc[1, "egt2g_sd"] == pytest.approx(np.std([1.5, 1.7, 1.2, 1.8], ddof=1))
    assert t.loc[1, "egt2g_n"] == 4
    assert t.loc[1, "egt2g_surface_electrolyte_mean"] == pytest.approx(1.2)
    assert t.loc[1, "egt2g_surface_void_mean"] == pytest.approx(1.8)
    assert t.loc[1, "egt2g_bulk_mean"] == pytest.approx(1.6)
    assert t.loc[2, "egt2g_mean"] == pytest.approx(1.4) and np.isnan(t.loc[2, "egt2g_sd"])
    assert np.isnan(t.loc[2, "egt2g_surface_void_mean"]) and t.loc[2, "egt2g_surface_void_n"] == 0
    assert t.loc[2, "egt2g_interphase_mean"] == pytest.approx(1.1)


def test_invalid_pixels_do_not_count(two_particles):
    classes, particles = two_particles
    pixels = pd.DataFrame({"x": [0, 1], "y": [0, 0], "particle_id": [1, 1], "region": ["bulk", "bulk"],
                           "egt2g": [1.5, np.nan], "egt2g_sigma": [0.01, np.nan]})
    t = particle_table(classes, particles, 10.0, pixels).set_index("particle_id")
    assert t.loc[1, "egt2g_n"] == 1 and t.loc[1, "egt2g_mean"] == pytest.approx(1.5)
    assert t.loc[2, "egt2g_n"] == 0 and np.isnan(t.loc[2, "egt2g_mean"])


def test_no_particles_gives_an_empty_table():
    classes = np.full((10, 10), 3, np.uint8)
    pixels = pd.DataFrame(columns=["x", "y", "particle_id", "region", "egt2g", "egt2g_sigma"])
    t = particle_table(classes, np.zeros((10, 10), np.uint32), 10.0, pixels)
    assert len(t) == 0 and list(t.columns[:len(PARTICLE_COLUMNS)]) == PARTICLE_COLUMNS
