"""`ochre serve`: the model, a stepper at the server's batch, and the server until Ctrl-C."""

from __future__ import annotations

import asyncio
import ipaddress
import sys

import numpy as np

LOCAL = ("localhost",)


def _say(msg: str) -> None:
    print(f"ochre serve: {msg}", file=sys.stderr, flush=True)


def is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOCAL


def default_dtype(backend: str, device: str) -> str:
    """The precision `ochre serve` runs without --dtype: bf16 on a CPU that computes it natively
    (AVX512-BF16 or AMX) for the backends with a bf16 CPU path, else fp32. Where it is native, the
    steps of many players fit the tick only in bf16 (native, 16 players, 2 cores with AVX512-BF16,
    bench/results/serve_load_cpu_2026-12-04_bf16units.json: 20 frames/s each in bf16, 15 in fp32),
    and its dreams measure as fp32's (README, Play in a browser); elsewhere bf16 is emulated and slower."""
    from ochre.runtime.bench import BF16_BACKENDS, cpu_has_bf16

    cpu = not device.startswith("cuda")
    return "bf16" if cpu and backend in BF16_BACKENDS and cpu_has_bf16() else "fp32"


def make_game(args):
    """The model (resolved as `ochre play` does), its stepper at batch --max-players, the Game."""
    from ochre.models.lookup import resolve
    from ochre.runtime.exports import ensure_for
    from ochre.runtime.serve.protocol import Limits
    from ochre.runtime.serve.server import Game, ServeConfig
    from ochre.runtime.stepper import make_stepper

    model = resolve(args.checkpoint, args.tokenizer)
    config = ServeConfig(max_players=args.max_players, fps=args.fps, limits=Limits(idle_s=args.idle_timeout),
                         seed=args.seed)
    folder = ensure_for(args.backend, model, batch=config.max_players, dtype=args.dtype or "fp32", log=_say)
    stepper = make_stepper(args.backend, model, onnx_dir=folder, aoti_dir=folder, batch=config.max_players,
                           device=args.device, threads=args.threads, seed=args.seed, dtype=args.dtype)
    contexts = model.context_frames()
    # Warm up before listening: the compiled backend compiles on its first step (a minute on 2 cores),
    # which must not be the first players' first tick.
    stepper.reset(contexts[np.arange(config.max_players) % len(contexts)])
    for _ in range(3):
        stepper.step(np.zeros((config.max_players, 4), np.float32))
    _say(f"{model.origin}, backend {args.backend} ({stepper.dtype}), {config.max_players} players per step, "
         f"{config.fps:g} ticks/s")
    return Game(stepper, contexts, config, log=_say)


async def _serve(game, host: str, port: int) -> None:
    from ochre.runtime.serve.server import start

    runner, bound = await start(game, host, port)
    shown = f"[{host}]" if ":" in host else host
    _say(f"open http://{shown}:{bound}/ (WebSocket /play, health /healthz); Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(args) -> int:
    from ochre.models.lookup import ModelError
    from ochre.runtime.bench import physical_cores

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        _say("needs aiohttp (and Pillow for the page's JPEG frames): pip install 'ochre[serve]'")
        return 2
    if args.max_players is None:
        args.max_players = 64 if args.device.startswith("cuda") else 8
    if args.backend is None:
        args.backend = "compiled" if args.device.startswith("cuda") else "native"
    if args.dtype is None:
        args.dtype = default_dtype(args.backend, args.device)
    if args.threads is None and not args.device.startswith("cuda"):
        # One core is left to the connections: an OpenMP team that shares every core with the event loop
        # waits at each barrier for a descheduled member (native bf16, 16 players, 2 cores under load:
        # a step of 206 ms with 1 thread, 1,083 ms with 2).
        args.threads = max(1, physical_cores() - 1)
    if not is_local(args.host):
        _say(f"WARNING: listening on {args.host}: anyone who can reach this machine can play, with no login, "
             "and spend its CPU; bind 127.0.0.1 (the default) unless that is what you want")
    try:
        game = make_game(args)
    except (ModelError, ValueError, FileNotFoundError, RuntimeError) as e:
        _say(str(e))
        return 2
    try:
        asyncio.run(_serve(game, args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        _say(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
        return 2
    return 0
