"""Reader fuzzing machinery shared by the fuzz tests and ``tools/fuzz_readers.py``.

Mutants of small valid files of every input format are read in a separate process (:class:`ReaderProcess`)
that has a memory limit and is killed when a read does not return in time. So a reader that loops inside a
library which swallows the timeout (tifffile catches exceptions raised while it parses a page, logs them and
goes on), or that allocates what a corrupted header claims, is reported as a hang or a memory failure with
the mutation that reproduces it — it cannot stall or exhaust the test run. The child also counts what reaches
its standard error, the root logger and the warnings machinery during each read: a corrupted file must not
flood the console.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

import bad_input_files as B  # noqa: E402

MUTATION_KINDS = ("set", "flip", "delete", "insert", "truncate", "digit")

READ_TIMEOUT_S = 20.0
"""A read of a file of a few kB still running after this long is a hang (the reads take milliseconds)."""

MEMORY_LIMIT_BYTES = 3 * 2**30
"""Address space of the reading process: a few-kB file needs a few MB; the rest is the interpreter's."""

FLOOD_CHARS = 4000
"""Most characters one read may send to standard error, warnings and the root logger together."""

FLOOD_MESSAGES = 10
"""Most messages (warnings and log records) one read may emit."""


def mutate(data: bytes, mutations) -> bytes:
    """Apply mutations ``(kind, where as a fraction of the file, byte value, length)`` in turn."""
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


def random_mutations(rng: np.random.Generator) -> list[tuple]:
    """One to four random mutations, drawn as the fuzz test's hypothesis strategy draws them."""
    return [(MUTATION_KINDS[rng.integers(len(MUTATION_KINDS))], float(rng.random()), int(rng.integers(256)),
             int(rng.integers(1, 17))) for _ in range(int(rng.integers(1, 5)))]


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
"""Each input kind: a function writing its valid files into a folder -> (file to read, mutable files)."""


def read(kind: str, path: Path):
    """Read a file of one kind with ceimap's reader (kind ``"allocate"``, for testing the guard itself, allocates
    as many bytes as the file's name says)."""
    from ceimap.segment.io import read_annotations, read_lamella, read_sem, read_stack

    if kind == "allocate":
        return np.ones(int(Path(path).name), np.uint8)
    if kind == "sem":
        return read_sem(path)
    if kind == "annotations":
        return read_annotations(path, (48, 56))
    if kind == "manifest":
        return read_lamella(path)
    return read_stack(path)


def write_originals(kind: str, folder: Path) -> tuple[Path, dict[str, bytes]]:
    """Write the valid files of one kind: (file to read, {mutable file name: its bytes})."""
    path, mutable = CASES[kind](folder)
    return path, {m.name: m.read_bytes() for m in mutable}


@dataclass
class Outcome:
    """What one read did: ``status`` is read, refused, error, memory, hang or crash."""

    status: str
    detail: str = ""
    messages: int = 0
    chars: int = 0

    @property
    def flooded(self) -> bool:
        return self.messages > FLOOD_MESSAGES or self.chars > FLOOD_CHARS


def _serve(conn, memory_bytes: int, stderr_path: str) -> None:
    """The reading process: limits itself, then reads the files it is sent until told to stop."""
    import logging
    import resource
    import traceback
    import warnings

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = open(2, "w", closefd=False)

    class Count(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.n = self.chars = 0

        def emit(self, record):
            self.n += 1
            self.chars += len(str(record.msg))

    counter = Count()
    logging.getLogger().addHandler(counter)
    from ceimap.segment.errors import CeimapInputError

    while True:
        job = conn.recv()
        if job is None:
            return
        kind, path = job
        counter.n = counter.chars = 0
        before = os.fstat(2).st_size
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read(kind, Path(path))
                status, detail = "read", ""
            except CeimapInputError as exc:
                status, detail = "refused", str(exc)
            except MemoryError:
                status, detail = "memory", traceback.format_exc(limit=-6)
            except BaseException:  # noqa: BLE001 - any other exception is the finding
                status, detail = "error", traceback.format_exc(limit=-6)
        sys.stderr.flush()
        chars = os.fstat(2).st_size - before + counter.chars + sum(len(str(w.message)) for w in caught)
        conn.send(Outcome(status, detail, counter.n + len(caught), chars))


class ReaderProcess:
    """A separate process that reads files with ceimap's readers, under a time and a memory limit.

    Parameters
    ----------
    timeout_s : float
        A read taking longer is reported as a hang; the process is killed and a new one started.
    memory_bytes : int
        Address-space limit of the process (``RLIMIT_AS``).
    """

    def __init__(self, timeout_s: float = READ_TIMEOUT_S, memory_bytes: int = MEMORY_LIMIT_BYTES):
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._tmp = tempfile.TemporaryDirectory(prefix="ceimap-fuzz-")
        self.stderr_path = os.path.join(self._tmp.name, "stderr.txt")
        self._proc = None
        self._conn = None

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.memory_bytes, self.stderr_path), daemon=True)
        self._proc.start()
        child.close()

    def read(self, kind: str, path) -> Outcome:
        """Read one file in the process; the outcome, or a hang / crash when it does not answer."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((kind, str(path)))
        if self._conn.poll(self.timeout_s):
            try:
                return self._conn.recv()
            except (EOFError, OSError):  # the process died before or while answering
                pass
        alive, code = self._proc.is_alive(), self._proc.exitcode
        self._kill()
        if alive:
            return Outcome("hang", f"no answer after {self.timeout_s:g} s")
        return Outcome("crash", f"the reading process died (exit code {code})")

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except (OSError, BrokenPipeError):
                pass
        self._kill()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
