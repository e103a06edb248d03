"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    The temporary name ends in `.tmp` so an interrupted write is recognisable and ignored.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(folder: str | os.PathLike, pattern: str = ".*.tmp") -> None:
    """Delete what writes into `folder` that a kill interrupted left behind: the hidden `.….tmp` files of
    `atomic_path` and `.….tmp` folders written whole before a rename (checkpoints). Call it before writing
    there again; it assumes one writer per folder."""
    for stale in Path(folder).glob(pattern):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# ---- paths recorded in files ------------------------------------------------------------------
# A path written into a record (an index, a run's checkpoint) is stored relative to the folder that
# holds the record, so folders moved together still find each other and a command run from any
# working directory reads them alike; absolute only where no relative path exists (another drive).

def record_path(target: str | os.PathLike, base: str | os.PathLike) -> str:
    """`target` as recorded in a file inside folder `base`."""
    target, base = os.path.abspath(target), os.path.abspath(base)    # symlinks kept: folders move with them
    try:
        return os.path.relpath(target, base)
    except ValueError:
        return target


def recorded_paths(recorded: str | None, base: str | os.PathLike) -> list[Path]:
    """Where a path recorded in a file inside folder `base` may be, most likely first: relative to
    `base` (how records are written), then as written (records made before paths were stored
    relative: absolute, or relative to the folder the command ran in)."""
    if not recorded:
        return []
    path = Path(recorded)
    return [path] if path.is_absolute() else [Path(base) / path, path]
