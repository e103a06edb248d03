"""The live-play loop: stepper backends, input mapping, display, gym env (ochre.runtime).

Importing it registers the gymnasium id `ochre/Dream-v0` when gymnasium is installed (docs/runtime.md);
that is a registry entry, not a model load.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("gymnasium") is not None:
    from ochre.runtime.env import register as _register

    _register()
