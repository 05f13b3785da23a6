"""Fuzzing the readers: random byte mutations of small valid files of every format.

Whatever the bytes, a reader either returns its result or raises ``CeimapInputError`` (which the CLI turns
into exit status 2 and one line naming the file) — never another exception, never a hang. The default run
tries the same few dozen mutants per format every time, in a few seconds; ``--slow`` tries many more,
new ones on every run (a failure prints the mutation that reproduces it).
"""

from __future__ import annotations

import shutil
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import bad_input_files as B  # noqa: E402
from ceimap.segment.errors import CeimapInputError  # noqa: E402
from ceimap.segment.io import read_annotations, read_lamella, read_sem, read_stack  # noqa: E402

FAST_EXAMPLES = 25
SLOW_EXAMPLES = 400
HANG_SECONDS = 20
"""A reader taking longer than this on a file of a few kB is hanging."""


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    def alarm(signum, frame):
        raise TimeoutError(f"reader still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# one mutation: (kind, where as a fraction of the file, byte value, length)
MUTATION = st.tuples(st.sampled_from(["set", "flip", "delete", "insert", "truncate", "digit"]),
                     st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255), st.integers(1, 16))


def mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, where, value, length in mutations:
        if not buf:
            break
        i = int(where * len(buf))
        if kind == "set":
            buf[i: i + length] = bytes([value]) * len(buf[i: i + length])
        elif kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "delete":
            del buf[i: i + length]
        elif kind == "insert":
            buf[i:i] = bytes([value]) * length
        elif kind == "truncate":
            del buf[i:]
        elif kind == "digit":  # text formats: a number changed is the mutation that matters most
            buf[i] = ord("0") + value % 10
    return bytes(buf)


def _stack_files(folder: Path, fmt: str):
    """(file to read, files that may be mutated) for one stack format."""
    if fmt == "h5":
        path = B.write_h5(folder)
        return path, [path]
    if fmt == "tif":
        path = B.write_tif_stack(folder)
        return path, [path, folder / "ni_l.energies.txt"]
    if fmt == "ncb":
        path = B.write_ncb(folder)
        return path, [path, path.with_suffix(".dat")]
    path = B.write_als(folder)
    return path, [path, folder / "stack_a003.xim"]


CASES = {
    "h5": lambda f: _stack_files(f, "h5"),
    "tif-stack": lambda f: _stack_files(f, "tif"),
    "ncb": lambda f: _stack_files(f, "ncb"),
    "als": lambda f: _stack_files(f, "als"),
    "sem": lambda f: (B.write_sem(f), [f / "sem.tif"]),
    "annotations": lambda f: (B.write_annotations(f), [f / "labels.tif"]),
    "manifest": lambda f: (B.valid_lamella(f, "ncb"), [f / "lamella.toml"]),
}


def _read(kind: str, path: Path):
    if kind == "sem":
        return read_sem(path)
    if kind == "annotations":
        return read_annotations(path, (48, 56))
    if kind == "manifest":
        return read_lamella(path)
    return read_stack(path)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The valid files of each case, written once: {case: (folder, read path, {mutable name: bytes})}."""
    out = {}
    for kind, make in CASES.items():
        folder = tmp_path_factory.mktemp(kind)
        path, mutable = make(folder)
        _read(kind, path)  # the unmutated files are valid
        out[kind] = (folder, path, {m.name: m.read_bytes() for m in mutable})
    return out


@pytest.mark.parametrize("kind", list(CASES))
def test_mutated_files_raise_only_input_errors(kind, originals, request, tmp_path):
    folder, path, mutable = originals[kind]
    slow = request.config.getoption("--slow")
    n_examples = SLOW_EXAMPLES if slow else FAST_EXAMPLES
    work = tmp_path / "work"
    shutil.copytree(folder, work)
    names = sorted(mutable)
    outcomes = {"read": 0, "refused": 0}

    # the default run is the same every time; --slow explores new mutants on every run
    @settings(max_examples=n_examples, deadline=None, derandomize=not slow, database=None,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, len(names) - 1), mutations=st.lists(MUTATION, min_size=1, max_size=4))
    def check(which, mutations):
        for name in names:  # restore, then mutate one file
            (work / name).write_bytes(mutable[name])
        target = work / names[which]
        target.write_bytes(mutate(mutable[names[which]], mutations))
        with no_hang(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _read(kind, work / path.name)
                outcomes["read"] += 1
            except CeimapInputError as exc:
                assert str(exc).strip() and "\n" not in str(exc).strip()
                outcomes["refused"] += 1

    check()
    assert outcomes["refused"] > 0  # the mutations did break files (the fuzzing tested something)


def test_mutate_changes_bytes():
    data = bytes(range(100))
    assert mutate(data, [("truncate", 0.5, 0, 1)]) == data[:50]
    assert mutate(data, [("flip", 0.0, 0, 1)])[0] == 1
    assert len(mutate(data, [("insert", 0.1, 7, 3)])) == 103
    assert np.frombuffer(mutate(data, [("set", 0.2, 9, 2)]), np.uint8)[20:22].tolist() == [9, 9]
