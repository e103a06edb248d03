"""What every benchmark shares: the environment record and honest summary statistics (from the
library, ochre.measure: bench depends on the library, never the reverse), and where results go."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ochre.measure import device_name, git_sha, header, stats_ms, time_calls, versions

__all__ = ["RESULTS", "device_name", "git_sha", "header", "result_path", "stats_ms", "time_calls", "versions"]

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(theme: str, device: str = "cpu") -> Path:
    tag = "cpu" if not device.startswith("cuda") else device_name(device).split()[-1].lower()
    return RESULTS / f"{theme}_{tag}_{_dt.date.today().isoformat()}.json"
