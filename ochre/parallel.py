"""One process pool for the data stages (synth, prepare): ordered results, one process per core."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool_size(workers: int | None, jobs: int) -> int:
    """`workers` (all cores when None), never more than the jobs and never fewer than one."""
    return max(1, min(workers or cpu_count(), jobs))


@contextlib.contextmanager
def process_map(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[Callable]:
    """`map` in this process for one worker, else a process pool's ordered imap (ended on exit).

    spawn, not fork: the caller may hold torch's threads (`ochre demo` runs the stages
    in-process), and a forked copy of a threaded process can deadlock. `initializer(*initargs)`
    runs once in each pool process (not for one worker, which is this process).
    """
    if workers == 1:
        yield map
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer, initargs)
    try:
        yield pool.imap
    finally:
        pool.terminate()
