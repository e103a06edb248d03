"""DESIGN §2: dependencies flow one way. The library (everything under ochre/) never imports the
benchmarks; ochre.bench may import anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ochre

LIBRARY = Path(ochre.__file__).parent


def test_the_library_never_imports_bench():
    modules = sorted(".".join(("ochre", *p.relative_to(LIBRARY).with_suffix("").parts)).removesuffix(".__init__")
                     for p in LIBRARY.rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'ochre.bench' or m.startswith('ochre.bench.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(modules) > 15 and r.stdout.strip() == "[]", r.stdout
