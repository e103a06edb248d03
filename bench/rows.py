"""A stage's result file, written row by row: what a stage measured survives the stage being killed.

    {"benchmark": stage, "device", "device_kind", "git_sha", "versions", "date", ...,
     "steps": {step id: {"status": "running" | "done" | "error" | "timeout" | "crashed" | "not run",
                         "started": unix time, "seconds": s, "error": "..."}},
     "rows": [{"step": step id, ...}, ...]}

Every change (a step starting, a row, a step ending) rewrites the whole file atomically (ochre.io),
so a reader (the session runner polling a worker) or a kill sees the last complete version. Files
are small: a few hundred rows at most. A step's rows carry its id; running a step again drops its
old rows first. A file made by another git SHA or on another device is started afresh.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ochre.io import write_json_atomic

FINAL = ("done", "error", "timeout", "crashed", "not run")


class StageLog:
    """The result file of one stage at `path`; `header` is the environment record (bench.common.header)."""

    def __init__(self, path, header: dict, benchmark: str):
        self.path = Path(path)
        self.data = read(self.path)
        same = (self.data.get("git_sha"), self.data.get("device")) == (header.get("git_sha"), header.get("device"))
        if not same:
            self.data = {"benchmark": benchmark, **header, "steps": {}, "rows": []}

    def _save(self) -> None:
        write_json_atomic(self.path, self.data)

    def status(self, step: str) -> str | None:
        return self.data["steps"].get(step, {}).get("status")

    def note(self, **fields) -> None:
        """Header fields a step knows only once it runs (the model it benchmarks, math settings)."""
        self.data.update(fields)
        self._save()

    def begin(self, step: str) -> None:
        self.data["rows"] = [r for r in self.data["rows"] if r.get("step") != step]
        self.data["steps"][step] = {"status": "running", "started": time.time()}
        self._save()

    def add(self, step: str, row: dict) -> None:
        self.data["rows"].append({"step": step, **row})
        self._save()

    def end(self, step: str, status: str, error: str | None = None) -> None:
        if status not in FINAL:
            raise ValueError(f"a step ends {' | '.join(FINAL)}, not {status!r}")
        entry = self.data["steps"].setdefault(step, {})
        started = entry.get("started")
        entry.update(status=status, seconds=round(time.time() - started, 1) if started else 0.0)
        if error:
            entry["error"] = error
            self.data["rows"].append({"step": step, "error": error})
        self._save()


def read(path) -> dict:
    """A stage file's contents, {} when absent or unreadable (a fresh start)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("steps"), dict) else {}
