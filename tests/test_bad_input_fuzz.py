"""Fuzzing the readers: random byte mutations of small valid files of every format.

Whatever the bytes, a reader either returns its result or raises ``CeimapInputError`` (which the CLI turns
into exit status 2 and one line naming the file) — never another exception, never a hang, never a flood of
messages. Each mutant is read in a separate process with a time and a memory limit
(:class:`reader_fuzzing.ReaderProcess`), so a reader stuck inside a library that swallows timeouts, or one
allocating what a corrupted header claims, fails the test with the mutation that reproduces it instead of
stalling or exhausting the run. The default run tries the same few dozen mutants per format every time;
``--slow`` tries many more, new ones on every run. ``tools/fuzz_readers.py`` runs tens of thousands.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import reader_fuzzing as F  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402

FAST_EXAMPLES = 25
SLOW_EXAMPLES = 400
BADFILES = REPO_ROOT.parent / "shared" / "badfiles"

# one mutation: (kind, where as a fraction of the file, byte value, length)
MUTATION = st.tuples(st.sampled_from(F.MUTATION_KINDS), st.floats(0.0, 1.0, exclude_max=True),
                     st.integers(0, 255), st.integers(1, 16))


@pytest.fixture(scope="module")
def reader():
    with F.ReaderProcess() as proc:
        yield proc


@pytest.fixture(scope="module")
def originals(tmp_path_factory, reader):
    """The valid files of each case, written once: {case: (folder, read path, {mutable name: bytes})}."""
    out = {}
    for kind in F.CASES:
        folder = tmp_path_factory.mktemp(kind)
        path, mutable = F.write_originals(kind, folder)
        outcome = reader.read(kind, path)
        assert outcome.status == "read" and not outcome.flooded, outcome  # the unmutated files are valid
        out[kind] = (folder, path, mutable)
    return out


@pytest.mark.parametrize("kind", list(F.CASES))
def test_mutated_files_raise_only_input_errors(kind, originals, reader, request, tmp_path):
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
        target.write_bytes(F.mutate(mutable[names[which]], mutations))
        outcome = reader.read(kind, work / path.name)
        where = f"{names[which]} mutated with {mutations}"
        assert outcome.status in ("read", "refused"), f"{where}: {outcome.status}: {outcome.detail}"
        assert not outcome.flooded, f"{where}: {outcome.messages} messages, {outcome.chars} characters"
        if outcome.status == "refused":
            assert outcome.detail.strip() and "\n" not in outcome.detail.strip(), where
        outcomes[outcome.status] += 1

    check()
    assert outcomes["refused"] > 0  # the mutations did break files (the fuzzing tested something)


def test_sem_whose_page_chain_loops_is_refused_at_once(reader):
    """shared/badfiles/sem_page_loop.tif: its IFD chain points back to the first page; tifffile walked it for
    ever, logging every step. The reader walks the chain itself and refuses the loop."""
    bad = BADFILES / "sem_page_loop.tif"
    if not bad.is_file():
        pytest.skip(f"{bad} not found (../shared/badfiles is absent)")
    outcome = reader.read("sem", bad)
    assert outcome.status == "refused", outcome  # a hang would be reported as status "hang"
    assert "loops back to page 0" in outcome.detail and str(bad) in outcome.detail
    assert outcome.messages == 0 and outcome.chars == 0  # nothing printed, warned or logged


def test_the_guard_reports_a_hang_and_goes_on(tmp_path):
    """A read that never returns is reported as a hang; the next read works in a fresh process."""
    with F.ReaderProcess(timeout_s=2.0) as proc:
        fifo = tmp_path / "never.hdf5"  # reading a FIFO nobody writes to blocks for ever
        os.mkfifo(fifo)
        assert proc.read("h5", fifo).status == "hang"
        path, _ = F.write_originals("ncb", tmp_path)
        assert proc.read("ncb", path).status == "read"


def test_the_guard_reports_memory_beyond_its_limit(tmp_path):
    """A read allocating more than the process may is reported (memory), not run to the machine's limit."""
    with F.ReaderProcess(memory_bytes=1 * 2**30) as proc:
        assert proc.read("allocate", tmp_path / str(10 * 2**20)).status == "read"
        assert proc.read("allocate", tmp_path / str(2 * 2**30)).status == "memory"


def test_mutate_changes_bytes():
    data = bytes(range(100))
    assert F.mutate(data, [("truncate", 0.5, 0, 1)]) == data[:50]
    assert F.mutate(data, [("flip", 0.0, 0, 1)])[0] == 1
    assert len(F.mutate(data, [("insert", 0.1, 7, 3)])) == 103
    assert np.frombuffer(F.mutate(data, [("set", 0.2, 9, 2)]), np.uint8)[20:22].tolist() == [9, 9]
    rng = np.random.default_rng(0)
    drawn = [F.random_mutations(rng) for _ in range(200)]
    assert {len(m) for m in drawn} == {1, 2, 3, 4}
    assert {m[0] for ms in drawn for m in ms} == set(F.MUTATION_KINDS)
