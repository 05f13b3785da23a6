"""Worker processes and threads: how many to use, and a pool of fresh processes.

Kept apart from :mod:`ceimap.segment.pipeline` so that a command can start its worker (which then imports the
pipeline) before it imports the heavy modules itself.
"""

from __future__ import annotations


def edge_workers(workers: int, n_edges: int) -> int:
    """How many processes :func:`ceimap.segment.pipeline.preprocess_lamella` runs its edges in: 1 (serial) unless it can do better.

    Serial when one worker is asked for, when there is a single edge, or when this process is daemonic
    (a ``multiprocessing`` / dask worker process, which may not have children).

    Parameters
    ----------
    workers : int
        Processes asked for.
    n_edges : int

    Returns
    -------
    int
    """
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(int(workers), int(n_edges)))


def spawn_pool(processes: int):
    """A pool of ``processes`` fresh worker processes (``spawn``: safe when this process has threads).

    Each worker costs a new interpreter and the imports (about 2 s of CPU), paid while the caller works.
    As with any ``spawn`` pool, a script using it needs the ``if __name__ == "__main__":`` guard.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=int(processes), mp_context=multiprocessing.get_context("spawn"))


def thread_count() -> int:
    """Threads a step may spread its work over: 1 in a daemonic process, else the machine's cores.

    A daemonic process is a worker of a ``multiprocessing`` pool or of dask (``ceimap batch``), whose scheduler
    runs one task per core already: threads of its own would only compete with the other workers.

    Returns
    -------
    int
    """
    import multiprocessing
    import os

    if multiprocessing.current_process().daemon:
        return 1
    return max(1, os.cpu_count() or 1)
