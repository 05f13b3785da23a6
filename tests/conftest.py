"""Shared test configuration: the ``--slow`` switch and the paths of shared test data."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT / "datasets"
REALDATA_DIR = REPO_ROOT.parent / "shared" / "realdata"


def pytest_addoption(parser):
    parser.addoption(
        "--slow", action="store_true", default=False,
        help="also run the slow end-to-end tests (marked 'slow')",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow end-to-end test: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def realdata_dir():
    """The real instrument files of ``../shared/realdata``; skip clearly when absent."""
    if not REALDATA_DIR.is_dir():
        pytest.skip(f"real instrument files not found at {REALDATA_DIR} (../shared/realdata is absent)")
    return REALDATA_DIR


@pytest.fixture(scope="session")
def datasets_dir():
    """The example lamellae shipped in ``datasets/``."""
    return DATASETS_DIR


@pytest.fixture(scope="session")
def small_lamella_manifest(tmp_path_factory):
    """A small synthetic lamella written as files (3 µm field, four particles, Ni-L and S-L; 4.25 V condition,
    seed 11): its ``lamella.toml``. A whole run of it takes seconds."""
    from ceimap.segment.synthetic import make_lamella, make_spec, write_lamella

    spec = make_spec("cycled_4p25v", 11, field_width_nm=3000.0, field_height_nm=3000.0, n_particles=4,
                     particle_diameter_nm=(600.0, 1400.0), particle_diameter_median_nm=1000.0,
                     n_touching_pairs=0, n_narrow_gaps=0, n_free_voids=1)
    return write_lamella(make_lamella(spec), tmp_path_factory.mktemp("small") / "lamella")
