"""The Ray engine of `ochre.parallel.ordered_map`: one task per item on a Ray cluster.

Tasks are submitted ahead, at most `in_flight` unfinished at a time, and their results handed
back in submission order (a finished task waits in Ray's object store until its turn). A task
whose worker process dies (killed, OOM, segfault) is retried by Ray on a fresh worker, RETRIES
times; the work being a pure function of its item, a retry returns what the first try would have.
Every node must see the stage's input and output folders at the same paths (shared storage) and
run the same ochre and Ray versions. Ray is imported here only, on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator

from ochre.parallel import Engine, EngineError, cpu_count

RETRIES = 2                 # tries after the first, per task, when its worker process dies
CONNECT_TIMEOUT_S = 5.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray, which is not installed: pip install 'ochre[ray]' "
                          "(the same Ray version on every node of the cluster)") from None
    return ray


def check_reachable(address: str) -> None:
    """Fail in one line, within CONNECT_TIMEOUT_S, when nothing listens at host:port (ray.init would
    otherwise retry for tens of seconds, printing a line each time, before its own error)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return                                            # "auto", or a form Ray resolves itself
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise EngineError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
                          "`ray start --head` on its head node, or check --address") from None


@contextlib.contextmanager
def session(engine: Engine) -> Iterator:
    """Ray, joined to `engine.address` or to a private local cluster (ended on exit). A Ray already
    joined by the caller (a notebook, a test) is used as it is and left running."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    _start_or_join(ray, engine)
    try:
        yield ray
    finally:
        ray.shutdown()


def _start_or_join(ray, engine: Engine) -> None:
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)     # task output would break the bar
    try:
        if engine.address:
            check_reachable(engine.address)
            ray.init(address=engine.address, **quiet)
        else:   # private: this machine's loopback only ("local": never join a cluster found running here)
            ray.init(address="local", num_cpus=engine.workers or cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", **quiet)
    except EngineError:
        raise
    except Exception as e:  # Ray's own errors (version mismatch, a head that refuses) are many
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if engine.address and "RAY_AUTH_MODE" not in os.environ:
            # Ray turns token authentication on for a `ray start` head, but never for a driver given an address.
            hint = ("; a cluster with token authentication (`ray start`'s default) needs RAY_AUTH_MODE=token "
                    "and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN) on this machine")
        where = f" at {engine.address}" if engine.address else ""
        raise EngineError(f"cannot start or join a Ray cluster{where}: {first}{hint}") from None


def _dead_worker_errors(ray) -> tuple[type, ...]:
    ex = ray.exceptions
    return ex.WorkerCrashedError, ex.OutOfMemoryError, ex.NodeDiedError


def ordered_results(ray, fn: Callable, items: Iterable, *, in_flight: int | None, crashed: Callable | None,
                    gpus: float = 0.0) -> Iterator:
    """fn(item) for every item as Ray tasks; yields the results in the items' order."""
    items = list(items)
    if in_flight is None:
        unit = "GPU" if gpus else "CPU"
        in_flight = 2 * max(1, int(ray.cluster_resources().get(unit, 1) / (gpus or 1)))
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False)(fn)
    refs: dict[int, object] = {}        # submitted, not yet handed back
    unfinished: list = []               # submitted, not yet done
    submitted = 0
    dead = _dead_worker_errors(ray)
    try:
        for head in range(len(items)):
            while True:
                while len(unfinished) < in_flight and submitted < len(items):
                    refs[submitted] = remote.remote(items[submitted])
                    unfinished.append(refs[submitted])
                    submitted += 1
                if refs[head] not in unfinished:
                    break
                _, unfinished = ray.wait(unfinished, num_returns=1)
            ref = refs.pop(head)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:    # the work raised: the error a local run would show
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
            except dead as e:
                if crashed is None:
                    raise EngineError(f"item {head}: its worker died on all {RETRIES + 1} tries "
                                      f"({type(e).__name__})") from None
                result = crashed(items[head], f"its worker process died on all {RETRIES + 1} tries "
                                              f"({type(e).__name__})")
            yield result
    finally:
        for ref in unfinished:          # the driver stopped early: free the cluster
            ray.cancel(ref, force=True)
