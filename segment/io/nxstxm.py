"""NeXus NXstxm (HDF5) STXM files: reader and MANTiS-compatible writer.

The reader finds its way by ``NX_class`` and attributes, never by fixed paths: the NXentry whose
``definition`` is ``NXstxm``, an NXdata group in it (one per detector, e.g. ``counter0``) whose signal
is an image (``sample image``) or an image stack (``sample image stack``), its ``axes`` /
``*_indices`` attributes for the order of the dimensions, the ``energy``, ``sample_y``, ``sample_x`` and
``count_time`` fields, and the NXmonitor ``control`` (ring current, or I0 when it says so).

The writer writes what the NXstxm application definition asks for and what MANTiS's NXstxm reader needs:
``definition`` as a one-element fixed-length byte string array, the NXdata ``counter0`` with ``axes`` as
an array of byte strings, ``count_time`` per energy and ``stxm_scan_type``; strings are fixed-length byte
strings as beamlines write them. MANTiS recognises NXstxm files only by the extensions ``.hdf5``,
``.hdf``, ``.nxs`` and ``.stxm``, so use one of those (not ``.h5``) when the file is meant for MANTiS.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import CeimapInputError
from ..stack import Stack
from ._assemble import assemble_stack, check_array_size, length_unit_to_nm

__all__ = ["read_nxstxm", "write_nxstxm", "is_hdf5"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_OD_UNITS = {"od", "optical density", "optical_density", "absorbance", "a.u. od"}
_COUNT_UNITS = {"counts", "count", "cts", "photons", "photon counts"}
_ENERGY_NAMES = ("energy", "photon_energy")


def is_hdf5(path) -> bool:
    """Whether the file is HDF5 (signature at offset 0 or after a user block, as HDF5 allows)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) == _HDF5_SIGNATURE:
                return True
        return bool(h5py.h5f.is_hdf5(str(path).encode()))
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- reading

def _text(value) -> str | None:
    """A string from what HDF5 files hold: str, bytes, numpy bytes, or 1-element arrays of those."""
    if value is None:
        return None
    if isinstance(value, h5py.Dataset):  # its first element: a corrupt dataspace may claim any size
        value = value[(0,) * value.ndim] if value.ndim and value.size else value[()]
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.ravel()[0]
    if isinstance(value, (bytes, np.bytes_)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8").strip("\x00").strip()
        except UnicodeDecodeError:
            return raw.decode("latin-1").strip("\x00").strip()
    return str(value).strip()


_MAX_EXPANSION = {"gzip": 1032.0, "lzf": 100.0}
"""Largest factor by which an HDF5 compression filter expands its stored bytes (deflate's is 1032; LZF codes
at most 264 bytes in 3); other filters get :data:`_OTHER_FILTER_EXPANSION`."""

_OTHER_FILTER_EXPANSION = 1e5


def _values(ds: h5py.Dataset, path, where: str) -> np.ndarray:
    """A dataset's values, once its dataspace is checked against the bytes the file stores for it.

    A corrupted dataspace can claim any size; HDF5 returns fill values for storage that was never written,
    so a 20 kB file could make a reader allocate gigabytes. A contiguous dataset must store all its bytes
    inside the file; a chunked one can expand at most by its filters' largest factor. Small datasets kept
    in the object header (compact layout) are read as they are.

    Raises
    ------
    CeimapInputError
        A dataset claiming more values than the file stores for it.
    """
    need = int(ds.size) * ds.dtype.itemsize
    layout = ds.id.get_create_plist().get_layout()
    if need and layout != h5py.h5d.COMPACT:
        check_array_size(ds.shape, path, where)
        stored = int(ds.id.get_storage_size())
        if layout == h5py.h5d.CONTIGUOUS:  # the values themselves must be in the file
            factor = 1.0
            offset = ds.id.get_offset()
            stored = 0 if offset is None else max(min(need, Path(path).stat().st_size - offset), 0)
        else:
            factor = _MAX_EXPANSION.get(ds.compression, _OTHER_FILTER_EXPANSION) if ds.compression else 1.0
            if ds.scaleoffset is not None:
                factor = _OTHER_FILTER_EXPANSION
        if stored == 0 or need > stored * factor:
            raise CeimapInputError(
                f"{where} claims shape {ds.shape} ({need} bytes) but the file stores {stored} bytes for it "
                "(a corrupted header, a truncated file, or an acquisition that never wrote its data)", path=path)
    return ds[()]


def _text_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, np.bytes_)):
        return [_text(value)]
    return [_text(v) for v in np.asarray(value).ravel()]


def _nx_class(obj) -> str | None:
    return _text(obj.attrs.get("NX_class")) if "NX_class" in obj.attrs else None


def _children(group, nx_class: str):
    out = []
    for name in group:
        try:
            child = group[name]
        except (KeyError, OSError):  # dangling external / soft links
            continue
        if isinstance(child, h5py.Group) and _nx_class(child) == nx_class:
            out.append((name, child))
    return out


def _signal(group) -> tuple[str | None, h5py.Dataset | None]:
    """The signal field of an NXdata group: its ``signal`` attribute, a field with ``signal=1``, or ``data``."""
    name = _text(group.attrs.get("signal")) if "signal" in group.attrs else None
    if name and name in group and isinstance(group[name], h5py.Dataset):
        return name, group[name]
    for key in group:
        obj = group.get(key)
        if isinstance(obj, h5py.Dataset) and _text(obj.attrs.get("signal")) in ("1", "true"):
            return key, obj
    if "data" in group and isinstance(group["data"], h5py.Dataset):
        return "data", group["data"]
    return None, None


def _is_stxm_entry(group) -> bool:
    if "definition" in group and isinstance(group["definition"], h5py.Dataset):
        return (_text(group["definition"]) or "").lower() == "nxstxm"
    return (_text(group.attrs.get("definition")) or "").lower() == "nxstxm"


def _axis_positions(group, signal_ds) -> dict[str, int]:
    """Dimension index of each named axis of the signal, from ``axes`` or ``<name>_indices``."""
    positions: dict[str, int] = {}
    axes = _text_list(group.attrs.get("axes")) if "axes" in group.attrs else []
    if len(axes) == 1 and any(sep in axes[0] for sep in ":,"):  # "energy:sample_y:sample_x"
        axes = [a.strip() for a in axes[0].replace(",", ":").split(":")]
    if not axes and "axes" in signal_ds.attrs:  # old NeXus style: axes on the signal, ':'-separated
        raw = _text(signal_ds.attrs["axes"]) or ""
        axes = [a for a in raw.replace(",", ":").split(":") if a]
    for i, name in enumerate(axes):
        if name and name != ".":
            positions.setdefault(name, i)
    for key in group.attrs:
        if key.endswith("_indices"):
            try:
                positions[key[: -len("_indices")]] = int(np.asarray(group.attrs[key]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                pass
    for key in group:  # oldest style: each axis field says which dimension it is (1-based)
        obj = group.get(key)
        if isinstance(obj, h5py.Dataset) and "axis" in obj.attrs and key not in positions:
            try:
                positions[key] = int(np.asarray(obj.attrs["axis"]).ravel()[0]) - 1
            except (TypeError, ValueError, IndexError):
                pass
    return positions


def _field(group, names, entry=None, instrument_paths=()):
    for name in names:
        if name in group and isinstance(group[name], h5py.Dataset):
            return group[name]
    if entry is not None:
        for p in instrument_paths:
            if p in entry and isinstance(entry[p], h5py.Dataset):
                return entry[p]
    return None


def _energy_to_ev(ds) -> float:
    unit = (_text(ds.attrs.get("units")) or "ev").lower()
    return {"ev": 1.0, "kev": 1e3, "mev": 1e6, "": 1.0}.get(unit, 1.0)


def _time_to_ms(ds) -> float | None:
    unit = (_text(ds.attrs.get("units")) or "s").lower()
    return {"s": 1e3, "sec": 1e3, "second": 1e3, "seconds": 1e3, "ms": 1.0, "msec": 1.0,
            "us": 1e-3, "µs": 1e-3, "": 1e3}.get(unit)


def _candidates(entry_group):
    """NXdata groups of an entry, each with its signal dataset's dimensionality (or why it's unusable)."""
    out = []
    for name, grp in _children(entry_group, "NXdata"):
        sig_name, sig = _signal(grp)
        if sig is None:
            out.append((name, grp, None, "has no signal field"))
        elif not np.issubdtype(sig.dtype, np.number):
            out.append((name, grp, None, f"signal '{sig_name}' is not numeric ({sig.dtype})"))
        elif sig.ndim == 0:
            out.append((name, grp, None,
                        f"signal '{sig_name}' is a single number, not an image (an empty template, such as "
                        "the NeXus autogenerated NXstxm example?)"))
        elif sig.ndim == 1:
            out.append((name, grp, None,
                        f"signal '{sig_name}' is 1-D, shape {sig.shape} (a point spectrum or line, not an image)"))
        elif sig.ndim > 3:
            out.append((name, grp, None, f"signal '{sig_name}' has {sig.ndim} dimensions (expected 2 or 3)"))
        else:
            out.append((name, grp, sig.ndim, ""))
    return out


def read_nxstxm(path, edge: str | None = None, *, entry: str | None = None, detector: str | None = None,
                kind: str | None = None) -> Stack:
    """Read an image or image stack from a NeXus NXstxm file.

    Parameters
    ----------
    path : path-like
        The HDF5 file.
    edge : str, optional
        Edge name; else guessed from the energies.
    entry : str, optional
        Name of the NXentry to read; default: the first NXstxm entry holding an image or stack.
    detector : str, optional
        Name of the NXdata group (detector channel) to read; default: the first one in the entry holding
        an image stack, else the first holding a single image.
    kind : {"counts", "od"}, optional
        Override what the data are; default: from the signal's ``units`` (``OD``, ``counts``) or the
        values (:func:`segment.io._assemble.guess_kind`).

    Returns
    -------
    Stack
        ``metadata`` records ``entry``, ``detector``, ``detectors`` (all usable ones), ``scan_type`` and
        the monitor's group. A single-energy image is a 1-frame stack.

    Raises
    ------
    CeimapInputError
        When the file is not HDF5, holds no NXstxm entry, holds only placeholder or non-image data, or its
        axes are inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CeimapInputError("file not found", path=path)
    try:
        fh = h5py.File(path, "r")
    except (OSError, RuntimeError) as exc:
        raise CeimapInputError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", path=path) from None
    with fh:
        try:
            refuse_external_data(fh, path)
            return _read_open(fh, path, edge, entry, detector, kind)
        except CeimapInputError:
            raise
        except MemoryError:
            raise CeimapInputError("a field of the file claims more memory than this machine has (corrupt file?)",
                                   path=path) from None
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            # h5py raises RuntimeError for HDF5 library errors it has no class for (bad checksums …)
            raise CeimapInputError(f"cannot read the NXstxm data ({type(exc).__name__}: {exc})",
                                   path=path) from None


def refuse_external_data(fh: h5py.File, path) -> None:
    """Refuse an HDF5 file whose objects live outside it: external links, virtual or external-storage datasets.

    Such a file makes the HDF5 library open other files named inside it (any path on the machine, read as
    data), and its results depend on files that are not among the inputs (not hashed in the provenance).
    The whole file is walked without following external links.

    Raises
    ------
    CeimapInputError
        Naming the first such object and where it points.
    """
    seen = set()

    def walk(group, prefix):
        key = h5py.h5o.get_info(group.id).addr
        if key in seen:  # a group hard-linked in several places (or into itself): walk it once
            return
        seen.add(key)
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{prefix}/{name}"
            if isinstance(link, h5py.ExternalLink):
                raise CeimapInputError(
                    f"{where} is an HDF5 external link to '{link.filename}:{link.path}'; ceimap reads only "
                    "self-contained files (copy the data in, e.g. with h5copy, and give that file)", path=path)
            if isinstance(link, h5py.SoftLink):
                continue  # a path inside this file: its target is checked where it lives
            obj = group.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    sources = sorted({m.file_name for m in obj.virtual_sources()})
                    raise CeimapInputError(
                        f"{where} is a virtual dataset mapping data from other files ({', '.join(sources[:3])}); "
                        "ceimap reads only self-contained files (copy the data in, e.g. with h5copy)", path=path)
                if obj.external:
                    raise CeimapInputError(
                        f"{where} keeps its values in external raw file(s) ({obj.external[0][0]}); ceimap reads "
                        "only self-contained files", path=path)
            elif isinstance(obj, h5py.Group):
                walk(obj, where)

    walk(fh, "")


def _read_open(fh, path, edge, entry_name, detector_name, kind) -> Stack:
    entries = _children(fh, "NXentry")
    stxm_entries = [(n, g) for n, g in entries if _is_stxm_entry(g)]
    if not stxm_entries:
        found = ", ".join(n for n, _ in entries) or "none"
        raise CeimapInputError(
            f"not an NXstxm file: no NXentry with definition 'NXstxm' (NXentry groups found: {found})",
            path=path)
    if entry_name is not None:
        stxm_entries = [(n, g) for n, g in stxm_entries if n == entry_name]
        if not stxm_entries:
            raise CeimapInputError(f"no NXstxm entry named {entry_name!r}", path=path)

    # The first image stack in any entry, else the first single image.
    usable, problems = [], []
    for ename, egrp in stxm_entries:
        cands = _candidates(egrp)
        if detector_name is not None:
            cands = [c for c in cands if c[0] == detector_name]
        usable += [(ename, egrp, c) for c in cands if c[2] is not None]
        problems += [f"/{ename}/{c[0]}: {c[3]}" for c in cands if c[2] is None]
    chosen = None
    if usable:
        def is_stack(u):  # several energies, not a single frame stored in 3-D
            sig = _signal(u[2][1])[1]
            return sig.ndim == 3 and min(sig.shape) > 1
        ename, egrp, pick = next((u for u in usable if is_stack(u)), usable[0])
        chosen = (ename, egrp, pick, [u[2][0] for u in usable if u[0] == ename])
    if chosen is None:
        if detector_name is not None and not problems:
            raise CeimapInputError(f"no NXdata group (detector) named {detector_name!r}", path=path)
        detail = "; ".join(problems) if problems else "its NXentry has no NXdata group"
        raise CeimapInputError(f"NXstxm file holds no image or image stack: {detail}", path=path)

    ename, egrp, (dname, dgrp, ndim, _), usable_names = chosen
    where = f"/{ename}/{dname}"
    sig_name, sig = _signal(dgrp)
    raw = _values(sig, path, f"{where}/{sig_name}")
    positions = _axis_positions(dgrp, sig)
    scan_type = _text(dgrp["stxm_scan_type"]) if "stxm_scan_type" in dgrp else None

    e_ds = _field(dgrp, _ENERGY_NAMES, egrp, ("instrument/monochromator/energy",))
    x_ds = _field(dgrp, ("sample_x",))
    y_ds = _field(dgrp, ("sample_y",))
    if e_ds is None:
        raise CeimapInputError(f"{where} has no energy field", path=path)
    if x_ds is None or y_ds is None:
        raise CeimapInputError(f"{where} has no sample_x / sample_y positions", path=path)
    if "line_position" in positions:
        raise CeimapInputError(f"{where} is a line spectrum ({scan_type or 'line_position axis'}), not an image",
                               path=path)
    energies = np.asarray(_values(e_ds, path, e_ds.name), dtype=float).ravel() * _energy_to_ev(e_ds)
    x = np.asarray(_values(x_ds, path, x_ds.name), dtype=float).ravel()
    y = np.asarray(_values(y_ds, path, y_ds.name), dtype=float).ravel()

    e_pos = next((positions[n] for n in _ENERGY_NAMES if n in positions), None)
    if ndim == 2:
        if e_pos is not None or energies.size != 1:
            raise CeimapInputError(
                f"{where} is 2-D {raw.shape} but has {energies.size} energies: a line spectrum or an "
                "inconsistent file, not an image", path=path)
        order = [positions.get("sample_y"), positions.get("sample_x")]
        if None in order or sorted(order) != [0, 1]:
            order = _order_from_shape(raw.shape, [y.size, x.size], path, where)
        frames = np.transpose(raw, order)[np.newaxis]
    else:
        order = [e_pos, positions.get("sample_y"), positions.get("sample_x")]
        if None in order or sorted(order) != [0, 1, 2]:
            order = _order_from_shape(raw.shape, [energies.size, y.size, x.size], path, where)
        frames = np.transpose(raw, order)
    n_e, ny, nx = frames.shape
    if (energies.size, y.size, x.size) != (n_e, ny, nx):
        raise CeimapInputError(
            f"{where}: data shape {frames.shape} (energy, y, x) does not match the axes "
            f"(energy {energies.size}, sample_y {y.size}, sample_x {x.size})", path=path)

    metadata = {"format": "NXstxm", "entry": ename, "detector": dname, "detectors": usable_names,
                "entries": [n for n, _ in stxm_entries],
                "signal": sig_name, "scan_type": scan_type}
    if kind is None:
        units = (_text(sig.attrs.get("units")) or "").lower()
        quantity = (_text(sig.attrs.get("long_name")) or "").lower()
        if units in _OD_UNITS or "optical density" in quantity or sig_name.lower() in ("od", "optical_density"):
            kind = "od"
        elif units in _COUNT_UNITS:
            kind = "counts"

    to_nm = length_unit_to_nm(x_ds.attrs.get("units"), default=None)
    if to_nm is None:
        to_nm = 1e3
        metadata["position_units"] = "assumed µm (no usable units attribute)"

    dwell = None
    ct = _field(dgrp, ("count_time", "dwell_time"))
    if ct is not None:
        scale = _time_to_ms(ct)
        vals = np.asarray(_values(ct, path, ct.name), dtype=float).ravel()
        if scale is not None and vals.size in (1, n_e):
            dwell = vals * scale
        elif scale is not None and vals.size == n_e * ny * nx:
            dwell = vals.reshape(n_e, -1).mean(axis=1) * scale

    if dwell is not None and not np.any(np.isfinite(dwell)):
        dwell = None  # written as NaN when unknown
    monitor, monitor_kind = _monitor(egrp, raw.shape, order, ndim, n_e, metadata, path)

    return assemble_stack(
        frames, energies, path=path, x_coords=x, y_coords=y, coords_to_nm=to_nm, kind=kind, edge=edge,
        dwell_ms=dwell, monitor=monitor, monitor_kind=monitor_kind, metadata=metadata)


def _order_from_shape(shape, lengths, path, where):
    """Dimension order matching axis lengths when the file has no usable axes attributes."""
    order = []
    for n in lengths:
        matches = [i for i, s in enumerate(shape) if s == n and i not in order]
        if not matches:
            raise CeimapInputError(
                f"{where}: cannot match data shape {tuple(shape)} to the axis lengths {tuple(lengths)}",
                path=path)
        order.append(matches[0])
    return order


def _monitor(egrp, data_shape, order, ndim, n_e, metadata, path):
    """The flux monitor: NXmonitor ``control`` (or another non-energy NXmonitor) matching the data."""
    monitors = _children(egrp, "NXmonitor")
    monitors.sort(key=lambda item: item[0] != "control")
    for name, grp in monitors:
        _, ds = _signal(grp)
        if ds is None or name == "energy":
            continue
        if (_text(ds.attrs.get("units")) or "").lower() in ("ev", "kev"):
            continue
        vals = np.asarray(_values(ds, path, ds.name), dtype=float)
        if vals.shape == tuple(data_shape):
            mon = np.transpose(vals, order)
            if ndim == 2:
                mon = mon[np.newaxis]
        elif vals.size in (1, n_e):
            mon = vals.reshape(-1, 1, 1)
        else:
            metadata["monitor_ignored"] = f"/{egrp.name.strip('/')}/{name}: shape {vals.shape} does not match"
            continue
        text = " ".join(filter(None, [
            _text(grp.attrs.get("monitor_kind")), _text(grp.attrs.get("type")),
            _text(grp.attrs.get("mode")), _text(grp["type"]) if "type" in grp else None,
            _text(grp["mode"]) if "mode" in grp else None,
            _text(grp["description"]) if "description" in grp else None])).lower()
        kind = "i0" if ("i0" in text.replace(" ", "").replace("_", "") or "incident" in text) else "ring_current"
        metadata["monitor"] = f"/{egrp.name.strip('/')}/{name}"
        return mon, kind
    return None, None


# ---------------------------------------------------------------------------------------------- writing

def _bytes_array(text: str) -> np.ndarray:
    """A one-element fixed-length byte string array, as beamlines store NeXus strings."""
    return np.array([text.encode("utf-8")])


def _compact_dtype(values: np.ndarray) -> np.ndarray:
    """Integer data in the smallest integer type that holds them; floats as float32 when lossless."""
    finite = np.all(np.isfinite(values))
    if finite and values.size and np.all(values == np.round(values)):
        lo, hi = float(values.min()), float(values.max())
        for dt in (np.uint8, np.uint16, np.uint32, np.int16, np.int32, np.int64):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return values.astype(dt)
    as32 = values.astype(np.float32)
    if np.array_equal(as32.astype(values.dtype), values, equal_nan=True):
        return as32
    return values.astype(np.float64)


def write_nxstxm(path, stack: Stack, *, monitor=None, monitor_kind: str | None = None,
                 timestamp: str | None = None, title: str | None = None, compression_level: int = 6) -> None:
    """Write a stack as a NeXus NXstxm file that MANTiS and NeXus tools read.

    Layout: ``/entry1`` (NXentry, ``definition`` = ``[b"NXstxm"]``) with the NXdata ``counter0``
    (``data`` [n_energy, n_y, n_x], ``energy`` eV, ``sample_y``/``sample_x`` µm, ``count_time`` s per energy,
    ``stxm_scan_type``), ``instrument`` (NXsource, NXmonochromator ``energy``, NXdetector ``counter0``
    linking the same data), ``sample`` (NXsample) and, when there is a monitor, the NXmonitor ``control``
    with the monitor expanded to the data's shape and an attribute ``monitor_kind`` (``i0`` or
    ``ring_current``). ``data`` is gzip-compressed with the shuffle filter, one chunk per frame, stored in
    the smallest integer type that holds integral counts. The file has no timestamps unless ``timestamp``
    is given, so writing the same stack twice gives identical bytes.

    Parameters
    ----------
    path : path-like
        Output file; use ``.hdf5``, ``.nxs``, ``.hdf`` or ``.stxm`` for MANTiS.
    stack : Stack
        The stack (counts, or OD: then ``data`` gets ``units="OD"``).
    monitor : array_like, optional
        Monitor broadcastable to the data; default ``stack.monitor``.
    monitor_kind : {"ring_current", "i0"}, optional
        Default ``stack.monitor_kind``, else ``"ring_current"``.
    timestamp : str, optional
        ISO 8601 time written as ``start_time`` and ``end_time``.
    title : str, optional
        Entry title; default the file stem.
    compression_level : int
        gzip level.
    """
    data = np.asarray(stack.data)
    if data.ndim != 3:
        raise ValueError(f"stack data must be 3-D (n_energy, n_y, n_x), got shape {data.shape}")
    n_e, ny, nx = data.shape
    energies = np.asarray(stack.energies_ev, dtype=float)
    px_um = stack.pixel_size_nm / 1e3
    x_um = stack.origin_x_nm / 1e3 + px_um * np.arange(nx)
    y_um = stack.origin_y_nm / 1e3 + px_um * np.arange(ny)
    dwell_s = (np.full(n_e, np.nan) if stack.dwell_ms is None
               else np.broadcast_to(np.asarray(stack.dwell_ms, dtype=float), (n_e,)) / 1e3)
    if monitor is None:
        monitor = stack.monitor
        monitor_kind = monitor_kind or stack.monitor_kind
    monitor_kind = monitor_kind or "ring_current"
    if monitor_kind not in ("ring_current", "i0"):
        raise ValueError(f"monitor_kind must be 'ring_current' or 'i0', got {monitor_kind!r}")

    stored = _compact_dtype(data)
    path = Path(path)
    ds_kw = dict(track_times=False)
    comp_kw = dict(compression="gzip", compression_opts=int(compression_level), shuffle=True,
                   chunks=(1, ny, nx), track_times=False)
    axes = np.array([b"energy", b"sample_y", b"sample_x"])

    def nx_group(parent, name, nx_class):
        grp = parent.create_group(name, track_order=True)
        grp.attrs["NX_class"] = np.bytes_(nx_class)
        return grp

    def set_axes(grp):
        grp.attrs["signal"] = np.bytes_("data")
        grp.attrs["axes"] = axes
        grp.attrs["energy_indices"] = np.array([0], dtype=np.uint32)
        grp.attrs["sample_y_indices"] = np.array([1], dtype=np.uint32)
        grp.attrs["sample_x_indices"] = np.array([2], dtype=np.uint32)

    with h5py.File(path, "w", track_order=True) as fh:
        fh.attrs["default"] = np.bytes_("entry1")
        fh.attrs["creator"] = np.bytes_("ceimap")
        entry = nx_group(fh, "entry1", "NXentry")
        entry.attrs["default"] = np.bytes_("counter0")
        entry.create_dataset("definition", data=_bytes_array("NXstxm"), **ds_kw)
        entry.create_dataset("title", data=_bytes_array(title if title is not None else path.stem), **ds_kw)
        if timestamp is not None:
            entry.create_dataset("start_time", data=_bytes_array(timestamp), **ds_kw)
            entry.create_dataset("end_time", data=_bytes_array(timestamp), **ds_kw)

        det = nx_group(entry, "counter0", "NXdata")
        set_axes(det)
        d = det.create_dataset("data", data=stored, **comp_kw)
        if stack.kind == "od":
            d.attrs["units"] = np.bytes_("OD")
            d.attrs["long_name"] = np.bytes_("optical density")
        else:
            d.attrs["units"] = np.bytes_("counts")
        e = det.create_dataset("energy", data=energies, **ds_kw)
        e.attrs["units"] = np.bytes_("eV")
        for name, values in (("sample_y", y_um), ("sample_x", x_um)):
            ds = det.create_dataset(name, data=values, **ds_kw)
            ds.attrs["units"] = np.bytes_("µm".encode("utf-8"))
        ct = det.create_dataset("count_time", data=np.asarray(dwell_s, dtype=float), **ds_kw)
        ct.attrs["units"] = np.bytes_("s")
        det.create_dataset("stxm_scan_type", data=_bytes_array(
            "sample image stack" if n_e > 1 else "sample image"), **ds_kw)
        if stack.edge:
            det.attrs["edge"] = np.bytes_(stack.edge)

        inst = nx_group(entry, "instrument", "NXinstrument")
        src = nx_group(inst, "source", "NXsource")
        src.create_dataset("name", data=_bytes_array(str(stack.metadata.get("source_name", "unknown"))), **ds_kw)
        src.create_dataset("type", data=_bytes_array("Synchrotron X-ray Source"), **ds_kw)
        src.create_dataset("probe", data=_bytes_array("x-ray"), **ds_kw)
        mono = nx_group(inst, "monochromator", "NXmonochromator")
        mono["energy"] = e  # hard link: same data, no copy
        idet = nx_group(inst, "counter0", "NXdetector")
        idet["data"] = d
        idet["count_time"] = ct

        sample = nx_group(entry, "sample", "NXsample")
        ra = sample.create_dataset("rotation_angle", data=np.array([0.0]), **ds_kw)
        ra.attrs["units"] = np.bytes_("deg")

        if monitor is not None:
            mon = np.asarray(monitor, dtype=float)
            if mon.ndim == 1:  # one value per energy
                mon = mon.reshape(-1, 1, 1)
            mon = np.broadcast_to(mon, data.shape)  # MANTiS wants the monitor in the data's shape
            ctrl = nx_group(entry, "control", "NXmonitor")
            set_axes(ctrl)
            ctrl.attrs["monitor_kind"] = np.bytes_(monitor_kind)
            m = ctrl.create_dataset("data", data=np.ascontiguousarray(mon), **comp_kw)
            m.attrs["units"] = np.bytes_("mA" if monitor_kind == "ring_current" else "counts")
            ctrl["energy"] = e
            ctrl["sample_y"] = det["sample_y"]
            ctrl["sample_x"] = det["sample_x"]
            ctrl.create_dataset("type", data=_bytes_array(
                "ring current" if monitor_kind == "ring_current" else "I0"), **ds_kw)
