"""napari sample data: the three example lamellae of ``datasets/`` with their ground truth.

Each sample opens the lamella's SEM image (scale = pixel size in nm), its STXM stacks as optical density
with an energy slider, placed on the SEM frame by the generator's true registration
(``truth/transforms.json``), the sparse annotation strokes and the true class map as Labels layers.
The stacks are shown as measured (drift between energy frames not yet corrected).

The examples live in the source tree (``datasets/`` beside the packages); set ``CEIMAP_DATASETS`` to use
another copy.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

EXAMPLES = {
    "charged": "one charge to 4.25 V",
    "cycled_4p25v": "100 cycles to 4.25 V",
    "cycled_4p7v": "100 cycles to 4.7 V",
}
"""Example lamellae shipped in ``datasets/``: folder name → condition."""


def datasets_dir() -> Path:
    """Where the example lamellae are: ``$CEIMAP_DATASETS``, else ``datasets/`` of the source tree."""
    env = os.environ.get("CEIMAP_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "datasets"


def example_layers(name: str) -> list[tuple]:
    """Layer data of one example lamella (see the module docstring).

    Parameters
    ----------
    name : {"charged", "cycled_4p25v", "cycled_4p7v"}

    Returns
    -------
    list of (data, kwargs, layer_type)
    """
    import tifffile

    from ceimap.segment.errors import CeimapInputError
    from ceimap.segment.io import read_lamella

    from ._layers import classes_layer
    from ._reader import lamella_layers

    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {sorted(EXAMPLES)}")
    folder = datasets_dir() / name
    manifest = folder / "lamella.toml"
    if not manifest.is_file():
        raise CeimapInputError(
            "example lamella not found: ceimap's examples live in the source tree's datasets/ folder "
            "(or set CEIMAP_DATASETS)", path=manifest)
    lamella = read_lamella(manifest)
    transforms = folder / "truth" / "transforms.json"
    matrices = None
    if transforms.is_file():
        t = json.loads(transforms.read_text(encoding="utf-8"))
        matrices = {edge: entry["matrix"] for edge, entry in t.items()
                    if isinstance(entry, dict) and "matrix" in entry}
    lamella = replace(lamella, name=name)  # layer names "<example>: SEM", "<example>: Ni-L OD", ...
    layers = lamella_layers(lamella, matrices=matrices, registration="truth (synthetic example)", register=False)
    truth_classes = folder / "truth" / "classes.tif"
    if truth_classes.is_file():
        layers.append(classes_layer(tifffile.imread(truth_classes), lamella.sem.pixel_size_nm,
                                    name=f"{name}: truth classes", visible=False))
    return layers


def charged() -> list[tuple]:
    """Example lamella: one charge to 4.25 V (no resolvable interphase)."""
    return example_layers("charged")


def cycled_4p25v() -> list[tuple]:
    """Example lamella: 100 cycles to 4.25 V."""
    return example_layers("cycled_4p25v")


def cycled_4p7v() -> list[tuple]:
    """Example lamella: 100 cycles to 4.7 V (cracked particles, bimodal bulk e_g/t_2g)."""
    return example_layers("cycled_4p7v")
