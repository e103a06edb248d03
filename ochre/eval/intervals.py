"""95 % bootstrap intervals over rollouts (docs/metrics.md#rollouts-on-recorded-actions).

A metric is a statistic of N rollouts (a mean, a correlation, a ratio of totals); its interval
resamples the rollouts with replacement and recomputes the statistic, the noise seeds' mean
included, so the interval is as wide as the rollouts make the metric uncertain. A bar is met only
when the interval's worse end clears it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BOOTSTRAPS = 1000
LEVEL = 0.95


def interval(stat: Callable[[np.ndarray], float], n: int, *, boots: int = BOOTSTRAPS,
             seed: int = 0) -> tuple[float, list[float]]:
    """stat(indices of rollouts) -> value; -> (value on all n rollouts, [lo, hi]). Resamples that
    give a non-finite value (a correlation of a constant) are left out of the interval."""
    value = float(stat(np.arange(n)))
    rng = np.random.default_rng(seed)
    return _ends(value, [stat(idx) for idx in rng.integers(0, n, (boots, n))])


def _ends(value: float, draws) -> tuple[float, list[float]]:
    """(value, [lo, hi]): the LEVEL interval of the finite bootstrap draws ([value, value] if none)."""
    draws = np.asarray(draws, np.float64)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return value, [value, value]
    lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return value, [float(lo), float(hi)]


def stratified_interval(stat: Callable[[np.ndarray, np.ndarray], float], sizes: tuple[int, int], *,
                        boots: int = BOOTSTRAPS, seed: int = 0) -> tuple[float, list[float]]:
    """interval for a statistic of two independent groups of rollouts (e.g. the fake and the real side
    of a two-sample test): stat(indices into group a, indices into group b) -> value; each group is
    resampled on its own, with its own size."""
    a, b = sizes
    value = float(stat(np.arange(a), np.arange(b)))
    rng = np.random.default_rng(seed)
    return _ends(value, [stat(rng.integers(0, a, a), rng.integers(0, b, b)) for _ in range(boots)])


def mean_interval(per_rollout: np.ndarray, **kw) -> tuple[float, list[float]]:
    """A mean over rollouts: per_rollout (seeds, N) or (N,) -> (mean over seeds and rollouts, interval)."""
    values = np.atleast_2d(np.asarray(per_rollout, np.float64)).mean(axis=0)            # (N,)
    return interval(lambda idx: values[idx].mean(), len(values), **kw)


def put(metrics: dict, name: str, result: tuple[float, list[float]]) -> None:
    """metrics[name] = value, metrics[name + "/ci"] = [lo, hi]."""
    metrics[name], metrics[f"{name}/ci"] = result


def worse_end(metrics: dict, name: str, higher_is_better: bool = True) -> float:
    """The end of a metric's interval a bar must clear (the value itself where there is none)."""
    lo, hi = metrics.get(f"{name}/ci", (metrics[name], metrics[name]))
    return lo if higher_is_better else hi
