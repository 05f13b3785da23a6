"""ceimap from Python: two example lamellae run, written, read back and compared; a classifier trained and
applied (the README's "In Python" section, end to end). The test suite runs it (tests/test_api.py, --slow).

Usage: ``python3 docs/python_api.py [OUT]`` (default ``./ceimap-python-example``; replaced if it exists).
"""

import shutil
import sys
from pathlib import Path

import ceimap

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    charged = ceimap.run(DATASETS / "charged" / "lamella.toml")
    assert len(charged.particles) == charged.summary["n_particles"]
    assert len(charged.thickness) == charged.summary["interphase_thickness_nm"]["n"]
    print(f"charged: {len(charged.particles)} particles, interphase fraction "
          f"{(charged.classes == ceimap.Class.INTERPHASE).mean():.4f}")
    charged.write(out / "charged")

    model = ceimap.train([DATASETS / "cycled_4p25v" / "lamella.toml"])  # the manifest's annotation strokes
    model.save(out / "model.npz")
    cycled = ceimap.run(DATASETS / "cycled_4p7v" / "lamella.toml", model=out / "model.npz")
    cycled.write(out / "cycled_4p7v")

    result = ceimap.compare([ceimap.read_results(out / "charged"), cycled])
    bulk = result["egt2g_bulk"]
    print(f"bulk e_g/t_2g between samples: {bulk['method']}, p = {bulk['p_value']:.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ceimap-python-example"))
