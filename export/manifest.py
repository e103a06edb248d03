"""An export folder's manifest.json: written last, once the export has passed its parity check, with
the sha256 of every file a runtime reads; verified on every load (docs/runtime.md#export-folders).

A runtime therefore never plays anything but the export that passed parity: a missing, damaged or
altered file (overwritten weights, a truncated graph) is one line naming it and ending "re-export",
never a silent run with other weights or a parser's traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from ochre.io import write_json_atomic
from ochre.models.checkpoint import sha256

MANIFEST = "manifest.json"


class ExportError(ValueError):
    """An export folder that cannot be used as it is; str(e) names the file and ends with the fix."""


def file_hashes(folder, names) -> dict[str, str]:
    """{name: sha256} of the named files of `folder` (those that exist)."""
    folder = Path(folder)
    return {n: sha256(folder / n) for n in sorted(names) if (folder / n).is_file()}


def write(folder, manifest: dict, names) -> None:
    """manifest.json with the hashes of `names` as "files"; the last write of an export."""
    write_json_atomic(Path(folder) / MANIFEST, {**manifest, "files": file_hashes(folder, names)})


def read(folder, fmt: str, make: str) -> dict:
    """manifest.json of an export folder of format `fmt`, every recorded file checked against its
    sha256. `make` is the command that makes such a folder (said when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST} (an unfinished or failed export); make one with `{make}`")
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: unreadable ({e}); re-export") from None
    if not isinstance(m, dict) or m.get("format") != fmt:
        found = m.get("format") if isinstance(m, dict) else None
        raise ExportError(f"{path}: format {found!r}, expected {fmt!r}; re-export")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportError(f"{path}: lists no file hashes; re-export")
    for name, want in files.items():
        file = Path(folder) / name
        if not file.is_file():
            raise ExportError(f"{file}: missing; re-export")
        if sha256(file) != want:
            raise ExportError(f"{file}: damaged or altered (sha256 differs from {MANIFEST}); re-export")
    return m
