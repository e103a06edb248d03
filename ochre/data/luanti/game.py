"""One running Luanti (Minetest) game on its own X display: start it, read its pose log, stop it.

`Game(cfg, workdir)` writes a private home folder (settings, the client-side mod), a world (seeded,
creative, no damage, with the server-side mod), starts Xvfb and the game bound to 127.0.0.1, places
and focuses the window, and hands out the lines the two mods log. Everything it starts ends with
it (ochre.data.luanti.processes). Legend: H W recorded frame size, M marker strip height.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ochre.data.luanti.processes import Children
from ochre.data.luanti.x11 import Display
from ochre.io import write_bytes_atomic

MODS = Path(__file__).parent / "mods"
PLAYER = "ochre"
APT_PACKAGES = "minetest xvfb libxtst6"
GAME_DIRS = ("/usr/games", "/usr/local/games")   # Debian installs the game here, often not on PATH
MARGIN = 512          # screen pixels around the window, so a relative mouse move never meets an edge
FOV_DEG = 72.0        # the game's default field of view setting


class GameError(RuntimeError):
    """The game or its X server could not start or stopped; str(e) says why and what to do."""


@dataclass(frozen=True)
class GameConfig:
    width: int = 64                 # recorded frame size W x H
    height: int = 64
    hud: bool = False               # hotbar, crosshair and the wielded hand
    map_seed: int = 0
    marker_bits: int = 8            # the frame number is shown modulo 2**bits
    time_of_day: float = 0.5        # 0.5 is noon; the clock stands still
    viewing_range: int = 100        # nodes; the default 190 costs map generation for detail 64 px cannot show
    fps: int = 20                   # game steps per second, one recorded frame each

    @property
    def strip(self) -> int:
        """M: rows of the marker strip above the picture (and the same below, so the view stays centred)."""
        return max(4, self.height // 16)

    @property
    def window(self) -> tuple[int, int]:
        return self.width, self.height + 2 * self.strip

    def mouse_sensitivity(self) -> float:
        """The setting that turns the camera 0.15 degrees (one VPT mouse count) per pixel of motion.

        The game scales motion by tan(fov_y / 2) * 1.3763818698, with fov_y widened on narrow
        windows by clamp(sqrt(1.6 / aspect), 1, 1.4) (its camera and input code, 5.6).
        """
        w, h = self.window
        fov_y = math.radians(FOV_DEG) * min(max(math.sqrt(1.6 / (w / h)), 1.0), 1.4)
        return 0.15 / (math.tan(fov_y / 2) * 1.3763818698)


def find_binaries() -> tuple[str, str]:
    """(minetest, Xvfb) paths; GameError naming the Debian packages when either is missing."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(GAME_DIRS)
    game = shutil.which("minetest", path=path) or shutil.which("luanti", path=path)
    xvfb = shutil.which("Xvfb", path=path)
    missing = [name for name, found in (("minetest", game), ("Xvfb", xvfb)) if found is None]
    if missing:
        raise GameError(f"{' and '.join(missing)} not found (looked on PATH and in {', '.join(GAME_DIRS)}): "
                        f"install them with `apt-get install {APT_PACKAGES}`")
    return game, xvfb


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(cfg: GameConfig, port: int) -> dict[str, object]:
    """The game's settings file: a small window, no sound, a local server, a still clock, plain input."""
    w, h = cfg.window
    return {
        "screen_w": w, "screen_h": h, "fullscreen": "false", "autosave_screensize": "false",
        "enable_sound": "false", "bind_address": "127.0.0.1", "port": port, "server_announce": "false",
        "enable_client_modding": "true", "csm_restriction_flags": 0,
        "pause_on_lost_focus": "false", "fps_max": cfg.fps, "fps_max_unfocused": cfg.fps,
        "mouse_sensitivity": repr(cfg.mouse_sensitivity()), "invert_mouse": "false", "camera_smoothing": 0,
        "cinematic": "false", "view_bobbing_amount": 0, "fall_bobbing_amount": 0, "fov": FOV_DEG,
        "autojump": "false", "continuous_forward": "false", "doubletap_jump": "false", "free_move": "false",
        "fast_move": "false", "noclip": "false", "enable_minimap": "false", "show_debug": "false",
        # The smallest HUD the game draws: a hotbar slot is 48 px x density x hud_scaling, each at least
        # 0.5 (48 dpi / 96), so 12 px; the hotbar still covers the lower fifth of a 64-line frame.
        "node_highlighting": "box" if cfg.hud else "none", "hud_scaling": 0.5, "screen_dpi": 48,
        "creative_mode": "true", "enable_damage": "false", "time_speed": 0, "world_start_time": 12000,
        "fixed_map_seed": cfg.map_seed, "viewing_range": cfg.viewing_range, "dedicated_server_step": 0.05,
        # Clouds drift, and the Minetest Game's weather changes them and the sky's tint, even with the
        # clock stopped; without both a frame is a function of the pose, so the game put back at a
        # recorded pose draws the recorded frame again (ochre.data.luanti.replay).
        "enable_clouds": "false", "enable_weather": "false",
        "ochre_hud": "true" if cfg.hud else "false", "ochre_time_of_day": cfg.time_of_day,
        "ochre_marker_bits": cfg.marker_bits, "ochre_marker_strip_percent": 100.0 * cfg.strip / h,
    }


def fingerprint(cfg: GameConfig) -> str:
    """Short sha256 of everything that decides what the game draws and does: its settings (but the
    port) and the two mods' files. Recordings made with another fingerprint are not mixed."""
    h = hashlib.sha256(json.dumps({k: v for k, v in settings(cfg, 0).items() if k != "port"}, sort_keys=True).encode())
    for f in sorted(MODS.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(MODS).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def write_home(cfg: GameConfig, home: Path, world: Path, port: int) -> Path:
    """Write the settings file, the client-side mod and a new world; returns the settings file."""
    user = home / ".minetest"
    shutil.copytree(MODS / "ochre_pose", user / "clientmods" / "ochre_pose")
    (user / "clientmods" / "mods.conf").write_text("load_mod_ochre_pose = true\n")
    shutil.copytree(MODS / "ochre_episode", world / "worldmods" / "ochre_episode")
    (world / "world.mt").write_text(
        "gameid = minetest_game\nbackend = sqlite3\nplayer_backend = sqlite3\nauth_backend = sqlite3\n"
        "mod_storage_backend = sqlite3\ncreative_mode = true\nenable_damage = false\n")
    conf = home / "minetest.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in settings(cfg, port).items()))
    return conf


_LOG = re.compile(r"\b(ochre_\w+) ?(.*)$")


class Game:
    """A game on its own display: `with Game(cfg, folder) as game` (or start() and close());
    next_line() hands out what the two mods log, as (kind, fields)."""

    def __init__(self, cfg: GameConfig, workdir: Path, *, start_timeout_s: float = 120.0):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.start_timeout_s = start_timeout_s
        self.children = Children()
        self.display: Display | None = None
        self.window = 0
        self._queue: queue.Queue = queue.Queue()
        self._tail: deque[str] = deque(maxlen=30)      # the game's other log lines, for error messages

    # ---- start and stop ------------------------------------------------------------------

    def __enter__(self) -> Game:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        game, xvfb = find_binaries()
        home, world = self.workdir / "home", self.workdir / "world"
        home.mkdir(parents=True)
        world.mkdir(parents=True)
        port = _free_udp_port()
        conf = write_home(self.cfg, home, world, port)
        name = self._start_x(xvfb)
        env = {**os.environ, "HOME": str(home), "DISPLAY": name, "LP_NUM_THREADS": "1"}
        # The settings' port is ignored by a local game; --port is not.
        self._game = self.children.start(
            [game, "--go", "--world", str(world), "--name", PLAYER, "--config", str(conf), "--port", str(port),
             "--logfile", ""],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        threading.Thread(target=self._read_log, args=(self._game.stderr,), daemon=True).start()
        self.display = Display(name)
        self.window = self._find_window()
        while self.next_line(self.start_timeout_s)[0] != "ochre_pose":     # the player is in the world
            pass
        # Keys and mouse reach only the focused window, and no window manager focuses it.
        if not self.display.place(self.window, MARGIN, MARGIN):
            raise GameError("the game's window did not take the keyboard focus")
        w, h = self.cfg.window
        got = self.display.geometry(self.window)[2:]
        if got != (w, h):
            raise GameError(f"the game opened a {got[0]}x{got[1]} window, not {w}x{h}")

    def _start_x(self, xvfb: str) -> str:
        """Start Xvfb on a free display number (it picks one and reports it); returns ":N"."""
        w, h = self.cfg.window
        read, write = os.pipe()
        try:
            proc = self.children.start(
                [xvfb, "-displayfd", str(write), "-screen", "0", f"{w + 2 * MARGIN}x{h + 2 * MARGIN}x24",
                 "-nolisten", "tcp"],
                pass_fds=(write,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(write)
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number.isdigit():
            code = proc.poll()
            raise GameError(f"Xvfb did not start (exit code {code}); run `{xvfb} :99` by hand to see why")
        return f":{number}"

    def _find_window(self) -> int:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            for window, title in self.display.windows():
                if title.startswith(("Minetest", "Luanti")):
                    return window
            time.sleep(0.1)
        raise GameError(f"the game opened no window within {self.start_timeout_s:.0f} s{self._last_words()}")

    def close(self) -> None:
        if self.display is not None:
            self.display.close()
            self.display = None
        self.children.close()

    # ---- the log -------------------------------------------------------------------------

    def _read_log(self, stream) -> None:
        for line in stream:
            m = _LOG.search(line)
            if m:
                self._queue.put((m.group(1), m.group(2).split()))
            else:
                self._tail.append(line.rstrip())
        self._queue.put(("exit", []))

    def next_line(self, timeout_s: float) -> tuple[str, list[str]]:
        """The next line the mods logged: (kind, fields), e.g. ("ochre_pose", [...])."""
        try:
            kind, fields = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            self.check_alive()
            raise GameError(f"the game logged nothing for {timeout_s:.0f} s (stalled){self._last_words()}") from None
        if kind == "exit":
            self._game.wait()
            raise GameError(f"the game exited (code {self._game.returncode}){self._last_words()}")
        return kind, fields

    def drain(self) -> list[tuple[str, list[str]]]:
        """Every line logged so far and not yet read."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def write_command(self, line: str) -> None:
        """Hand the server-side mod a command (it polls the file every server step)."""
        write_bytes_atomic(self.workdir / "world" / "ochre_command.txt", (line + "\n").encode())

    def check_alive(self) -> None:
        if self._game.poll() is not None:
            raise GameError(f"the game exited (code {self._game.returncode}){self._last_words()}")

    def _last_words(self) -> str:
        errors = [line for line in self._tail if "ERROR" in line] or list(self._tail)[-5:]
        return (": " + " | ".join(errors[-5:])) if errors else ""
