"""`ochre serve` in a real browser: Debian's Chromium, headless, driven by Playwright, plays the page.

The page loads and shows frames; holding W changes the view; moving the (pointer-locked) mouse to the
right turns the view right, so the picture moves left (phase correlation between canvas snapshots,
as `ochre data check` measures shifts); key 3 restarts from the third start view; fps and latency
are on screen. OCHRE_SERVE_SCREENSHOT=PATH
keeps the screenshot (bench/results/serve_browser.png is the committed one).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no Chromium: apt-get install chromium (.ci/run does)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="no playwright: pip install -e '.[dev]' (.ci/run does)"),
    pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("aiohttp", "PIL")),
                       reason="ochre serve needs the [serve] extra (aiohttp, Pillow)"),
]


@pytest.fixture(scope="module")
def server():
    from ochre.bench.serve_load import start_server, stop_server

    proc, url = start_server("torch", None, players=2, fps=20, threads=1, timeout=300)
    yield url
    stop_server(proc)


def _canvas(page) -> np.ndarray:
    """What the canvas holds now: uint8 (64, 64, 3) (its own pixels, not the scaled screen)."""
    rgba = page.evaluate("() => Array.from(document.getElementById('view').getContext('2d')"
                         ".getImageData(0, 0, 64, 64).data)")
    return np.asarray(rgba, np.uint8).reshape(64, 64, 4)[..., :3]


def _wait_frames(page, n: int) -> None:
    seen = page.evaluate("() => window.ochre.frames")
    page.wait_for_function(f"() => window.ochre.frames >= {seen + n}", timeout=60_000)


def test_the_page_plays_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from ochre.data.check import phase_shift
    from ochre.models.lookup import resolve

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS, viewport={"width": 640,
                                                                                              "height": 700})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(server + "/")
            page.wait_for_function("() => window.ochre && window.ochre.frames > 10", timeout=60_000)
            box = page.locator("#view").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.click(cx, cy)
            page.wait_for_function("() => window.ochre.locked", timeout=10_000)
            still = _canvas(page)
            page.keyboard.down("w")
            _wait_frames(page, 20)                            # 1 s at 20 ticks a second (longer on a busy CPU)
            walked = _canvas(page)
            page.keyboard.up("w")
            assert np.abs(walked.astype(int) - still.astype(int)).mean() > 2, "holding W did not change the view"
            snaps, x = [], cx
            for _ in range(10):                               # right, 60 px (9°) between snapshots
                x += 60
                page.mouse.move(x, cy)
                _wait_frames(page, 2)                         # the tick that took the motion has drawn
                snaps.append(_canvas(page))
            dx = phase_shift(np.stack(snaps))[:, 1]
            print("horizontal shift between snapshots while turning right:", dx.round(2))
            assert np.median(dx) < -1, f"turning right should move the picture left, got dx {dx.round(1)}"
            hud = page.locator("#hud").inner_text()
            state = page.evaluate("() => window.ochre")
            assert state["fps"] > 0 and state["latencyMs"] is not None and "fps" in hud and "ms" in hud, hud
            page.keyboard.press("3")                          # restart from start view 3 (context index 2)
            _wait_frames(page, 3)
            view = _canvas(page).astype(int)
            distance = [np.abs(view - c.astype(int)).mean() for c in resolve().context_frames()]
            assert int(np.argmin(distance)) == 2, np.round(distance, 1)
            shot = Path(os.environ.get("OCHRE_SERVE_SCREENSHOT") or tmp_path / "serve_browser.png")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_a_full_server_says_so_on_the_page(server, tmp_path):
    """Two players fill the server (batch 2); a third page tells its player the server is full."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS)
        try:
            pages = [browser.new_page() for _ in range(3)]
            for page in pages[:2]:
                page.goto(server + "/")
                page.wait_for_function("() => window.ochre && window.ochre.frames > 0", timeout=60_000)
            pages[2].goto(server + "/")
            pages[2].wait_for_function("() => window.ochre && window.ochre.closed !== null", timeout=30_000)
            assert pages[2].evaluate("() => window.ochre.closed") == 1013
            assert "server is full" in pages[2].locator("#status").inner_text()
        finally:
            browser.close()

