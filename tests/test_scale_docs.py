"""The cluster recipes stay true: every `ochre` command in docs/scale.md and in the README's
"Beyond one machine" section (shell lines, torchrun lines, the Kubernetes Job's command) parses
with today's CLI."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from ochre.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _texts() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Beyond one machine.*?(?=^## |\Z)", readme, re.S | re.M)
    assert section, "README has no '## Beyond one machine' section"
    return {"docs/scale.md": (ROOT / "docs" / "scale.md").read_text(), "README": section.group(0)}


def _commands(text: str) -> list[list[str]]:
    """argv after `ochre` (or `-m ochre`) of every command in the text's bash and yaml blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0]) if "ochre" in line else []
            for i, word in enumerate(words):
                if word == "ochre" and (i == 0 or words[i - 1] in ("-m", "--")):
                    found.append(words[i + 1:])
                    break
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        for command in re.findall(r"command: (\[.*?\])", block, re.S):
            words = json.loads(command)
            found.append(words[words.index("ochre") + 1:])
        found += [shlex.split(e)[1:] for e in re.findall(r"entrypoint: (ochre [^\n`]*)", block)]
    found += [shlex.split(e)[1:] for e in re.findall(r"`entrypoint: (ochre [^`]*)`", text)]
    return found


@pytest.mark.parametrize("where", ["docs/scale.md", "README"])
def test_every_cluster_command_parses(where):
    commands = _commands(_texts()[where])
    assert {c[0] for c in commands} >= {"prepare", "train"}, commands
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: command does not parse: ochre {' '.join(argv)}")
