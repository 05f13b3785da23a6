"""``LAMELLA.toml`` manifests and sparse class annotations.

A manifest names one lamella::

    name = "charged"
    sample = "one charge to 4.25 V"
    annotations = "annotations.tif"        # optional, on the SEM grid

    [sem]
    path = "sem.tif"
    pixel_size_nm = 5.0                     # optional when the TIFF is calibrated

    [[stxm]]
    edge = "Ni-L"
    path = "ni_l.hdf5"

    [[stxm]]
    edge = "S-L"
    path = "s_l.hdf5"

Paths are relative to the manifest. ``[[stxm]]`` tables may also give ``kind``, ``entry``, ``detector``
or ``channel``, passed to :func:`segment.io.read_stack`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..compat import tomllib
from ..edges import EDGES
from ..errors import CeimapInputError
from ..lamella import Lamella
from .tiff import read_tiff_image
from .sem import read_sem
from .stacks import read_stack

__all__ = ["read_lamella", "read_annotations"]

N_CLASSES = 4
"""Largest class code in an annotation image (0 = not annotated, 1 NMC … 4 void)."""

_SEM_KEYS = {"path", "pixel_size_nm"}
_STXM_KEYS = {"edge", "path", "kind", "entry", "detector", "channel"}
_TOP_KEYS = {"name", "sample", "annotations", "sem", "stxm", "description", "notes"}


def _require(table: dict, key: str, kind, where: str, manifest: Path):
    if key not in table:
        raise CeimapInputError(f"missing key '{where}{key}'", path=manifest)
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        words = {str: "string", int: "number", float: "number", dict: "table", list: "list (array)"}
        expected = " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))
        raise CeimapInputError(
            f"key '{where}{key}' must be a {expected}, found {type(value).__name__} {value!r}", path=manifest)
    return value


def _file(manifest: Path, value: str, key: str) -> Path:
    if not value.strip():
        raise CeimapInputError(f"key '{key}' is an empty path", path=manifest)
    try:
        p = Path(value).expanduser()
    except RuntimeError:  # "~name/…" of a user this machine does not know
        raise CeimapInputError(f"key '{key}' names {value!r}, whose '~{value[1:].split('/')[0]}' is no user's "
                               "home folder on this machine", path=manifest) from None
    p = p if p.is_absolute() else manifest.parent / p
    if not p.exists():
        raise CeimapInputError(f"key '{key}' names {value!r}, which does not exist ({p})", path=manifest)
    if not p.is_file():  # a folder, a device (/dev/zero would be read forever), a pipe
        what = "a folder" if p.is_dir() else "not a regular file (a device, pipe or socket)"
        raise CeimapInputError(f"key '{key}' names {value!r}, which is {what} ({p})", path=manifest)
    return p


def _warn_unknown(table: dict, known: set, where: str, manifest: Path):
    unknown = sorted(set(table) - known)
    if unknown:
        warnings.warn(f"{manifest}: unknown key(s) {', '.join(where + k for k in unknown)} ignored", stacklevel=3)


@contextmanager
def _listed_as(key: str, manifest: Path):
    """Add to an error in a listed file where the manifest lists it (the path stays the file's)."""
    try:
        yield
    except CeimapInputError as exc:
        raise CeimapInputError(f"{exc.problem} (listed as '{key}' in {manifest})", path=exc.path) from None


def read_lamella(manifest_path) -> Lamella:
    """Read a ``LAMELLA.toml`` manifest and every file it names.

    Parameters
    ----------
    manifest_path : path-like

    Returns
    -------
    Lamella
        ``input_paths`` lists the manifest, the SEM image, each stack file and its companions
        (``.dat``, ``.xim`` frames, energy lists) and the annotations.

    Raises
    ------
    CeimapInputError
        Missing or malformed manifest, missing key, wrong type, missing file, duplicate edge, a stack whose
        energies belong to another edge than the one it is listed under, annotations that do not fit the
        SEM image, or any error of the files themselves.
    """
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise CeimapInputError("lamella manifest not found", path=manifest)
    try:
        with open(manifest, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CeimapInputError(f"not valid TOML: {exc}", path=manifest) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CeimapInputError(f"cannot read the manifest: {exc}", path=manifest) from None
    _warn_unknown(doc, _TOP_KEYS, "", manifest)

    name = _require(doc, "name", str, "", manifest).strip()
    if not name:
        raise CeimapInputError("key 'name' is empty", path=manifest)
    sample = _require(doc, "sample", str, "", manifest)
    sem_table = _require(doc, "sem", dict, "", manifest)
    _warn_unknown(sem_table, _SEM_KEYS, "sem.", manifest)
    sem_path = _file(manifest, _require(sem_table, "path", str, "sem.", manifest), "sem.path")
    pixel = None
    if "pixel_size_nm" in sem_table:
        pixel = _require(sem_table, "pixel_size_nm", (int, float), "sem.", manifest)
        if not (np.isfinite(pixel) and pixel > 0):
            raise CeimapInputError(f"key 'sem.pixel_size_nm' must be a positive number, found {pixel}",
                                   path=manifest)
    with _listed_as("sem.path", manifest):
        sem = read_sem(sem_path, pixel_size_nm=pixel)
    inputs = [manifest, sem_path]

    stxm_list = _require(doc, "stxm", list, "", manifest)
    if not stxm_list:
        raise CeimapInputError("key 'stxm' lists no stacks; add at least one [[stxm]] table", path=manifest)
    stacks = {}
    for i, entry in enumerate(stxm_list):
        where = f"stxm[{i}]."
        if not isinstance(entry, dict):
            raise CeimapInputError(f"'stxm' item {i} must be a table ([[stxm]] with edge and path)",
                                   path=manifest)
        _warn_unknown(entry, _STXM_KEYS, where, manifest)
        edge = _require(entry, "edge", str, where, manifest).strip()
        if not edge:
            raise CeimapInputError(f"key '{where}edge' is empty", path=manifest)
        if edge in stacks:
            raise CeimapInputError(f"edge {edge!r} is listed twice (key '{where}edge')", path=manifest)
        stack_path = _file(manifest, _require(entry, "path", str, where, manifest), where + "path")
        options = {}
        for key in ("kind", "entry", "detector"):
            if key in entry:
                options[key] = _require(entry, key, str, where, manifest)
        if "channel" in entry:
            options["channel"] = _require(entry, "channel", (str, int), where, manifest)
        try:
            with _listed_as(where + "path", manifest):
                stack = read_stack(stack_path, **options)
        except TypeError as exc:
            raise CeimapInputError(f"key '{where}': {exc}", path=manifest) from None
        guessed = stack.edge
        if edge in EDGES and guessed is not None and guessed != edge and stack.n_energy > 1:
            raise CeimapInputError(
                f"'{where}edge' says {edge} but the energies of {stack_path.name} "
                f"({stack.energies_ev.min():g}–{stack.energies_ev.max():g} eV) span the {guessed} edge",
                path=manifest)
        stacks[edge] = replace(stack, edge=edge, metadata={**stack.metadata, "edge_source": "manifest"})
        inputs.append(Path(stack.source))  # the file actually read (a .xim given → its .hdr)
        inputs += [Path(p) for p in stack.metadata.get("companions", [])]

    annotations_path = None
    if "annotations" in doc:
        annotations_path = _file(manifest, _require(doc, "annotations", str, "", manifest), "annotations")
        with _listed_as("annotations", manifest):
            read_annotations(annotations_path, sem.image.shape)
        inputs.append(annotations_path)

    inputs = list(dict.fromkeys(inputs))  # each file once, in the order read
    return Lamella(name=name, sample=sample, sem=sem, stacks=stacks, annotations_path=annotations_path,
                   manifest_path=manifest, input_paths=inputs)


def read_annotations(path, shape_yx) -> np.ndarray:
    """Read sparse class annotations drawn on the SEM grid.

    Parameters
    ----------
    path : path-like
        An integer image (TIFF, or PNG and other formats scikit-image reads): 0 = not annotated,
        1 NMC, 2 interphase, 3 electrolyte, 4 void.
    shape_yx : tuple of int
        Shape of the SEM image the annotations were drawn on.

    Returns
    -------
    ndarray of uint8, shape ``shape_yx``

    Raises
    ------
    CeimapInputError
        Missing or unreadable file, not a single-channel integer image, wrong shape, values outside 0–4.
    """
    path = Path(path)
    if not path.is_file():
        raise CeimapInputError("annotation image not found", path=path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            img = read_tiff_image(path, "annotation image")
        else:
            from skimage import io as skio
            img = skio.imread(path)
    except CeimapInputError:
        raise
    except Exception as exc:
        raise CeimapInputError(f"not a readable image ({type(exc).__name__}: {exc})", path=path) from None
    img = np.asarray(img)
    if img.ndim != 2:
        raise CeimapInputError(
            f"annotations must be one single-channel label image, found shape {img.shape}", path=path)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)) or not np.all(img == np.round(img)):
            raise CeimapInputError("annotations must be integer class codes 0–4 (found fractional values)",
                                   path=path)
    elif not (np.issubdtype(img.dtype, np.integer) or img.dtype == bool):
        raise CeimapInputError(f"annotations must be integer class codes, found dtype {img.dtype}", path=path)
    shape = tuple(int(s) for s in shape_yx)
    if img.shape != shape:
        raise CeimapInputError(
            f"annotation image is {img.shape[0]}×{img.shape[1]} pixels but the SEM image is "
            f"{shape[0]}×{shape[1]}: annotations must be drawn on the SEM grid", path=path)
    bad = (img < 0) | (img > N_CLASSES)
    if np.any(bad):
        values = np.unique(img[bad])[:5]
        raise CeimapInputError(
            f"annotation values must be 0 (not annotated) or class codes 1–{N_CLASSES}; found "
            f"{', '.join(str(v) for v in values.tolist())}", path=path)
    return img.astype(np.uint8)
