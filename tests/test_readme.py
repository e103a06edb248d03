"""The README's real-data instructions stay true: every `ochre` command it shows parses with
today's CLI, and the layouts it describes are the ones `prepare` finds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ochre.cli import build_parser
from ochre.data.sources import find_recordings

README = Path(__file__).resolve().parents[1] / "README.md"


def _real_data_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Real data.*?(?=^## )", text, re.S | re.M)
    assert match, "README has no '## Real data' section"
    return match.group(0)


def test_readme_real_data_commands_parse():
    section = _real_data_section()
    commands = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.startswith("ochre ")]
    assert {c.split()[1] for c in commands} >= {"prepare", "data", "train-tokenizer", "tokenize"}
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")
    assert "**Status:**" in section and "per 1,000 trajectories" in section


def test_readme_layouts_are_what_prepare_finds(tmp_path):
    layout = re.search(r"```\n(SRC/.*?)```", _real_data_section(), re.S).group(1)
    for line in layout.splitlines():
        files = line.split("#")[0].split()
        if files and files[0].startswith("SRC/"):
            folder = tmp_path / files[0].removeprefix("SRC/")
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.touch() if folder.suffix else folder.mkdir(parents=True, exist_ok=True)
            last = folder
        else:
            for name in files:
                (last / name).touch()
    found = {(r.layout, r.name) for r in find_recordings(tmp_path)}
    assert {layout for layout, _ in found} == {"minerl", "vpt"} and len(found) == 2, found


def test_readme_play_export_native_commands_parse():
    """The "Play it, export it, run it native" commands exist with the flags shown."""
    text = README.read_text()
    section = re.search(r"^## Play it, export it, run it native.*?(?=^## )", text, re.S | re.M).group(0)
    commands = [re.sub(r"\[[^]]*\]", "", line.split("#")[0]).strip()
                for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.startswith("ochre ")]
    assert {c.split()[1] for c in commands} >= {"play", "export", "bench"}
    assert any("--backend native" in c for c in commands) and any("--format aoti" in c for c in commands)
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")


def test_readme_luanti_commands_parse():
    """The "Real game footage (Luanti)" commands exist with the flags shown."""
    section = re.search(r"^## Real game footage \(Luanti\).*?(?=^## )", README.read_text(), re.S | re.M).group(0)
    commands = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.startswith("ochre ")]
    assert {c.split()[1] for c in commands} >= {"record", "prepare", "data", "demo"}
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")


def test_readme_shipped_bars_are_the_shipped_models():
    """The README's table of the shipped model's bars is what `python -m ochre.eval.bars` reads from the
    metrics files shipped with it (so a re-ship that forgets the README fails here)."""
    from ochre.eval.bars import SHIPPED, merged, worlds_table

    match = re.search(r"<!-- shipped-bars: python -m ochre\.eval\.bars (.*?) -->\n(.*?)\n<!-- /shipped-bars -->",
                      README.read_text(), re.S)
    assert match, "README has no shipped-bars table"
    files = [README.parent / f for f in match.group(1).split()]
    assert {f.name for f in files} == {"metrics.json", "tokenizer_metrics.json"}
    assert match.group(2).strip() == worlds_table(merged(files), SHIPPED)


def test_bars_table_cli_marks_what_it_did_not_measure(tmp_path, capsys):
    import json

    from ochre.eval.bars import main

    (tmp_path / "m.json").write_text(json.dumps({"psnr@8/over_repeat": 1.4, "psnr@8/over_repeat/ci": [0.9, 1.9],
                                                 "test_world/psnr@8/over_repeat": 2.5}))
    (tmp_path / "t.json").write_text(json.dumps({"psnr@8/over_repeat": 9.0, "c2st@129-256": 0.5}))
    assert main([str(tmp_path / "m.json"), str(tmp_path / "t.json"), "--demo"]) == 0
    rows = {r.split(" | ")[0].strip("| "): r for r in capsys.readouterr().out.splitlines()}
    assert rows["psnr@8/over_repeat"] == ("| psnr@8/over_repeat | ≥ 1 | 1.400 (0.900), **missed by 0.100** "
                                          "| 2.500, met |")                  # the first file naming it wins
    assert rows["c2st@129-256"].endswith("| 0.500, met | not measured |")      # the other world's is not invented
    assert "not measured | not measured" in rows["tour/turn_sign_acc"]
