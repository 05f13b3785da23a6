"""napari layer data from ceimap objects: plain ``(data, kwargs, layer_type)`` tuples, no Qt, no viewer.

World coordinates are nanometres on the SEM frame: an SEM image of pixel size ``p`` gets ``scale = (p, p)``,
so SEM pixel ``(y, x)`` sits at world ``(p·y, p·x)`` (pixel centres at integer indices, as in ceimap and
napari). An STXM stack ``(n_energy, n_y, n_x)`` gets an affine that maps its pixel ``(y, x)`` through the
registration matrix (STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``) and then to nm; the energy axis
is left as a frame index (a slider) and the energies are in ``metadata["energies_ev"]``.
"""

from __future__ import annotations

import numpy as np

from ceimap.segment import Class
from ceimap.stats.summary import FRACTION_CLASSES, class_label

CLASS_NAMES = {Class.OUTSIDE: "outside / not annotated", **{c: class_label(c) for c in FRACTION_CLASSES}}
"""The names of the class codes (:class:`ceimap.Class`) shown in the viewer."""

CLASS_COLORMAP = {Class.OUTSIDE: "transparent", Class.NMC: "#d62728", Class.INTERPHASE: "#2ca02c",
                  Class.ELECTROLYTE: "#1f77b4", Class.VOID: "#7f7f7f", None: "black"}
"""Label colours as in the paper: NMC red, interphase green, electrolyte blue, void grey."""

EGT2G_LIMITS = (0.7, 2.4)
"""Contrast limits of the e_g/t_2g map (the paper's colour scale)."""


def _limits(data: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def affine_stxm_to_world(matrix_xy, sem_pixel_nm: float, n_leading: int = 1) -> np.ndarray:
    """napari affine (row/column order, world in nm) of a stack registered to the SEM grid.

    Parameters
    ----------
    matrix_xy : array_like, shape (3, 3)
        Registration matrix: STXM pixel ``(x, y, 1)`` → SEM pixel ``(x, y, 1)``.
    sem_pixel_nm : float
        SEM pixel size in nm.
    n_leading : int
        Number of leading non-spatial axes (1 for an energy stack, 0 for a single image); they map to
        themselves.

    Returns
    -------
    ndarray, shape (n_leading + 3, n_leading + 3)

    Examples
    --------
    >>> a = affine_stxm_to_world([[4, 0, 2], [0, 4, 3], [0, 0, 1]], 10.0, n_leading=0)
    >>> a @ [1, 1, 1]  # STXM (y=1, x=1) -> SEM (y=7, x=6) -> world nm (70, 60)
    array([70., 60.,  1.])
    """
    m = np.asarray(matrix_xy, dtype=float)
    if m.shape != (3, 3):
        raise ValueError(f"registration matrix must be 3×3, got {m.shape}")
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    yx = swap @ m @ swap  # (y, x, 1) order
    yx[:2, :] *= float(sem_pixel_nm)
    out = np.eye(n_leading + 3)
    out[n_leading:, n_leading:] = yx
    return out


def stxm_world_matrix(matrix_xy, sem_pixel_nm, pixel_size_nm: float, origin_yx_nm=(0.0, 0.0)) -> np.ndarray:
    """3×3 affine STXM pixel ``(y, x, 1)`` → world nm ``(y, x, 1)`` of a stack layer.

    Registered (``matrix_xy`` and ``sem_pixel_nm`` given): through the registration onto the SEM frame; else by
    the stack's own pixel size and stage origin.

    Examples
    --------
    >>> stxm_world_matrix(None, None, 40.0, (100.0, 0.0)) @ [1, 2, 1]
    array([140.,  80.,   1.])
    """
    if matrix_xy is not None and sem_pixel_nm is not None:
        return affine_stxm_to_world(matrix_xy, sem_pixel_nm, n_leading=0)
    p = float(pixel_size_nm)
    return np.array([[p, 0.0, float(origin_yx_nm[0])], [0.0, p, float(origin_yx_nm[1])], [0.0, 0.0, 1.0]])


def world_matrix_of_stack_meta(meta: dict) -> np.ndarray:
    """:func:`stxm_world_matrix` of a stack layer from its metadata (as written by :func:`stack_layer`)."""
    return stxm_world_matrix(meta.get("matrix_stxm_to_sem"), meta.get("sem_pixel_nm"), meta["pixel_size_nm"],
                             (meta.get("origin_y_nm", 0.0), meta.get("origin_x_nm", 0.0)))


def sem_layer(sem, name: str = "SEM") -> tuple:
    """Image layer data of a :class:`ceimap.segment.lamella.SemImage`, scaled to nm."""
    p = float(sem.pixel_size_nm)
    return (np.asarray(sem.image), {
        "name": name, "scale": (p, p), "units": ("nm", "nm"), "colormap": "gray",
        "contrast_limits": _limits(sem.image),
        "metadata": {"pixel_size_nm": p, "pixel_size_source": sem.pixel_size_source, "source": str(sem.source),
                     "kind": "sem"},
    }, "image")


def stack_layer(stack, *, matrix=None, sem_pixel_nm: float | None = None, name: str | None = None,
                registration: str | None = None) -> tuple:
    """Image layer data of a :class:`ceimap.segment.stack.Stack` with an energy slider.

    Parameters
    ----------
    stack : Stack
        Counts or OD; shown as it is (convert with :func:`ceimap.segment.stack.optical_density` first for OD).
    matrix : array_like (3, 3), optional
        Registration STXM pixel → SEM pixel. With ``sem_pixel_nm`` the layer is placed on the SEM frame
        by an affine; without, it is placed by its own pixel size and stage origin (nm).
    sem_pixel_nm : float, optional
        SEM pixel size, needed with ``matrix``.
    name : str, optional
        Layer name; default ``"<edge> OD"`` or ``"<edge> counts"``.
    registration : str, optional
        How ``matrix`` was obtained, kept in the metadata.
    """
    data = np.asarray(stack.data, dtype=np.float32)
    edge = stack.edge or "STXM"
    meta = {
        "energies_ev": [float(e) for e in stack.energies_ev], "edge": stack.edge, "kind": stack.kind,
        "pixel_size_nm": float(stack.pixel_size_nm), "source": str(stack.source),
        "registration": registration, "origin_x_nm": float(stack.origin_x_nm),
        "origin_y_nm": float(stack.origin_y_nm),
    }
    kwargs = {"name": name or f"{edge} {'OD' if stack.kind == 'od' else 'counts'}",
              "units": ("pixel",) * (data.ndim - 2) + ("nm", "nm"),  # energy axis: frame index
              "colormap": "magma" if stack.kind == "od" else "gray",
              "contrast_limits": _limits(data), "blending": "additive", "metadata": meta}
    if matrix is not None:
        if sem_pixel_nm is None:
            raise ValueError("sem_pixel_nm is needed to place a registered stack")
        kwargs["affine"] = affine_stxm_to_world(matrix, sem_pixel_nm, n_leading=data.ndim - 2)
        meta["matrix_stxm_to_sem"] = np.asarray(matrix, float).tolist()
        meta["sem_pixel_nm"] = float(sem_pixel_nm)
    else:
        p = float(stack.pixel_size_nm)
        kwargs["scale"] = (1.0,) * (data.ndim - 2) + (p, p)
        kwargs["translate"] = (0.0,) * (data.ndim - 2) + (float(stack.origin_y_nm), float(stack.origin_x_nm))
    return (data, kwargs, "image")


def classes_layer(classes, pixel_size_nm: float | None, name: str = "classes", **extra) -> tuple:
    """Labels layer data of a class map (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void)."""
    colormap = {k if k is None else int(k): v for k, v in CLASS_COLORMAP.items()}
    kwargs = {"name": name, "colormap": colormap, "opacity": 0.5,
              "metadata": {"class_names": {str(int(k)): v for k, v in CLASS_NAMES.items()}, "kind": "classes"}}
    if pixel_size_nm is not None:
        kwargs["scale"] = (float(pixel_size_nm),) * 2
        kwargs["units"] = ("nm", "nm")
    kwargs.update(extra)
    return (np.asarray(classes).astype(np.uint8, copy=False), kwargs, "labels")


def particles_layer(particles, pixel_size_nm: float | None, name: str = "particles") -> tuple:
    """Labels layer data of NMC particle ids (0 = not NMC)."""
    kwargs = {"name": name, "opacity": 0.4, "visible": False, "metadata": {"kind": "particles"}}
    if pixel_size_nm is not None:
        kwargs["scale"] = (float(pixel_size_nm),) * 2
        kwargs["units"] = ("nm", "nm")
    return (np.asarray(particles), kwargs, "labels")


def egt2g_layer(egt2g, pixel_size_nm: float | None, name: str = "e_g/t_2g") -> tuple:
    """Image layer data of the Ni e_g/t_2g map on the SEM grid (NaN = no Ni), colour scale 0.7–2.4."""
    kwargs = {"name": name, "colormap": "viridis", "contrast_limits": EGT2G_LIMITS, "opacity": 0.8,
              "metadata": {"kind": "egt2g"}}
    if pixel_size_nm is not None:
        kwargs["scale"] = (float(pixel_size_nm),) * 2
        kwargs["units"] = ("nm", "nm")
    return (np.asarray(egt2g, dtype=np.float32), kwargs, "image")
