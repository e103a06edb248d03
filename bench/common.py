"""What every benchmark shares: the environment record and honest summary statistics (from the
library, ochre.measure: bench depends on the library, never the reverse), and where results go."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ochre.measure import device_name, device_tag, git_sha, header, stats_ms, time_calls, versions

__all__ = ["RESULTS", "data_record", "device_name", "device_tag", "distinct_names", "git_sha", "header", "result_path",
           "stats_ms", "time_calls", "versions", "write_or_print"]

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(theme: str, device: str = "cpu", root: Path = RESULTS) -> Path:
    """root/<theme>_<device tag>_<date>.json (device_tag: "cpu", or the GPU's full name)."""
    return Path(root) / f"{theme}_{device_tag(device)}_{_dt.date.today().isoformat()}.json"


def run_record(run) -> dict:
    """A world-model run a result was measured on, without this machine's paths: its folder's name,
    newest step, weights' hash and recipe."""
    from ochre.models.checkpoint import checkpoint_hash, read_checkpoint_config

    meta = read_checkpoint_config(run)
    return {"name": Path(run).name, "step": meta.get("step"), "hash": checkpoint_hash(run),
            "recipe": meta.get("extra", {}).get("recipe")}


def data_record(root) -> dict:
    """The data a result was measured on, without this machine's paths: the folder's name and the
    digest of its index.json (ochre.data.shards.index_digest)."""
    from ochre.data.shards import index_digest

    return {"name": Path(root).name, "index_digest": index_digest(root)}


def distinct_names(tool: str, folders) -> bool:
    """Whether the folders' names differ (they key a tool's results); if not, says so on stderr."""
    import sys

    if len({Path(f).name for f in folders}) == len(folders):
        return True
    print(f"{tool}: the folders compared need different names (they key the results)", file=sys.stderr)
    return False


def write_or_print(result: dict, out) -> None:
    """The result to `out` as JSON (atomically), or to stdout when no file is named."""
    import json

    from ochre.io import write_json_atomic

    if out:
        write_json_atomic(Path(out), result)
    else:
        print(json.dumps(result, indent=1))
