"""``preprocess_lamella(workers=2)``: the edges in worker processes give what the serial loop gives.

Same OD stacks, drift, OD reports, registrations and spectral maps, bit for bit; the same error (type and
message) when an edge is bad input; serial when asked for one worker or when there is one edge. A small
synthetic lamella (3 µm field, two edges) keeps each preprocessing to a few seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ceimap.segment.errors import CeimapInputError
from ceimap.segment.pipeline import edge_workers, preprocess_lamella


@pytest.fixture(scope="module")
def small_lamella(small_lamella_manifest):
    from ceimap.segment.io import read_lamella

    lamella = read_lamella(small_lamella_manifest)
    assert len(lamella.stacks) == 2  # Ni-L and S-L: two edges to spread over two workers
    return lamella


def assert_identical(a, b, where="result"):
    """Equal bit for bit (arrays: dtype, shape and bytes; NaN where NaN), recursing into containers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, where


def test_edges_in_two_processes_equal_the_serial_loop(small_lamella):
    from threadpoolctl import threadpool_limits

    serial_messages, parallel_messages = [], []
    with threadpool_limits(limits=1, user_api="blas"):  # as stats.run.run_lamella runs it
        serial = preprocess_lamella(small_lamella, progress=serial_messages.append)
        parallel = preprocess_lamella(small_lamella, progress=parallel_messages.append, workers=2)
    names = ["od_stacks", "od_reports", "drift_px", "registrations", "egt2g", "s_edge"]
    for name, s, p in zip(names, serial, parallel):
        assert_identical(s, p, name)
    assert list(parallel[0]) == list(small_lamella.stacks)  # edges in the lamella's order
    # progress is still told for every edge, in the lamella's order
    told = [m.split(":")[0] for m in parallel_messages if m.split(":")[0] in small_lamella.stacks]
    assert list(dict.fromkeys(told)) == list(small_lamella.stacks)
    assert all(any(m.startswith(f"{edge}: aligning") for m in parallel_messages) for edge in small_lamella.stacks)


def _featureless(stack):
    """The stack with every count replaced by the median count: nothing to register on."""
    return dataclasses.replace(stack, data=np.full_like(stack.data, np.median(stack.data)))


def _all_nan(stack):
    """The stack with no finite count (fails in the OD conversion, before any registration)."""
    return dataclasses.replace(stack, data=np.full_like(stack.data, np.nan))


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
@pytest.mark.parametrize("spoil", [{"S-L": _featureless}, {"Ni-L": _all_nan, "S-L": _featureless}],
                         ids=["second edge bad", "both edges bad"])
def test_a_bad_edge_in_a_worker_raises_what_the_serial_loop_raises(small_lamella, spoil):
    """The error of the first bad edge in the lamella's order, of the same type and message, in both ways."""
    stacks = {edge: spoil[edge](stack) if edge in spoil else stack for edge, stack in small_lamella.stacks.items()}
    lamella = dataclasses.replace(small_lamella, stacks=stacks)
    with pytest.raises(ValueError) as serial:  # CeimapInputError is a ValueError
        preprocess_lamella(lamella)
    with pytest.raises(ValueError) as parallel:
        preprocess_lamella(lamella, workers=2)
    assert type(parallel.value) is type(serial.value)
    assert str(parallel.value) == str(serial.value)
    if "Ni-L" not in spoil:  # the registration refusal names the file and the edge
        assert type(serial.value) is CeimapInputError
        assert parallel.value.path == serial.value.path == lamella.stacks["S-L"].source
        assert "the S-L STXM image cannot be registered" in str(serial.value)
        assert parallel.value.__cause__ is None  # no worker traceback attached: one line at the CLI, as in serial


def test_serial_when_one_worker_one_edge_or_a_daemon():
    import multiprocessing

    assert edge_workers(1, 2) == 1
    assert edge_workers(2, 1) == 1
    assert edge_workers(4, 2) == 2
    assert edge_workers(0, 2) == 1
    process = multiprocessing.current_process()
    daemon = process.daemon
    try:
        process.daemon = True  # as in a dask or multiprocessing worker, which may not start children
        assert edge_workers(2, 2) == 1
    finally:
        process.daemon = daemon
