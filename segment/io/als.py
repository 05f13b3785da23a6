"""ALS (and other SDF-style) STXM stacks: a ``.hdr`` header and one ``.xim`` text image per energy.

The header is nested ``Key = value;`` text: ``{ … }`` groups and ``(n, a, b, …)`` lists whose first item
is their length. ``ScanDefinition.Regions`` holds ``PAxis`` (Sample X) and ``QAxis`` (Sample Y) with
``Points`` in µm, ``ScanDefinition.StackAxis`` the energies (eV), ``ScanDefinition.Dwell`` the dwell (ms)
and ``Channels`` the detector channels. Frame ``k`` of channel ``c`` is ``<base>_<c><kkk>.xim`` (letter
``a`` for the first channel; ``<base>_<c>.xim`` for a single image): tab-separated integers, one text
row per image row (row 0 = first Sample Y point), one column per Sample X point.

Pairing frames with energies: real sets may keep only some frames (the ALS COSMIC example has ``_a003``
and ``_a019`` while its header lists the two energies 853.00 and 857.75 eV). The reader uses, in order:
per-frame header records ``ImageNNN_R = {Energy = …}``; the frame number as an index into the listed
energies when every number fits; the frame number as an index into the energies of ``ImageScan``'s
``EnergyRegions`` (the full scan) when every number fits and those energies agree with the listed ones;
otherwise, when the number of frames equals the number of listed energies, sorted frame numbers map to
the energies in order (recorded in ``metadata["energy_pairing"]``); anything else is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import CeimapInputError
from ..stack import Stack
from ._assemble import assemble_stack, check_array_size, length_unit_to_nm

__all__ = ["read_als", "parse_hdr"]

_TOKEN = re.compile(r'\s*(?:(?P<str>"[^"]*")|(?P<punct>[{}()=;,])|(?P<word>[^\s{}()=;,"]+))')


class _HdrSyntaxError(ValueError):
    pass


def _tokens(text: str):
    pos = 0
    out = []
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise _HdrSyntaxError(f"unexpected character {text[pos]!r} at offset {pos}")
        pos = m.end()
        if m.group("str") is not None:
            out.append(("str", m.group("str")[1:-1], m.start()))
        elif m.group("punct") is not None:
            out.append((m.group("punct"), m.group("punct"), m.start()))
        elif m.group("word") is not None:
            out.append(("word", m.group("word"), m.start()))
    return out


def _scalar(word: str):
    try:
        return int(word)
    except ValueError:
        try:
            return float(word)
        except ValueError:
            return word


MAX_HDR_NESTING = 64
"""Deepest nesting of ``{ }`` groups and ``( )`` lists accepted (real headers nest four or five deep)."""


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self):
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, kind=None):
        if self.i >= len(self.toks):
            raise _HdrSyntaxError("unexpected end of header")
        tok = self.toks[self.i]
        if kind is not None and tok[0] != kind:
            raise _HdrSyntaxError(f"expected {kind!r} but found {tok[1]!r} at offset {tok[2]}")
        self.i += 1
        return tok

    def group(self, closing=None) -> dict:
        out: dict = {}
        while True:
            k = self.peek()
            if k is None:
                if closing is not None:
                    raise _HdrSyntaxError("unexpected end of header inside { }")
                return out
            if k == closing:
                self.take()
                return out
            if k in (";", ","):
                self.take()
                continue
            key = self.take()
            if key[0] not in ("word", "str"):
                raise _HdrSyntaxError(f"expected a key but found {key[1]!r} at offset {key[2]}")
            # A key may be several words (rare); join until '='.
            name = key[1]
            while self.peek() == "word":
                name += " " + self.take()[1]
            self.take("=")
            out[name] = self.value()

    def value(self):
        self.depth += 1
        try:
            if self.depth > MAX_HDR_NESTING:
                raise _HdrSyntaxError(f"groups nested more than {MAX_HDR_NESTING} deep")
            return self._value()
        finally:
            self.depth -= 1

    def _value(self):
        k = self.peek()
        if k == "{":
            self.take()
            return self.group("}")
        if k == "(":
            self.take()
            items = []
            while True:
                if self.peek() == ")":
                    self.take()
                    return items
                if self.peek() in (",", ";"):
                    self.take()
                    continue
                items.append(self.value())
        tok = self.take()
        if tok[0] == "str":
            return tok[1]
        if tok[0] == "word":
            return _scalar(tok[1])
        raise _HdrSyntaxError(f"expected a value but found {tok[1]!r} at offset {tok[2]}")


def parse_hdr(text: str) -> dict:
    """Parse the nested ``Key = value;`` text of an SDF ``.hdr`` header into dicts and lists.

    Raises ``ValueError`` on malformed text.
    """
    return _Parser(text).group()


def _points(axis: dict, what: str, hdr: Path) -> np.ndarray:
    pts = axis.get("Points") if isinstance(axis, dict) else None
    if not isinstance(pts, list) or not pts:
        raise CeimapInputError(f"{what} has no Points list", path=hdr)
    try:
        count = int(pts[0])
        values = np.array([float(v) for v in pts[1:]])
    except (TypeError, ValueError):
        raise CeimapInputError(f"{what} Points are not numbers", path=hdr) from None
    if count != values.size:
        raise CeimapInputError(f"{what} Points says {count} values but lists {values.size}", path=hdr)
    return values


def _frame_index(name: str, prefix: str) -> int | None:
    rest = name[len(prefix):-4]
    return int(rest) if rest.isdigit() else None


def _read_xim(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        n_bytes = path.stat().st_size
    except OSError as exc:
        raise CeimapInputError(f"cannot read frame: {exc}", path=path) from None
    if n_bytes < 2 * shape[0] * shape[1] - 1:  # each value a digit at least, and a separator
        raise CeimapInputError(
            f"frame file has {n_bytes} bytes, too few for the {shape[0]} × {shape[1]} values (Sample Y × "
            "Sample X) the header says (truncated file, or a header of another scan)", path=path)
    try:
        rows = [ln.split() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as exc:
        raise CeimapInputError(f"cannot read frame: {exc}", path=path) from None
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise CeimapInputError(f"rows have different lengths {sorted(lengths)} (truncated file?)", path=path)
    try:
        img = np.array([v for row in rows for v in row], dtype=float).reshape(len(rows), -1) if rows \
            else np.zeros((0, 0))
    except ValueError as exc:
        raise CeimapInputError(f"frame has a non-numeric value ({exc})", path=path) from None
    if img.shape != shape:
        raise CeimapInputError(
            f"frame is {img.shape[0]} rows × {img.shape[1] if img.ndim == 2 else 0} columns but the header "
            f"says {shape[0]} × {shape[1]} (Sample Y × Sample X)", path=path)
    return img


def _region_energies(hdr_dict: dict) -> np.ndarray | None:
    """All energies of the scan from ``ImageScan.EnergyRegions`` (start, step, points per region)."""
    scan = hdr_dict.get("ImageScan")
    regions = scan.get("EnergyRegions") if isinstance(scan, dict) else None
    if not isinstance(regions, list) or len(regions) < 2:
        return None
    out = []
    try:
        for reg in regions[1:]:
            n = int(reg["Points"])
            start, step = float(reg["StartEnergy"]), float(reg["Step"])
            out.extend(start + step * np.arange(n))
    except (KeyError, TypeError, ValueError):
        return None
    return np.round(np.array(out), 6)


def read_als(path, edge: str | None = None, *, channel: int | str = 0, kind: str | None = None) -> Stack:
    """Read an ALS / SDF image stack (``.hdr`` + ``.xim`` frames).

    Parameters
    ----------
    path : path-like
        The ``.hdr`` file (or one of its ``.xim`` frames).
    edge : str, optional
        Edge name; else guessed from the energies.
    channel : int or str
        Detector channel, by index (0 = letter ``a``) or by name (``Channels`` in the header).
    kind : {"counts", "od"}, optional
        Default ``counts`` (the frames are detector counts).

    Returns
    -------
    Stack
        ``metadata`` has ``frames`` (the frame files read, in energy order), ``frame_numbers``,
        ``energy_pairing`` and ``companions``.
    """
    path = Path(path)
    if path.suffix.lower() == ".xim":
        stem = re.sub(r"_[a-z]\d*$", "", path.stem)
        path = path.with_name(stem + ".hdr")
        if not path.is_file():
            raise CeimapInputError(f"this .xim frame needs its header {path.name}, which is missing", path=path)
    hdr = path
    if not hdr.is_file():
        raise CeimapInputError("ALS header not found", path=hdr)
    try:
        text = hdr.read_text(errors="replace")
        h = parse_hdr(text)
    except (ValueError, OSError) as exc:
        raise CeimapInputError(f"not a readable .hdr header: {exc}", path=hdr) from None
    sd = h.get("ScanDefinition")
    if not isinstance(sd, dict):
        raise CeimapInputError("header has no ScanDefinition", path=hdr)
    scan_type = str(sd.get("Type", ""))
    if "line" in scan_type.lower() or "point" in scan_type.lower() or "spectr" in str(sd.get("Flags", "")).lower():
        raise CeimapInputError(f"is a {scan_type or 'non-image'} scan, not an image stack", path=hdr)
    regions = sd.get("Regions")
    if not isinstance(regions, list) or len(regions) < 2 or not isinstance(regions[1], dict):
        raise CeimapInputError("ScanDefinition has no Regions", path=hdr)
    n_regions = int(regions[0]) if isinstance(regions[0], (int, float)) else len(regions) - 1
    if n_regions > 1:
        raise CeimapInputError(f"has {n_regions} spatial regions; only single-region stacks are supported",
                               path=hdr)
    region = regions[1]
    x = _points(region.get("PAxis"), "PAxis (Sample X)", hdr)
    y = _points(region.get("QAxis"), "QAxis (Sample Y)", hdr)
    to_nm = length_unit_to_nm(region["PAxis"].get("Unit", "um"), default=1e3)
    stack_axis = sd.get("StackAxis")
    listed = _points(stack_axis, "StackAxis (Energy)", hdr) if isinstance(stack_axis, dict) else None

    # Channel letter.
    names = []
    chans = sd.get("Channels", h.get("Channels"))
    if isinstance(chans, list):
        names = [c.get("Name", "") for c in chans[1:] if isinstance(c, dict)]
    if isinstance(channel, str) and not channel.isdigit():
        if channel not in names:
            raise CeimapInputError(f"no channel named {channel!r} (channels: {names})", path=hdr)
        ch_index = names.index(channel)
    else:
        ch_index = int(channel)
    if ch_index < 0 or ch_index >= max(len(names), 1):
        raise CeimapInputError(f"channel {ch_index} does not exist (channels: {names or ['a']})", path=hdr)
    letter = "abcdefghijklmnopqrstuvwxyz"[ch_index]

    base = hdr.stem
    prefix = f"{base}_{letter}"
    files = {}
    for f in hdr.parent.glob(f"{glob_escape(prefix)}*.xim"):
        if f.name == prefix + ".xim":
            files[None] = f
        else:
            idx = _frame_index(f.name, prefix)
            if idx is not None:
                files[idx] = f
    numbered = sorted(k for k in files if k is not None)
    if not numbered and None not in files:
        raise CeimapInputError(f"no frame files {prefix}NNN.xim found beside the header", path=hdr)

    metadata = {"format": "ALS hdr/xim", "scan_type": scan_type, "channel": names[ch_index] if names else letter}
    if not numbered:  # single image <base>_a.xim
        energies = listed[:1] if listed is not None and listed.size >= 1 else None
        mono = h.get("Monochromator")
        if energies is None and isinstance(mono, dict) and "LastPosition" in mono:
            energies = np.array([float(mono["LastPosition"])])
        if energies is None:
            raise CeimapInputError("single image without any energy in the header", path=hdr)
        frames_files = [files[None]]
        pairing = "single image"
        numbers = []
    else:
        energies, pairing = _pair(h, numbered, listed, hdr)
        frames_files = [files[k] for k in numbered]
        numbers = numbered
    check_array_size((len(frames_files), y.size, x.size), hdr, "the stack the header describes")
    frames = np.stack([_read_xim(f, (y.size, x.size)) for f in frames_files])
    metadata.update(frame_numbers=numbers, frames=[str(f) for f in frames_files], energy_pairing=pairing,
                    companions=[str(f) for f in frames_files])
    dwell = sd.get("Dwell")
    dwell_ms = float(dwell) if isinstance(dwell, (int, float)) and dwell > 0 else None
    if kind is None:
        kind = "counts"
    stack = assemble_stack(frames, energies, path=hdr, x_coords=x, y_coords=y, coords_to_nm=to_nm, kind=kind,
                           edge=edge, dwell_ms=dwell_ms, metadata=metadata)
    if stack.metadata.get("frames_sorted_by_energy"):
        order = np.argsort(np.asarray(energies, dtype=float), kind="stable")
        stack.metadata["frames"] = [metadata["frames"][i] for i in order]
        stack.metadata["frame_numbers"] = [numbers[i] for i in order] if numbers else numbers
    return stack


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a literal file-name prefix."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _pair(h: dict, numbered: list[int], listed, hdr: Path):
    """Energies of the numbered frames, and how they were paired (see the module docstring)."""
    per_frame = {}
    for key, value in h.items():
        m = re.fullmatch(r"Image(\d+)(?:_\d+)?", key)
        if m and isinstance(value, dict) and isinstance(value.get("Energy"), (int, float)):
            per_frame[int(m.group(1))] = float(value["Energy"])
    if per_frame and all(k in per_frame for k in numbered):
        return np.array([per_frame[k] for k in numbered]), "per-frame Image records in the header"
    if listed is not None and all(k < listed.size for k in numbered):
        return listed[numbered], "frame number indexes the StackAxis energies"
    full = _region_energies(h)
    if full is not None and all(k < full.size for k in numbered):
        candidate = full[numbered]
        if listed is None or (listed.size == candidate.size and np.allclose(listed, candidate, atol=1e-3)):
            return candidate, "frame number indexes the ImageScan EnergyRegions"
    if listed is not None and listed.size == len(numbered):
        return listed.copy(), "sorted frame numbers mapped to the StackAxis energies in order"
    n_listed = 0 if listed is None else listed.size
    raise CeimapInputError(
        f"cannot pair {len(numbered)} frame file(s) (numbers {numbered[:5]}{'…' if len(numbered) > 5 else ''}) "
        f"with the {n_listed} energies the header lists", path=hdr)
