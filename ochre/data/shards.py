"""Shards on disk (docs/data.md): the one place that reads and writes them.

An output folder of `ochre prepare` or `ochre tokenize` holds
    config.json          what made the folder: {"kind", "config", "inputs"}, written before any work
    shards/NAME.tar      webdataset samples ({"__key__", ext: bytes}), written atomically
    shards/NAME.json     the shard's manifest, written after its tar: marks the shard done
    index.json           every sample with its shard and frame count, written last
Arrays inside a sample are .npy bytes (never pickles). A rerun resumes only into a folder whose
config.json matches its own record exactly; any difference stops it before any work, naming what
differs, so one folder never mixes two configurations (8 fps shards under a 10 fps index, say).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ochre.io import atomic_path, recorded_paths, write_json_atomic

RECORD = "config.json"
OUTPUTS = ("shards", "index.json", "report.json", RECORD)   # what --overwrite removes


class OutputMismatch(ValueError):
    """An output folder made by another configuration; str(e) says what differs and what to do."""


# ---- arrays and samples -----------------------------------------------------------------

def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickle), the encoding of every array in a shard."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write webdataset samples to a tar atomically; fixed mtimes keep reruns byte-identical."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def tar_samples(urls: list[str]) -> Iterator[dict]:
    """Raw webdataset samples ({"__key__", ext: bytes}) of the given shards, in order."""
    # Imported here: webdataset imports torch (2 s), which prepare's worker processes never need.
    import webdataset as wds

    return wds.tarfile_to_samples()(iter([{"url": u} for u in urls]))


# ---- index and manifests ------------------------------------------------------------------

def _index_bytes(root: str | Path) -> bytes:
    path = Path(root) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} the output of `ochre prepare`/`ochre tokenize`?")
    return path.read_bytes()


def read_index(root: str | Path) -> dict:
    return json.loads(_index_bytes(root))


def index_digest(root: str | Path) -> str:
    """Short sha256 of a folder's index.json: names the data set (its samples, config and sources)."""
    return hashlib.sha256(_index_bytes(root)).hexdigest()[:16]


def indexed_folder(root: str | Path, key: str, index: dict | None = None) -> Path:
    """A folder a token index records (`clips`, or `tokenizer_checkpoint`), wherever the command
    runs (ochre.io.recorded_paths); FileNotFoundError naming what was searched when it is gone."""
    index = read_index(root) if index is None else index
    found = recorded_paths(index.get(key), root)
    for path in found:
        if path.is_dir():
            return path
    where = ", ".join(str(p) for p in found) or f"nothing: {Path(root) / 'index.json'} records no {key!r}"
    raise FileNotFoundError(f"{root}: the {key.replace('_', ' ')} its index records is not there (searched {where})")


def read_manifest(path: Path) -> dict | None:
    """A shard's manifest, or None when it is missing or unreadable (the shard is then redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_manifest(path: Path, manifest: dict) -> None:
    write_json_atomic(path, manifest)       # written after the tar: its presence marks the shard done


# ---- what made a folder -------------------------------------------------------------------

def sources_digest(sources: dict[str, int]) -> str:
    """Short sha256 of a source set {name: bytes}: the same recordings give the same digest."""
    return hashlib.sha256(json.dumps(sorted(sources.items())).encode()).hexdigest()[:16]


def claim_output(out: Path, record: dict, *, overwrite: bool = False, what: str = "shards",
                 outputs: tuple[str, ...] = OUTPUTS) -> None:
    """Make `out` ready for a run described by `record` ({"kind", "config", "inputs"}).

    A fresh folder, or one made by the same record (an interrupted run: it resumes), is fine.
    A folder made by another record raises OutputMismatch naming the differences, unless
    `overwrite`, which deletes the previous outputs first (`outputs`: glob patterns in `out`, the
    record included). The record is then written, so even a run killed before its first shard
    leaves a folder that later runs can be checked against.
    """
    path = out / RECORD
    if overwrite:
        for target in [t for pattern in outputs for t in out.glob(pattern)]:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    elif path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        differences = describe_differences(old, record)
        if differences:
            raise OutputMismatch(f"{out} holds {what} made with another configuration ({'; '.join(differences)}). "
                                 "Rerun with the original settings to finish or reuse it, pass --overwrite to "
                                 "replace it, or write to another folder.")
    elif any(any(out.glob(pattern)) for pattern in outputs):
        raise OutputMismatch(f"{out} holds {what} with no {RECORD} saying how they were made (an older ochre?). "
                             "Pass --overwrite to replace them, or write to another folder.")
    if not path.is_file():                  # a resumed run leaves the record (and its mtime) alone
        write_json_atomic(path, record)


def describe_differences(old: dict, new: dict) -> list[str]:
    """What differs between two records, one phrase each: "fps 8.0 -> 10.0", "sources: 2 added (a, b)"."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))    # as stored: tuples are lists
    out = []
    for section in ("kind", "config", "inputs"):
        a, b = old.get(section), new.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{section} {_short(a)} -> {_short(b)}")
            continue
        for key in sorted(set(a) | set(b), key=lambda k: (k not in b, k)):
            if a.get(key) == b.get(key):
                continue
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                out.append(f"{key}: {_set_change(a[key], b[key])}")
            else:
                out.append(f"{key} {_short(a.get(key, 'unset'))} -> {_short(b.get(key, 'unset'))}")
    return out


def _set_change(a: dict, b: dict) -> str:
    """A changed mapping such as {recording name: bytes}, summarised."""
    parts = []
    for label, names in (("added", sorted(set(b) - set(a))), ("removed", sorted(set(a) - set(b))),
                         ("changed", sorted(k for k in set(a) & set(b) if a[k] != b[k]))):
        if names:
            parts.append(f"{len(names)} {label} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    return ", ".join(parts)


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
