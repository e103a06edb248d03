"""`ochre play`: drive a dream with WASD and the mouse in a pygame window, or headless from a file.

Window: WASD to move, the mouse (captured) or the arrow keys to look, R to restart from another
context frame, Esc to quit; the frame is upscaled, with fps and step latency drawn over it.
The dream advances at the model's frame rate (its actions are §3.2 windows of that length: one
step at 8 fps is 1/8 s of play), so the world moves at the speed it was recorded at; the display
loop runs at up to 60 Hz and samples the input every frame (runtime.actions.LiveInput).
Headless (`--headless --actions FILE [--record OUT.mp4]`): one step per line of the action file,
as fast as the backend goes, frames to an mp4; SDL is never touched.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ochre.models.lookup import DEFAULT_FPS
from ochre.runtime.actions import LiveInput, read_action_file

KEYS = {"w": "w", "a": "a", "s": "s", "d": "d", "left": "left", "right": "right", "up": "up", "down": "down"}


class Clock:
    """Step latency samples -> p50 / p99 / fps for the overlay and the summary."""

    def __init__(self, keep: int = 240):
        self.samples: list[float] = []
        self.keep = keep

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        del self.samples[:-self.keep]

    def stats(self) -> dict:
        if not self.samples:
            return {"step_ms_p50": 0.0, "step_ms_p99": 0.0, "fps": 0.0}
        ms = np.asarray(self.samples) * 1e3
        return {"step_ms_p50": float(np.median(ms)), "step_ms_p99": float(np.percentile(ms, 99)),
                "fps": float(1e3 / ms.mean())}


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour (H, W, 3) -> (H·s, W·s, 3): the model's pixels, unblurred."""
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


class PlayApp:
    """The window loop, in pieces a test can drive: handle_events() -> due() -> advance() -> draw()."""

    def __init__(self, stepper, contexts: np.ndarray, fps: float, scale: int = 8, seed: int = 0,
                 capture_mouse: bool = True, title: str = "ochre"):
        import pygame

        self.pg, self.stepper, self.contexts = pygame, stepper, contexts
        self.fps, self.scale = fps, scale
        self.rng = np.random.default_rng(seed)
        self.input, self.clock = LiveInput(), Clock()
        pygame.init()
        self.size = 64 * scale
        self.screen = pygame.display.set_mode((self.size, self.size))
        pygame.display.set_caption(f"{title} — WASD move, mouse/arrows look, R restart, Esc quit")
        self.font = pygame.font.Font(None, max(14, 3 * scale))
        if capture_mouse:
            pygame.event.set_grab(True)
            pygame.mouse.set_visible(False)
        self.running, self.keys = True, set()
        self._mouse = [0.0, 0.0]
        self._last_tick = time.perf_counter()
        self._next_step = self._last_tick
        self.restart()

    def restart(self, context: int | None = None) -> None:
        index = int(self.rng.integers(len(self.contexts))) if context is None else context
        self.frame = self.stepper.reset(self.contexts[index][None])[0].copy()
        self.input.action()                                   # drop input from before the restart

    def handle_events(self) -> None:
        pg = self.pg
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key == pg.K_ESCAPE):
                self.running = False
            elif ev.type == pg.KEYDOWN and ev.key == pg.K_r:
                self.restart()
            elif ev.type in (pg.KEYDOWN, pg.KEYUP):
                name = KEYS.get(pg.key.name(ev.key))
                if name:
                    (self.keys.add if ev.type == pg.KEYDOWN else self.keys.discard)(name)
            elif ev.type == pg.MOUSEMOTION:
                self._mouse[0] += ev.rel[0]
                self._mouse[1] += ev.rel[1]
        now = time.perf_counter()
        self.input.tick(now - self._last_tick, *self._mouse, keys=frozenset(self.keys))
        self._mouse = [0.0, 0.0]
        self._last_tick = now

    def due(self) -> bool:
        return self.fps <= 0 or time.perf_counter() >= self._next_step

    def advance(self) -> np.ndarray:
        """One model step on the input gathered since the previous one."""
        action = self.input.action()
        t0 = time.perf_counter()
        self.frame = self.stepper.step(action[None])[0].copy()
        self.clock.add(time.perf_counter() - t0)
        self._next_step = max(self._next_step + (1 / self.fps if self.fps > 0 else 0), t0)
        return action

    def draw(self) -> None:
        pg = self.pg
        surf = pg.surfarray.make_surface(upscale(self.frame, self.scale).swapaxes(0, 1))
        self.screen.blit(surf, (0, 0))
        s = self.clock.stats()
        text = (f"{s['fps']:.0f} fps  step {s['step_ms_p50']:.1f} ms (p99 {s['step_ms_p99']:.1f})  "
                f"{self.stepper.backend}")
        self.screen.blit(self.font.render(text, True, (255, 255, 255), (0, 0, 0)), (4, 4))
        pg.display.flip()

    def window_image(self) -> np.ndarray:
        """What the window shows now: uint8 (H·s, W·s, 3)."""
        return self.pg.surfarray.array3d(self.pg.display.get_surface()).swapaxes(0, 1).copy()

    def run(self, max_steps: int | None = None) -> dict:
        steps, ticker = 0, self.pg.time.Clock()
        while self.running and (max_steps is None or steps < max_steps):
            self.handle_events()
            if self.due():
                self.advance()
                steps += 1
            self.draw()
            ticker.tick(60)
        return {**self.clock.stats(), "steps": steps}

    def close(self) -> None:
        self.pg.quit()


def headless(stepper, contexts: np.ndarray, actions: np.ndarray, fps: float, record=None, scale: int = 4,
             context: int = 0) -> dict:
    """Play an action sequence (S, 4) from contexts[context]; optionally write the video."""
    frames = [stepper.reset(contexts[context % len(contexts)][None])[0].copy()]
    clock = Clock(keep=len(actions))
    for a in actions:
        t0 = time.perf_counter()
        frames.append(stepper.step(a[None])[0].copy())
        clock.add(time.perf_counter() - t0)
    if record:
        from ochre.data.video import write_mp4

        video = np.stack([upscale(f, scale) for f in frames])
        write_mp4(record, video, fps=fps)
    return {**clock.stats(), "steps": len(actions), "frames": np.stack(frames)}


def _export_model(folder: Path, fmt: str):
    """The Model an export folder plays when no checkpoint is named: its manifest's sources, fps and
    context frames (the ONNX folder keeps the model's own, the AOTInductor one synthetic views)."""
    from ochre.export import aoti, onnx
    from ochre.models.lookup import Model

    m = (onnx if fmt == "onnx" else aoti).read_manifest(folder)
    sources = m.get("sources") or {}
    return Model(world=Path(sources.get("world", {}).get("checkpoint", folder)),
                 tokenizer=Path(sources.get("tokenizer", {}).get("checkpoint", folder)),
                 fps=m.get("fps") or DEFAULT_FPS, origin=f"the export {folder}",
                 contexts=folder / ("contexts.npy" if fmt == "onnx" else "context.npy"))


def _world_hash(model) -> str | None:
    """The world-model checkpoint's hash, so a record of a run names the model it played."""
    from ochre.models.checkpoint import CheckpointError, checkpoint_hash

    try:
        return checkpoint_hash(model.world)
    except (CheckpointError, FileNotFoundError, OSError):
        return None


def _model_and_stepper(args):
    from ochre.models.lookup import resolve
    from ochre.runtime.exports import ensure_for
    from ochre.runtime.stepper import EXPORTED, make_stepper

    given = {"onnx": args.onnx, "aoti": args.aoti}
    backend = args.backend or ("onnxruntime" if args.onnx else "native" if args.aoti else "torch")
    fmt = EXPORTED.get(backend)
    if any(given.values()) and not given.get(fmt):
        named = "--onnx" if args.onnx else "--aoti"
        raise ValueError(f"{named} DIR runs with backend {'onnxruntime or tensorrt' if args.onnx else 'native'}, "
                         f"not {backend}")
    folder = Path(given[fmt]) if fmt and given.get(fmt) else None
    if folder is not None and args.checkpoint is None:
        model = _export_model(folder, fmt)
    else:
        model = resolve(args.checkpoint, args.tokenizer)
        if fmt and folder is None:
            folder = ensure_for(backend, model, batch=1, dtype=args.dtype or "fp32", device=args.device,
                                log=lambda m: print(m, file=sys.stderr))
    stepper = make_stepper(backend, model, onnx_dir=folder, aoti_dir=folder, device=args.device, seed=args.seed,
                           guidance=args.guidance, dtype=args.dtype)
    print(f"ochre play: {model.origin}, backend {backend} ({stepper.dtype})", file=sys.stderr)
    return model, stepper


def run(args) -> int:
    from ochre.models.lookup import ModelError

    if args.headless and not args.actions:
        print("ochre play: --headless needs --actions FILE (one step per line: yaw pitch move_x move_z)",
              file=sys.stderr)
        return 2
    try:
        actions = read_action_file(args.actions) if args.actions else None
        model, stepper = _model_and_stepper(args)
    except (ModelError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"ochre play: {e}", file=sys.stderr)
        return 2
    contexts = model.context_frames()
    fps = args.fps if args.fps is not None else model.fps
    if args.headless:
        out = headless(stepper, contexts, actions, fps=model.fps, record=args.record, scale=args.scale,
                       context=args.context)
        out.pop("frames")
        print(f"{out['steps']} steps: {out['fps']:.1f} fps, step p50 {out['step_ms_p50']:.2f} ms, "
              f"p99 {out['step_ms_p99']:.2f} ms" + (f"; wrote {args.record}" if args.record else ""))
        if args.stats:
            from ochre.io import write_json_atomic

            write_json_atomic(Path(args.stats), {**out, "backend": stepper.backend, "dtype": stepper.dtype,
                                                 "model": model.label, "world_hash": _world_hash(model),
                                                 "actions": str(args.actions), "video": args.record})
        return 0
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform == "linux" \
            and os.environ.get("SDL_VIDEODRIVER") is None:
        print("ochre play: no display (DISPLAY is unset); use --headless --actions FILE, or run under Xvfb",
              file=sys.stderr)
        return 2
    try:
        app = PlayApp(stepper, contexts, fps=fps, scale=args.scale, seed=args.seed)
    except ImportError:
        print("ochre play: the window needs pygame: pip install 'ochre[play]'", file=sys.stderr)
        return 2
    stats = app.run(max_steps=args.steps)
    if args.screenshot:
        from ochre.images import save_png

        save_png(args.screenshot, app.window_image())
    app.close()
    print(f"{stats['steps']} steps: {stats['fps']:.1f} fps, step p50 {stats['step_ms_p50']:.2f} ms")
    return 0
