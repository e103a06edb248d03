"""A plan for the session runner's tests (tests/test_bench_session.py): steps that measure, run past
their limit, raise a plain Exception subclass, and take their process down."""

from __future__ import annotations

import os
import time

from ochre.bench.plan import Step


class Boom(Exception):
    """An error that is no RuntimeError, as ONNX Runtime's are not."""


def _measures(ctx) -> None:
    ctx.emit({"variant": "a", "ms_p50": 1.0})
    ctx.emit({"variant": "b", "ms_p50": 2.0})


def _overruns(ctx) -> None:
    ctx.emit({"variant": "before the limit", "ms_p50": 1.0})
    time.sleep(120)


def _raises(ctx) -> None:
    ctx.emit({"variant": "before the error", "ms_p50": 1.0})
    raise Boom("the backend broke")


def _crashes(ctx) -> None:
    ctx.emit({"variant": "before the crash", "ms_p50": 1.0})
    os._exit(3)


PLAN = [Step("one/measures", "one", "two rows", 1, _measures),
        Step("one/overruns", "one", "a row, then past its limit", 1, _overruns, limit_s=20),  # > a cold import of torch
        Step("one/after", "one", "after a timeout", 1, _measures),
        Step("two/raises", "two", "a row, then a plain Exception", 1, _raises),
        Step("two/crashes", "two", "a row, then the process dies", 1, _crashes),
        Step("two/after", "two", "after a crash", 1, _measures)]
OPTIONAL: list[Step] = []
