"""A training run's folder: who may write into it, and what a --resume must match.

RUN/checkpoints/ (ochre.train.checkpoint), RUN/log.jsonl (+ RUN/tb/ when TensorBoard is
installed; ochre.train.common.RunLogger), and whatever the trainer evaluates at the end (metrics.json, pictures). Every
checkpoint's `extra["run"]` holds the run's record ({"kind", "config", "inputs"}, the shape of a
data folder's config.json): the settings and data that must match for a resume to continue
the exact run. Anything else is refused on every rank alike, with one line saying what differs.
The record holds the world size (`ranks`): the data stream is dealt by rank, so a resume on another
number of processes is refused too. Across nodes, RUN must be one folder every node sees (rank 0
writes, every rank reads the checkpoint to resume from); ranks that find different checkpoints stop.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ochre.data.shards import describe_differences
from ochre.io import write_bytes_atomic
from ochre.models import checkpoint as ckpt
from ochre.train.distributed import DistInfo, gather_ints, teardown


class RunMismatch(ValueError):
    """A run folder that cannot be used as asked (resume with other settings, or clobbering a run)."""


def claim_run_folder(out: Path, record: dict, info: DistInfo, *, resume: bool, overwrite: bool,
                     outputs: tuple[str, ...]) -> Path | None:
    """The checkpoint to resume from (None: start afresh), after checking it is this run's.

    Raises RunMismatch when --resume names a run made with other settings, or when a run exists
    and neither --resume nor --overwrite says what to do with it. Starting afresh, rank 0 deletes
    `outputs` (what an earlier or killed run left would otherwise mix into this one's).
    """
    latest = None if overwrite else ckpt.latest_checkpoint(out)
    _check_every_rank_sees(out, latest)
    if latest is not None and not resume:
        raise RunMismatch(f"{out} already holds a run (newest checkpoint {latest.name}): pass --resume to "
                          "continue it, --overwrite to start afresh, or another --out")
    if latest is not None:
        saved = ckpt.read_checkpoint_config(latest)["extra"].get("run", {})
        differences = describe_differences(saved, record)
        if differences:
            raise RunMismatch(f"cannot --resume {latest}: it was made with other settings "
                              f"({'; '.join(differences)}); rerun with the flags it was started with, "
                              "or start afresh with --overwrite or another --out")
    elif info.is_main:
        for name in outputs:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if resume:
            print(f"--resume: no checkpoint in {out}; starting from scratch", file=sys.stderr)
    return latest


def _check_every_rank_sees(out: Path, latest: Path | None) -> None:
    """Every rank must find the same newest checkpoint: across nodes, a run folder on a node's own
    disk shows rank 0's checkpoints to rank 0 only, and the others would start afresh beside it."""
    steps = gather_ints(-1 if latest is None else int(latest.name.removeprefix("step_")))
    if len(set(steps)) > 1:
        teardown()
        raise RunMismatch(f"{out}: the ranks see different checkpoints (newest step by rank, -1 for none: {steps}); "
                          "put --out on storage every node sees (a shared file system) and give every node the "
                          "same --out")


def check_every_rank_has_data(what, frames_here: int, batch: int, shards: int) -> None:
    """Stop every rank with the same message when any rank has fewer than `batch` frames: alone,
    that rank would fail and leave the others waiting for it in their first all-reduce."""
    counts = gather_ints(frames_here)
    short = [r for r, c in enumerate(counts) if c < batch]
    if short:
        teardown()
        raise ValueError(f"{what}: rank(s) {short} would get fewer than {batch} training frames this epoch "
                         f"(frames per rank: {counts}; {shards} shards for {len(counts)} ranks). Prepare "
                         "with a smaller --per-shard so that every rank gets shards, or lower --batch.")


def truncate_log(out: Path, step: int) -> None:
    """Drop RUN/log.jsonl lines past `step`: a killed run logged steps its checkpoint does not hold."""
    path = out / "log.jsonl"
    if path.is_file():
        lines = [x for x in path.read_text().splitlines() if x and json.loads(x)["step"] <= step]
        write_bytes_atomic(path, "".join(x + "\n" for x in lines).encode())
