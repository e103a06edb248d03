"""Pieces the training loops share: the learning-rate schedule and the run logger."""

from __future__ import annotations

import json
import math
from pathlib import Path


def cosine_lr(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` share of the run, then cosine to 10 % of the peak.

    A function of progress in [0, 1] alone, so a resumed run needs no scheduler state, and a
    wall-time budget (`--minutes`) drives it as well as a step count does.
    """
    if progress < warmup:
        return peak * (progress + 1e-9) / warmup
    t = (progress - warmup) / max(1e-9, 1 - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class RunLogger:
    """JSONL always (RUN/log.jsonl); TensorBoard (RUN/tb) when installed. Rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled, self.path, self.tb = enabled, Path(out) / "log.jsonl", None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(out) / "tb"))
            except ImportError:
                pass

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb:
            for k, v in values.items():
                if isinstance(v, int | float):              # scalars; words (e.g. the precision) stay in the JSONL
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
