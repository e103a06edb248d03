"""Load test of `ochre serve` on this machine: simulated players over real WebSockets on 127.0.0.1.

    python -m ochre.bench.serve_load [--players 16] [--seconds 60] [--fps 20] [--backend native] [--dtype bf16]
    python -m ochre.bench.serve_load --players 0 --sweep torch:4,8 native/bf16:16,24 ...   # players per machine

It starts `ochre serve` as its own process (so its memory is its own), connects the players, and
stops by itself after --seconds (plus the server's start: an AOTInductor compile the first time).
Each player is a bot that sends an input message (keys and mouse, with a `seq`) at the server's
tick rate and reads every frame; it measures its frame rate over the run after --warmup seconds,
and the input-to-frame latency of every input it sent (from sending it to receiving the first frame
that answers it: the frame after an `ack` answers every input up to the acknowledged one, see
docs/serve.md). The server's resident memory is
read from /proc at the end of the warm-up and at the end.
Bars: every player >= 19 frames/s at 20, p99 latency <= 100 ms, no player dropped, memory within
10 %. A --sweep runs --sweep-seconds per point, each backend's player counts in ascending order
until one misses, and reports per backend the most players that met every bar.
Writes bench/results/serve_load_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

KEY_CYCLE = (["w"], ["w", "d"], [], ["a"], ["s"], ["w"])      # a walk that turns, stops, strafes
FPS_BAR, P99_BAR_MS, RSS_BAR = 19.0, 100.0, 0.10


async def bot(url: str, seconds: float, fps: float, warmup: float = 0.0, seed: int = 0, fmt: str = "raw",
              stop: asyncio.Event | None = None) -> dict:
    """One simulated player for `seconds`: inputs at `fps`, every frame read. Returns its numbers
    (`arrivals`: time.perf_counter() of every frame); `closed` holds the server's close code and
    `reason` its error message if the server ended the session. `stop` ends it early when set."""
    import aiohttp

    rng = np.random.default_rng(seed)
    sent: dict[int, float] = {}
    latencies, arrivals = [], []
    out = {"closed": None, "reason": None, "hello": None, "stats": None}
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/play?format={fmt}") as ws:
        t0 = time.perf_counter()

        async def send():
            seq, step = 0, 0
            while time.perf_counter() - t0 < seconds and not ws.closed and not (stop and stop.is_set()):
                seq += 1
                keys = KEY_CYCLE[(step // 20) % len(KEY_CYCLE)]
                sent[seq] = time.perf_counter()
                await ws.send_str(json.dumps({"type": "input", "keys": keys,
                                              "mouse": [float(rng.normal(0, 8)), 0.0], "seq": seq}))
                step += 1
                await asyncio.sleep(max(0.0, t0 + step / fps - time.perf_counter()))

        async def receive():
            acked = None
            async for msg in ws:
                now = time.perf_counter()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    arrivals.append(now)
                    if acked is not None:                   # this frame answers every input up to `acked`
                        for seq in [seq for seq in sent if seq <= acked]:
                            latencies.append(now - sent.pop(seq))
                    acked = None
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    m = json.loads(msg.data)
                    if m["type"] == "ack":
                        acked = m["seq"]
                    elif m["type"] == "hello":
                        out["hello"] = m
                    elif m["type"] == "stats":
                        out["stats"] = m                # the server's own tick rate and step time, last seen
                    elif m["type"] == "error":
                        out["reason"] = m["reason"]

        receiver = asyncio.create_task(receive())
        await send()
        if not ws.closed:
            await ws.close()
        else:
            out["closed"] = ws.close_code
        await receiver
    span = seconds - warmup
    counted = sum(t >= t0 + warmup for t in arrivals)
    return {**out, "frames": len(arrivals), "fps": counted / span if span > 0 else 0.0,
            "latencies_ms": [x * 1e3 for x in latencies], "arrivals": arrivals}


def summary(bots: list[dict], seconds: float) -> dict:
    lat = np.concatenate([np.asarray(b["latencies_ms"]) for b in bots]) if bots else np.zeros(0)
    fps = [b["fps"] for b in bots]
    return {"players": len(bots), "fps_min": min(fps), "fps_median": float(np.median(fps)),
            "latency_ms_p50": float(np.median(lat)) if len(lat) else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None,
            "latency_samples": len(lat), "dropped": sum(b["closed"] is not None for b in bots),
            "close_reasons": sorted({b["reason"] for b in bots if b["reason"]}), "seconds": seconds,
            "server_stats": next((b["stats"] for b in bots if b["stats"]), None)}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def start_server(backend: str, dtype: str | None, players: int, fps: float, threads: int | None,
                 checkpoint: str | None = None, timeout: float = 900) -> tuple[subprocess.Popen, str]:
    """`ochre serve` on a free port; returns the process and its base URL once it listens."""
    cmd = [sys.executable, "-m", "ochre", "serve", "--backend", backend, "--max-players", str(players),
           "--fps", str(fps), "--port", "0"]
    cmd += ["--dtype", dtype] if dtype else []
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--checkpoint", checkpoint] if checkpoint else []
    # SIGINT as a terminal sends it, even when this bench runs in the background (where a shell starts
    # commands with SIGINT ignored): stop_server ends the server with it.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"open (http://\S+?)/ ", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("ochre serve did not start:\n" + "".join(lines[-20:]))


def stop_server(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


async def _players(url: str, n: int, seconds: float, fps: float, warmup: float, pid: int) -> tuple[list, dict]:
    tasks = [asyncio.create_task(bot(url, seconds, fps, warmup, seed=i)) for i in range(n)]
    await asyncio.sleep(warmup)
    rss_start = rss_kib(pid)
    bots = await asyncio.gather(*tasks)
    return bots, {"rss_kib_start": rss_start, "rss_kib_end": rss_kib(pid)}


def run_point(backend: str, dtype: str | None, players: int, seconds: float, fps: float, warmup: float,
              threads: int | None = None, checkpoint: str | None = None) -> dict:
    """One server, `players` bots for `seconds`: the summary, the memory, and whether every bar was met.
    dtype None: what `ochre serve` chooses on this machine (runtime.serve.cli.default_dtype), named."""
    from ochre.runtime.serve.cli import default_dtype

    dtype = dtype or default_dtype(backend, "cpu")
    proc, url = start_server(backend, dtype, players, fps, threads, checkpoint)
    try:
        bots, mem = asyncio.run(_players(url, players, seconds, fps, warmup, proc.pid))
    finally:
        log = stop_server(proc)
    for b in bots:
        del b["arrivals"]
    row = {"backend": backend, "dtype": dtype, "fps_target": fps, **summary(bots, seconds), **mem,
           "server_log_tail": log.strip().splitlines()[-3:]}
    row["rss_change"] = row["rss_kib_end"] / row["rss_kib_start"] - 1
    row["bars_met"] = bool(row["fps_min"] >= FPS_BAR * fps / 20 and row["latency_ms_p99"] is not None
                           and row["latency_ms_p99"] <= P99_BAR_MS and row["dropped"] == 0
                           and abs(row["rss_change"]) <= RSS_BAR)
    return row


def _say(row: dict) -> None:
    print(f"{row['backend']} {row['dtype']} x{row['players']}: fps min {row['fps_min']:.2f} median "
          f"{row['fps_median']:.2f}, latency p50 {row['latency_ms_p50']:.1f} ms p99 {row['latency_ms_p99']:.1f} ms, "
          f"dropped {row['dropped']}, RSS {row['rss_kib_start'] / 1024:.0f} -> {row['rss_kib_end'] / 1024:.0f} MiB "
          f"({row['rss_change']:+.1%}): {'bars met' if row['bars_met'] else 'MISSED'}", flush=True)


def main(argv=None) -> int:
    from ochre.bench.common import header, result_path
    from ochre.io import write_json_atomic
    from ochre.runtime.bench import cpu_has_bf16

    p = argparse.ArgumentParser(prog="python -m ochre.bench.serve_load", description=__doc__.splitlines()[0])
    p.add_argument("--players", type=int, default=16, help="players of the main run (0: only the --sweep)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each run (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the frame rate (default 5)")
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--backend", default="native")
    p.add_argument("--dtype", default=None, help="fp32 or bf16 (default: what `ochre serve` runs here: bf16 with "
                   "compiled or native on a CPU with bf16 units, else fp32)")
    p.add_argument("--threads", type=int, default=None, help="the server's intra-op threads")
    p.add_argument("--checkpoint", default=None, help="world-model run to serve (default: what `ochre serve` takes)")
    p.add_argument("--sweep", nargs="+", default=None, metavar="BACKEND[/DTYPE]:N,N,…",
                   help="players per machine: for each backend, runs at each player count (ascending) until one "
                   "misses a bar")
    p.add_argument("--sweep-seconds", type=float, default=20.0, help="length of each sweep run (default 20)")
    p.add_argument("--note", default=None, help="a line kept in the JSON (e.g. what else the machine was running)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    result = {"benchmark": "serve_load", **header(), "bars": {"fps_min": FPS_BAR, "latency_ms_p99": P99_BAR_MS,
              "rss_change": RSS_BAR, "dropped": 0}, "what": __doc__.split("\n\n")[2].strip(),
              "cpu_bf16": cpu_has_bf16()}
    if args.players > 0:
        row = run_point(args.backend, args.dtype, args.players, args.seconds, args.fps, args.warmup, args.threads,
                        args.checkpoint)
        _say(row)
        result["run"] = row
    if args.sweep:
        result["sweep_seconds"] = args.sweep_seconds
        result["capacity"] = []
        for spec in args.sweep:
            name, counts = spec.split(":")
            backend, _, dtype = name.partition("/")
            best, rows = 0, []
            for n in sorted(int(c) for c in counts.split(",")):
                row = run_point(backend, dtype or None, n, args.sweep_seconds, args.fps, args.warmup, args.threads,
                                args.checkpoint)
                _say(row)
                rows.append(row)
                if not row["bars_met"]:
                    break
                best = n
            result["capacity"].append({"backend": backend, "dtype": rows[0]["dtype"], "players_at_bars": best,
                                       "runs": rows})
    result.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()))
    if args.note:
        result["note"] = args.note
    out = args.out or result_path("serve_load")
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
