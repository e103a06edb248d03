"""docs/architecture.md#layout-and-layers: dependencies flow one way. Every import in the library —
at the top of a module or inside a function, where the lazy ones hide — is an arrow from one layer
to another, and none may point the wrong way. The checker runs on the source (ast), so an import
that only happens on some code path counts as much as one at import time."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

# Which layers each layer may import. "base" is the rest of ochre/ (data, actions, io, measure ...);
# "top" is what orchestrates the layers (the CLI and the demo); bench may import anything.
ALLOWED = {
    "kernels": {"kernels"},
    "base": {"base", "kernels", "models"},
    "models": {"models", "kernels", "base"},
    "train": {"train", "models", "kernels", "base"},
    "eval": {"eval", "models", "kernels", "base"},
    "export": {"export", "models", "kernels", "base"},
    "runtime": {"runtime", "export", "models", "kernels", "base"},
}
TOP = {"ochre.cli", "ochre.demo", "ochre.demo_report", "ochre.__main__"}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in TOP:
        return "top"
    if len(parts) > 1 and parts[1] in ("kernels", "models", "train", "eval", "export", "runtime", "bench"):
        return parts[1]
    return "base"


def library_sources() -> dict[str, str]:
    """{module name: source} of every module of the installed package (its top-level folders are
    mapped into the one namespace: pyproject.toml's package-dir)."""
    dirs = ("ochre", "ochre.kernels", "ochre.export", "ochre.runtime", "ochre.bench")
    out = {}
    for package in dirs:
        base = Path(importlib.import_module(package).__file__).parent
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            if rel.parts and rel.parts[0] in ("shipped", "static"):
                continue
            name = ".".join((package, *rel.parts)).removesuffix(".__init__")
            if package == "ochre" and rel.parts and rel.parts[0] in {p.split(".")[1] for p in dirs if p != "ochre"}:
                continue                                  # a mapped subpackage lives in its own folder
            out[name] = path.read_text()
    return out


def imports(module: str, source: str) -> set[str]:
    """The ochre modules `source` imports anywhere in its body (relative imports resolved;
    `from ochre import x` counts as ochre.x; importlib.import_module("...") with a literal too)."""
    found = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names} if base == "ochre" else {base}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found.add(str(node.args[0].value))
    return {m for m in found if m == "ochre" or m.startswith("ochre.")}


def wrong_way(sources: dict[str, str]) -> list[str]:
    """Every import from a layer into one it may not import, as "a -> b (layer -> layer)"."""
    bad = []
    for module, source in sorted(sources.items()):
        src = layer(module)
        if src in ("top", "bench"):
            continue
        for target in sorted(imports(module, source)):
            if target != "ochre" and layer(target) not in ALLOWED[src]:
                bad.append(f"{module} -> {target} ({src} -> {layer(target)})")
    return bad


def test_no_import_points_the_wrong_way():
    sources = library_sources()
    assert len(sources) > 60 and {"ochre.export.aoti", "ochre.runtime.stepper", "ochre.kernels.ops"} <= set(sources)
    assert wrong_way(sources) == []


@pytest.mark.parametrize("module, planted", [
    ("ochre.export.planted", "def f():\n    from ochre.runtime.stepper import make_stepper\n"),
    ("ochre.runtime.planted", "import ochre.train.checkpoint\n"),
    ("ochre.models.planted", "def g():\n    if True:\n        from ochre.eval import evaluate\n"),
    ("ochre.eval", "def h():\n    from ochre.export.graph import StepGraph\n"),
    ("ochre.data.planted", "def k():\n    import importlib\n    importlib.import_module('ochre.runtime.play')\n"),
    ("ochre.kernels.planted", "from ochre import models\n"),
    ("ochre.export.planted", "from ..runtime import stepper\n"),
])
def test_the_checker_sees_a_planted_wrong_way_import(module, planted):
    sources = {**library_sources(), module: planted}
    assert [b for b in wrong_way(sources) if b.startswith(module + " ")], planted


def test_the_library_never_imports_bench():
    """At import time too: importing every library module pulls in nothing of ochre.bench."""
    modules = sorted(m for m in library_sources() if layer(m) != "bench" and m != "ochre.__main__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'ochre.bench' or m.startswith('ochre.bench.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout
