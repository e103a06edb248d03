"""`ochre play` in a real window: an X server (Xvfb), the shipped model, events injected into pygame.

Turning right must move the picture left (phase correlation of the window before and after), and
pressing W must change the view (the same context and noise, with and without W). The window is
saved as a PNG; OCHRE_SCREENSHOT=bench/results/play_window.png keeps it (the committed screenshot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

DRIVER = r'''
import json, sys
import numpy as np
import pygame
from ochre.data.check import phase_shift
from ochre.images import save_png
from ochre.models.lookup import resolve
from ochre.runtime.play import PlayApp
from ochre.runtime.stepper import make_stepper

SCALE, TOP = 4, 24                  # the overlay text sits in the top rows: left out of the comparisons
model = resolve()
stepper = make_stepper("torch", model, seed=0)
app = PlayApp(stepper, model.context_frames(), fps=0, scale=SCALE, seed=0)

def step(events):
    for e in events:
        pygame.event.post(e)
    app.handle_events()
    action = app.advance()
    app.draw()
    return action, app.window_image()

def key(name, down=True):
    k = pygame.key.key_code(name)
    return pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=k, mod=0, unicode="", scancode=0)

def restart(seed):
    stepper.seed(seed)
    app.restart(context=0)
    app.draw()
    return app.window_image()

def mouse(dx):
    return pygame.event.Event(pygame.MOUSEMOTION, pos=(0, 0), rel=(dx, 0), buttons=(0, 0, 0))

out = {"origin": model.origin, "size": list(app.window_image().shape)}
for name, dx in (("right", 60), ("left", -60)):         # 60 counts = 9° = yaw 0.6 per step
    frames = [restart(1)]
    for _ in range(4):
        action, img = step([mouse(dx)])
        frames.append(img)
    shifts = phase_shift(np.stack(frames)[:, TOP:])       # (4, 2) [dy, dx] in window pixels
    out[name] = {"yaw": float(action[0]), "dx": shifts[:, 1].tolist()}
restart(2)
walk = step([key("w")])
_, w_img = walk
step([key("w", down=False)])
restart(2)
_, still_img = step([])
out["w_action"] = walk[0].tolist()
out["w_changed"] = float((w_img[TOP:] != still_img[TOP:]).any(-1).mean())
for _ in range(6):                                        # a few more frames for the screenshot
    step([key("w"), mouse(20)])
save_png(sys.argv[1], app.window_image())
app.close()
print("RESULT " + json.dumps(out))
'''


def test_play_window_under_xvfb(tmp_path):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb; .ci/run installs it as root)")
    pytest.importorskip("pygame", reason="the window needs pygame: pip install 'ochre[play]'")
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        display = xvfb.stdout.readline().strip()
        assert display, "Xvfb did not report a display"
        shot = tmp_path / "play_window.png"
        env = {**os.environ, "DISPLAY": f":{display}", "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy",
               "OCHRE_CACHE": str(tmp_path / "cache")}               # no demo model: the shipped one plays
        r = subprocess.run([sys.executable, "-c", DRIVER, str(shot)], capture_output=True, text=True,
                           timeout=300, env=env, cwd=tmp_path)
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert "shipped" in out["origin"] and out["size"] == [256, 256, 3]
    assert out["right"]["yaw"] > 0.5 and out["left"]["yaw"] < -0.5
    # The content moves opposite to the turn: ~3 tokens = 12 px per unit yaw at 4x (window px).
    assert sum(out["right"]["dx"]) / 4 < -4 and sum(out["left"]["dx"]) / 4 > 4, out
    assert out["w_action"][3] == 1.0 and out["w_changed"] > 0.01, out
    if os.environ.get("OCHRE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["OCHRE_SCREENSHOT"])
