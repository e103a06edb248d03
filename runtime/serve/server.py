"""`ochre serve`'s server: the play page, /healthz, and a WebSocket per player, every connected player
stepped in one batch per tick (docs/serve.md is the protocol).

Built on aiohttp: HTTP and WebSocket server in one well-kept asyncio package (no ASGI server beside
it), with per-connection control of what a server for untrusted clients needs: the largest message
read, the write buffer limit that makes a client who never reads apply back-pressure, heartbeats,
close codes. It is the `[serve]` extra and is imported only by this command.

One task runs the ticks (Game.run): at each tick, every player's input since the last tick is
encoded into one action row, the stepper restarts the players who asked to (stepper.reset_player:
the others' dreams go on) and steps the whole batch once, and each player gets its own row's
frame. The stepper runs in a worker thread (torch and the exported runtimes release the GIL), so
the event loop keeps reading input and writing frames while the batch steps. The batch is the
maximum number of players: one static shape is what every backend compiles or exports for (and a
CUDA graph captures), so players join and leave without a recompile or moving state between
batches; empty rows step the null action, and with nobody connected the server does not step at
all. Frames are encoded in the worker thread too, only for the rows that have a player.
Each player's frames wait in a queue of `send_queue`; a reader that falls behind loses the oldest,
and one that has lost frames for `slow_s` seconds without catching up is closed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ochre.runtime.serve import protocol
from ochre.runtime.serve.frames import available, encode
from ochre.runtime.serve.players import Player, Roster
from ochre.runtime.serve.protocol import Limits, ProtocolError

STATIC = Path(__file__).resolve().parent / "static"
INTERNAL_ERROR = 1011
SEND_BUFFER = 1 << 16          # bytes: 5 raw frames, 25 JPEG ones; room for 250 ms of raw frames in flight


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    max_players: int = 8                  # the stepper's batch
    fps: float = 20.0                     # ticks per second
    limits: Limits = Limits()
    send_queue: int = 2                   # frames waiting per player (a tick's frame and the one before)
    slow_s: float = 2.0                   # losing frames this long: closed as not reading
    stats_every_s: float = 2.0
    heartbeat_s: float = 10.0             # WebSocket pings; a peer that stops answering is closed
    seed: int = 0                         # which context frames new players start from

    def __post_init__(self):
        if self.max_players < 1 or not self.fps > 0 or self.send_queue < 1 or self.slow_s <= 0:
            raise ValueError(f"serve settings out of range: max_players {self.max_players}, fps {self.fps}, "
                             f"send_queue {self.send_queue}, slow_s {self.slow_s}")


class Connection:
    """A player's WebSocket, its outgoing queue and the task that drains it."""

    def __init__(self, ws, request, player: Player, depth: int):
        self.ws, self.request, self.player = ws, request, player
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=depth)
        self.closing = False
        self.closer: asyncio.Task | None = None         # the close under way, once one is
        self.dropping_since: float | None = None
        self.sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            while True:
                for part in await self.queue.get():
                    await (self.ws.send_str(part) if isinstance(part, str) else self.ws.send_bytes(part))
        except (ConnectionError, RuntimeError):
            pass                                        # the socket went away; the handler cleans up

    def offer(self, item: list, now: float) -> bool:
        """Queue a tick's messages, dropping the oldest when full; False once it has dropped for too long."""
        if self.queue.full():
            self.queue.get_nowait()
            self.player.dropped += 1
            self.dropping_since = self.dropping_since if self.dropping_since is not None else now
        else:
            self.dropping_since = None
        self.queue.put_nowait(item)
        return self.dropping_since is None


class Game:
    """The tick loop and the players; build_app() puts it behind HTTP."""

    def __init__(self, stepper, contexts: np.ndarray, config: ServeConfig = ServeConfig(), log=print):
        if stepper.batch != config.max_players:
            raise ValueError(f"the stepper steps {stepper.batch} players, the server is set for {config.max_players}")
        self.stepper, self.contexts, self.config, self.log = stepper, contexts, config, log
        self.roster = Roster(config.max_players)
        self.connections: dict[int, Connection] = {}            # player id -> connection
        self.closed: list[tuple[int, str]] = []                 # (close code, reason) of every player closed
        self.formats = available()
        self.ticks = 0
        self.step_s: collections.deque = collections.deque(maxlen=400)
        self.tick_at: collections.deque = collections.deque(maxlen=int(4 * config.fps) + 1)
        self._rng = random.Random(config.seed)
        self._wake = asyncio.Event()
        self._next_stats = 0.0                                   # loop time of the next stats message
        import torch

        # OpenMP's thread count is per thread: the worker takes the one the stepper was made with.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ochre-step", initializer=torch.set_num_threads,
                                        initargs=(torch.get_num_threads(),))

    # --- the tick ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick at config.fps while anyone is connected; sleep while nobody is."""
        loop = asyncio.get_running_loop()
        period, due = 1.0 / self.config.fps, loop.time()
        self._next_stats = due
        while True:
            if not self.roster:
                self._wake.clear()
                await self._wake.wait()
                due = loop.time()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            await self._tick(loop)
            due = max(due + period, loop.time() - period)      # behind: catch up one tick, never a burst

    async def _tick(self, loop) -> None:
        now = loop.time()
        self._drop_idle(now)
        actions, players, rows, contexts = self.roster.tick(now, lambda: self._rng.randrange(len(self.contexts)))
        if not players:
            return
        t0 = time.perf_counter()
        try:
            encoded = await loop.run_in_executor(self._pool, self._work, actions, rows, contexts,
                                                 [(p.slot, p.format) for p in players])
        except Exception as e:                          # a backend failure: say it, end those sessions, go on
            self.log(f"tick {self.ticks} failed: {type(e).__name__}: {e}")
            for conn in list(self.connections.values()):
                self.close(conn, INTERNAL_ERROR, "server error: the model failed to step; see the server log")
            return
        self.step_s.append(time.perf_counter() - t0)
        self.ticks += 1
        self.tick_at.append(loop.time())
        self._deliver(players, encoded, loop.time())
        if loop.time() >= self._next_stats:
            self._send_stats()
            self._next_stats = loop.time() + self.config.stats_every_s

    def _work(self, actions: np.ndarray, rows: list[int], contexts: list[int], wanted) -> list[bytes]:
        """Worker thread: the tick's resets, one step of the whole batch, the frames players want."""
        if rows:                                        # every restart of the tick in one encode
            self.stepper.reset_player(rows, self.contexts[contexts])
        frames = self.stepper.step(actions)                                  # (B, H, W, 3)
        return [encode(frames[slot], fmt) for slot, fmt in wanted]

    def _deliver(self, players: list[Player], encoded: list[bytes], now: float) -> None:
        for player, data in zip(players, encoded):
            conn = self.connections.get(player.id)
            if conn is None or conn.closing:
                continue                                # left during the step: the frame goes nowhere
            seq = player.take_ack()
            item = [data] if seq is None else [protocol.ack(seq, self.ticks), data]
            player.frames += 1
            if not conn.offer(item, now) and now - conn.dropping_since > self.config.slow_s:
                self.close(conn, protocol.POLICY, "not reading: frames piled up")

    def _drop_idle(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if now - conn.player.last_message > self.config.limits.idle_s and not conn.closing:
                self.close(conn, protocol.NORMAL, f"idle for {self.config.limits.idle_s:.0f} s")

    def stats(self) -> dict:
        ms = np.asarray(self.step_s) * 1e3 if self.step_s else np.zeros(1)
        span = self.tick_at[-1] - self.tick_at[0] if len(self.tick_at) > 1 else 0.0
        return {"type": "stats", "tick": self.ticks, "players": len(self.roster),
                "max_players": self.config.max_players, "fps": (len(self.tick_at) - 1) / span if span else 0.0,
                "step_ms_p50": float(np.median(ms)), "step_ms_p99": float(np.percentile(ms, 99)),
                "backend": self.stepper.backend, "dtype": self.stepper.dtype}

    def _send_stats(self) -> None:
        common = self.stats()
        for conn in self.connections.values():
            if not conn.closing and not conn.queue.full():
                conn.queue.put_nowait([protocol.dumps({**common, "dropped": conn.player.dropped})])

    # --- connections --------------------------------------------------------------------------------
    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Tell the player why, close with `code`; a peer that does not take the close is cut off."""
        if conn.closing:
            return
        conn.closing = True
        self.closed.append((code, reason))
        self.log(f"player {conn.player.id} closed ({code}): {reason}")
        conn.closer = asyncio.ensure_future(_close(conn.ws, conn.request, code, reason, conn.sender))

    async def play(self, request):
        from aiohttp import web

        _check_origin(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            # A fixed kernel send buffer (Linux doubles it) instead of one autotuned up to megabytes: a
            # client who stops reading backs up into the frame queue within a second and is noticed.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        ws = web.WebSocketResponse(heartbeat=self.config.heartbeat_s, max_msg_size=1 << 20, compress=False,
                                   writer_limit=1 << 16, timeout=2.0)
        await ws.prepare(request)
        fmt = request.query.get("format", "raw")
        context = request.query.get("context")
        if fmt not in self.formats:
            await _close(ws, request, protocol.POLICY, f"format must be one of {', '.join(self.formats)}")
            return ws
        if context is not None and not (context.isdigit() and int(context) < len(self.contexts)):
            await _close(ws, request, protocol.POLICY, f"context must be an integer in 0..{len(self.contexts) - 1}")
            return ws
        loop = asyncio.get_running_loop()
        player = self.roster.join(fmt, self.config.limits, loop.time(), None if context is None else int(context))
        if player is None:
            self.closed.append((protocol.TRY_LATER, "full"))
            await _close(ws, request, protocol.TRY_LATER, "full")
            return ws
        conn = None
        try:
            await ws.send_str(protocol.hello(player.id, self.config.fps, fmt, len(self.contexts),
                                             self.config.max_players))
            conn = self.connections[player.id] = Connection(ws, request, player, self.config.send_queue)
            self._wake.set()
            await self._receive(conn, loop)
        except ConnectionError:
            pass                                        # gone before or while it played: its slot frees below
        finally:
            self.roster.leave(player)
            self.connections.pop(player.id, None)
            if conn is not None:
                if conn.closer is not None:
                    await conn.closer                   # the reason reaches the client before the handler ends
                conn.sender.cancel()
        return ws

    async def _receive(self, conn: Connection, loop) -> None:
        from aiohttp import WSMsgType

        async for msg in conn.ws:
            if conn.closing:
                break
            try:
                if msg.type == WSMsgType.TEXT:
                    conn.player.receive(protocol.parse(msg.data, len(self.contexts), self.config.limits), loop.time())
                elif msg.type == WSMsgType.BINARY:
                    raise ProtocolError("binary messages are not read; send JSON text")
                else:
                    break
            except ProtocolError as e:
                self.close(conn, protocol.POLICY, str(e))
                break

    async def healthz(self, request):
        from aiohttp import web

        return web.json_response({"players": len(self.roster), "max_players": self.config.max_players})

    async def shutdown(self) -> None:
        for conn in list(self.connections.values()):
            self.close(conn, 1001, "server shutting down")
        await asyncio.sleep(0.1)
        self._pool.shutdown(wait=True)


async def _close(ws, request, code: int, reason: str, sender=None) -> None:
    try:
        await asyncio.wait_for(_say_and_close(ws, code, reason, sender), timeout=2.0)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        if request.transport is not None:
            request.transport.abort()                  # a peer that reads nothing never takes the close


async def _say_and_close(ws, code: int, reason: str, sender) -> None:
    if sender is not None:
        sender.cancel()
    await ws.send_str(protocol.error(reason))
    await ws.close(code=code, message=reason.encode()[:120])


def _check_origin(request) -> None:
    """A browser says which page opened the socket; only this server's own page may (another site's
    page must not play on its visitors' behalf). Clients that send no Origin (bots) are let in."""
    from aiohttp import web

    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != (request.host or "").lower():
        raise web.HTTPForbidden(text=f"origin {origin} is not this server's page ({request.host})")


def build_app(game: Game):
    """The aiohttp application: GET / (the page), GET /play.js, GET /healthz, WebSocket /play."""
    from aiohttp import web

    async def page(request):
        return web.FileResponse(STATIC / "index.html")

    async def script(request):
        return web.FileResponse(STATIC / "play.js")

    async def start(app):
        app["ticks"] = asyncio.create_task(game.run())

    async def stop(app):
        app["ticks"].cancel()
        await game.shutdown()

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/play.js", script)
    app.router.add_get("/healthz", game.healthz)
    app.router.add_get("/play", game.play)
    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


async def start(game: Game, host: str = "127.0.0.1", port: int = 8000):
    """Serve `game` until the returned runner is cleaned up; returns (runner, port actually bound)."""
    from aiohttp import web

    runner = web.AppRunner(build_app(game), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]


__all__ = ["Game", "ServeConfig", "build_app", "start"]
