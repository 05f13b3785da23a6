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
