"""napari readers: ceimap inputs (``LAMELLA.toml``, STXM stacks) and ceimap run folders.

``get_reader(path)`` returns a reader function for what ceimap understands and None for anything else, so
napari falls back to its other readers:

=========================================  =========================================================
path                                       layers
=========================================  =========================================================
``*.toml`` (a LAMELLA manifest)            SEM image (scale = pixel size in nm), one OD stack per edge
                                           registered onto the SEM frame by its affine, annotations
``*.hdf5 *.h5 *.nxs *.stxm *.hdf``         NXstxm stack as OD with an energy slider (scale in nm)
``*.hdr`` (+ ``.xim``), ``*.ncb`` (+.dat)  ALS / aXis2000 stack, likewise
``*.tif *.tiff`` with an energy sidecar    TIFF stack, likewise (plain TIFFs are left to napari)
a run folder (``classes.tif`` inside)      SEM, e_g/t_2g map, classes and particles as labels
a folder holding one ``lamella.toml``      as the manifest
=========================================  =========================================================

Every reader is a plain function returning a list of napari LayerData tuples ``(data, kwargs, type)``;
nothing here needs Qt or a viewer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ._layers import classes_layer, egt2g_layer, particles_layer, sem_layer, stack_layer

HDF5_EXTENSIONS = (".hdf5", ".h5", ".nxs", ".stxm", ".hdf")
RUN_FOLDER_MARKER = "classes.tif"


def _single_path(path):
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return Path(path)


def _as_text(value) -> str:
    """Decode an HDF5 attribute or small dataset value (bytes, str, 1-element arrays) to str."""
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value)


def _looks_like_nxstxm(path: Path) -> bool:
    """An HDF5 file with an NXentry that is NXstxm (or states no definition); reads no image data."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            for obj in f.values():
                if not isinstance(obj, h5py.Group) or _as_text(obj.attrs.get("NX_class", "")) != "NXentry":
                    continue
                definition = obj.get("definition")
                if isinstance(definition, h5py.Dataset):
                    definition = definition[()]
                else:
                    definition = obj.attrs.get("definition")
                if definition is None or "stxm" in _as_text(definition).lower():
                    return True
    except (OSError, ValueError):
        return False
    return False


def _manifest_in(folder: Path) -> Path | None:
    found = [p for p in folder.iterdir() if p.is_file() and p.name.lower() == "lamella.toml"]
    return found[0] if len(found) == 1 else None


def get_reader(path):
    """npe2 reader hook: a reader function for a path ceimap reads, else None.

    Parameters
    ----------
    path : str or list of str
        What the user opened (napari passes a list when several files are dropped; ceimap reads one).

    Returns
    -------
    callable or None
        ``reader(path) -> list of LayerData``.
    """
    p = _single_path(path)
    if p is None or not p.exists():
        return None
    if p.is_dir():
        if (p / RUN_FOLDER_MARKER).is_file():
            return read_run_folder
        if _manifest_in(p) is not None:
            return read_lamella_layers
        return None
    ext = p.suffix.lower()
    if ext == ".toml":
        return read_lamella_layers if _is_lamella_manifest(p) else None
    if ext in HDF5_EXTENSIONS:
        return read_stack_layers if _looks_like_nxstxm(p) else None
    if ext == ".hdr":  # ALS headers hold a ScanDefinition (ENVI and other .hdr files do not)
        try:
            with open(p, "rb") as f:
                head = f.read(65536)
        except OSError:
            return None
        return read_stack_layers if b"ScanDefinition" in head else None
    if ext == ".ncb":
        return read_stack_layers if p.with_suffix(".dat").is_file() else None
    if ext in (".tif", ".tiff"):
        from ceimap.segment.io.tiffstack import energy_sidecar

        return read_stack_layers if energy_sidecar(p) is not None else None
    return None


def _is_lamella_manifest(path: Path) -> bool:
    from ceimap.segment.compat import tomllib

    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(d.get("sem"), dict) or isinstance(d.get("stxm"), list)


def _to_od(stack):
    """OD of a counts stack (automatic I0); the counts themselves, with a warning, when that fails."""
    if stack.kind == "od":
        return stack
    from ceimap.segment.errors import CeimapInputError
    from ceimap.segment.stack import optical_density

    try:
        od, _ = optical_density(stack)
        return od
    except CeimapInputError as exc:
        warnings.warn(f"{stack.source}: shown as counts, optical density failed: {exc}", stacklevel=2)
        return stack


def read_stack_layers(path) -> list[tuple]:
    """One STXM stack as an OD image layer with an energy slider, placed by its pixel size (nm)."""
    from ceimap.segment.io import read_stack

    p = _single_path(path)
    stack = _to_od(read_stack(p))
    return [stack_layer(stack)]


def _register(od, sem):
    """Registration matrix STXM → SEM and how it was found (automatic, else pixel sizes only).

    The same call as the pipeline (:func:`ceimap.segment.register.register_stxm_to_sem` on
    :func:`ceimap.segment.register.contrast_image`), on the stack as read (frames not drift-corrected).
    """
    from ceimap.segment import register

    if hasattr(register, "register_stxm_to_sem"):
        try:
            image = register.contrast_image(od) if hasattr(register, "contrast_image") else np.nanmean(od.data, 0)
            reg = register.register_stxm_to_sem(image, od.pixel_size_nm, sem.image, sem.pixel_size_nm)
            return np.asarray(reg.matrix, float), f"{reg.method} (quality {reg.quality:.2f})"
        except Exception as exc:  # a failed registration must not stop the user from seeing the data
            warnings.warn(f"{od.source}: automatic registration failed ({type(exc).__name__}: {exc}); "
                          "placed by pixel sizes only", stacklevel=2)
    return register.similarity_matrix(od.pixel_size_nm / sem.pixel_size_nm), "pixel sizes only (not registered)"


def lamella_layers(lamella, matrices: dict | None = None, registration: str | None = None,
                   register: bool = True) -> list[tuple]:
    """Layers of a :class:`ceimap.segment.lamella.Lamella`: SEM, one OD stack per edge on the SEM frame, annotations.

    Parameters
    ----------
    lamella : Lamella
    matrices : dict of str to (3, 3) array, optional
        Registration matrix per edge (STXM pixel → SEM pixel); edges without one are registered
        automatically (``register=True``) or placed by pixel sizes.
    registration : str, optional
        How ``matrices`` were obtained (kept in the layer metadata).
    register : bool
        Register edges without a given matrix with :func:`ceimap.segment.register.register_stxm_to_sem`.
    """
    from ceimap.segment.io import read_annotations
    from ceimap.segment.register import similarity_matrix

    sem = lamella.sem
    prefix = f"{lamella.name}: " if lamella.name else ""
    layers = [sem_layer(sem, name=f"{prefix}SEM")]
    layers[0][1]["metadata"].update(lamella=lamella.name, sample=lamella.sample)
    for edge, stack in lamella.stacks.items():
        od = _to_od(stack)
        if matrices and edge in matrices:
            matrix, how = np.asarray(matrices[edge], float), registration or "given"
        elif register:
            matrix, how = _register(od, sem)
        else:
            matrix, how = similarity_matrix(od.pixel_size_nm / sem.pixel_size_nm), "pixel sizes only (not registered)"
        layers.append(stack_layer(od, matrix=matrix, sem_pixel_nm=sem.pixel_size_nm, registration=how,
                                  name=f"{prefix}{edge} {'OD' if od.kind == 'od' else 'counts'}"))
    if lamella.annotations_path is not None:
        ann = read_annotations(lamella.annotations_path, sem.image.shape)
        layers.append(classes_layer(ann, sem.pixel_size_nm, name=f"{prefix}annotations", opacity=0.8))
    return layers


def read_lamella_layers(path, register: bool = True) -> list[tuple]:
    """A ``LAMELLA.toml`` (or a folder holding one) as napari layers (see :func:`lamella_layers`)."""
    from ceimap.segment.io import read_lamella

    p = _single_path(path)
    if p.is_dir():
        p = _manifest_in(p)
    return lamella_layers(read_lamella(p), register=register)


def read_run_folder(path) -> list[tuple]:
    """A ``ceimap run`` output folder: SEM, e_g/t_2g map, classes and particles, on the SEM grid in nm."""
    from ceimap.segment.io.tiff import read_tiff_image

    p = _single_path(path)
    pixel_nm = None
    summary_path = p / "summary.json"
    if summary_path.is_file():
        try:
            pixel_nm = float(json.loads(summary_path.read_text(encoding="utf-8")).get("sem_pixel_nm"))
        except (ValueError, TypeError):
            pixel_nm = None
    if pixel_nm is None or not np.isfinite(pixel_nm) or pixel_nm <= 0:
        warnings.warn(f"{summary_path}: no SEM pixel size; layers are in pixels", stacklevel=2)
        pixel_nm = None
    layers = []

    def _read(name):
        f = p / name
        if not f.is_file():
            return None
        return read_tiff_image(f)

    sem = _read("sem.tif")
    if sem is not None:
        from ceimap.segment.lamella import SemImage

        layers.append(sem_layer(SemImage(sem.astype(np.float32), pixel_nm or 1.0, "summary.json",
                                         str(p / "sem.tif"))))
        if pixel_nm is None:
            layers[-1][1].pop("scale")
            layers[-1][1].pop("units")
    egt2g = _read("egt2g.tif")
    if egt2g is not None:
        layers.append(egt2g_layer(egt2g, pixel_nm))
    classes = _read("classes.tif")
    if classes is not None:
        layers.append(classes_layer(classes, pixel_nm))
    particles = _read("particles.tif")
    if particles is not None:
        layers.append(particles_layer(particles, pixel_nm))
        features = _particle_features(p / "particles.csv", int(particles.max()) if particles.size else 0)
        if features is not None:
            layers[-1][1]["features"] = features
    for data, kwargs, _ in layers:
        kwargs["metadata"]["run_folder"] = str(p)
    return layers


def _particle_features(csv_path: Path, max_id: int):
    """``particles.csv`` as a napari Labels features table (row i = label i, row 0 = background)."""
    import pandas as pd

    if not csv_path.is_file() or max_id <= 0:
        return None
    try:
        table = pd.read_csv(csv_path)
    except (OSError, ValueError):
        return None
    if "particle_id" not in table.columns or table["particle_id"].duplicated().any():
        return None
    table = table.set_index("particle_id")
    table = table[(table.index >= 0) & (table.index <= max_id)]
    return table.reindex(range(max_id + 1)).rename_axis("particle_id").reset_index()
