"""Where the data stages' per-item work runs: this machine's processes, or a Ray cluster.

One interface for both (`ordered_map`): a stage hands over a module-level function and its items
(one recording, one shard, one episode) and gets the results back in submission order, so the
stage writes its outputs in the same order, byte for byte, whatever the engine or worker count.
The work must be a pure function of its item (no shared state, no randomness without a seed in
the item): a task retried after its worker died then returns what the first try would have.
The Ray engine (`ochre.cluster`, the `[ray]` extra) is imported only when asked for.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ochre.choices import ENGINES


class EngineError(RuntimeError):
    """The engine cannot run (Ray missing, a cluster that cannot be reached); str(e) is one line."""


@dataclass(frozen=True)
class Engine:
    """local: a process pool of `workers` (default all cores). ray: tasks on the cluster at `address`
    (default: a private cluster of `workers` CPUs started on this machine), at most `workers` at
    once when given (default: twice the cluster's CPUs queued, so no core waits for the driver)."""
    name: str = "local"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self):
        if self.name not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.name!r}")
        if self.address and self.name != "ray":
            raise EngineError(f"--address {self.address} names a Ray cluster: add --engine ray")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


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


@contextlib.contextmanager
def ordered_map(engine: Engine, jobs: int, *, crashed: Callable | None = None,
                gpus: float = 0.0) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """`map(fn, items)` on the engine: an iterator of fn(item) in the items' order.

    crashed(item, reason) -> result stands in for an item whose worker process died on every try
    (a decoder that segfaults, the kernel's OOM killer); without it such an item raises EngineError.
    Only the Ray engine can tell a dead worker from a slow one; a local pool is not asked.
    gpus: each Ray task's share of a GPU (0: CPU tasks).
    """
    if engine.name == "local":
        with process_map(pool_size(engine.workers, jobs)) as mapper:
            yield mapper
        return
    from ochre import cluster

    # A private cluster has exactly `workers` CPUs already; on a shared one `workers` caps this run.
    in_flight = engine.workers if engine.address else None
    with cluster.session(engine) as ray:
        yield lambda fn, items: cluster.ordered_results(ray, fn, items, in_flight=in_flight, crashed=crashed,
                                                        gpus=gpus)
