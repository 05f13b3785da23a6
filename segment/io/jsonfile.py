"""JSON files that scientists' tools can read: plain numbers, no NaN, arrays as lists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def json_safe(value):
    """Convert numpy scalars/arrays, paths and non-finite floats into plain JSON values (NaN/inf → None).

    Examples
    --------
    >>> json_safe({"a": np.float32(1.5), "b": np.array([1, 2]), "c": float("nan")})
    {'a': 1.5, 'b': [1, 2], 'c': None}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data, *, indent: int = 2) -> None:
    """Write ``data`` as indented, NaN-free JSON (see :func:`json_safe`)."""
    Path(path).write_text(json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")
