"""DIR/report.md of `ochre demo`: what the run measured, for people — the DESIGN §6 metrics against
the repeat-frame predictor (and a comparison recipe when the demo trained one), the PSNR plot, the
dream videos, the speed table of `ochre bench`, and how long each stage took. Everything in it
comes from DIR/report.json and the files beside it; links are relative, so the folder can move.
"""

from __future__ import annotations

import json
from pathlib import Path

# (metric, how to read it), in the order of DESIGN §6.
WORLD_METRICS = [
    ("psnr@1", "dB, dream vs real one step ahead"),
    ("psnr@8", "dB, eight steps ahead"),
    ("psnr@32", "dB, 32 steps ahead"),
    ("delta_psnr@16", "dB won by the real actions over another trajectory's; ≈ 0 ignores the input"),
    ("yaw_response", "commanded yaw vs image shift (Pearson)"),
    ("code_usage@256", "codes in 256-step dreams / in real frames; collapse → 0"),
    ("grad_ratio@256", "image detail of steps 129–256 / real; blur < 1, noise > 1"),
]
TOKENIZER_METRICS = [("recon_psnr", "dB, held-out reconstructions"), ("codebook_usage", "share of the codes used"),
                     ("codebook_perplexity", "effective number of codes")]


def _num(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def compared_recipes(metrics: dict) -> list[str]:
    """Names of the comparison models in an eval's metrics ("seed-v3" for "seed-v3/psnr@8")."""
    return sorted({k.split("/")[0] for k in metrics if k.endswith("/psnr@8")} - {"repeat_frame", "real"})


def metrics_table(metrics: dict) -> str:
    others = compared_recipes(metrics)
    lines = ["| metric | ochre | " + " | ".join(others + ["repeat frame"]) + " | what it says |",
             "|---|---|" + "---|" * (len(others) + 1) + "---|"]
    for name, what in WORLD_METRICS:
        if name == "yaw_response" and "real/yaw_response" in metrics:
            what += f"; real frames: {_num(metrics['real/yaw_response'])}"
        cells = [_num(metrics.get(name))] + [_num(metrics.get(f"{o}/{name}")) for o in others]
        lines.append(f"| {name} | " + " | ".join(cells + [_num(metrics.get(f"repeat_frame/{name}"))]) + f" | {what} |")
    return "\n".join(lines)


def _speed(bench: dict) -> str:
    from ochre.runtime.bench import table

    load = " → ".join(f"{bench[k][0]:.2f}" for k in ("loadavg_before", "loadavg_after") if k in bench)
    return (f"{table(bench)}\n\n`ochre bench` on {bench['device']}, {bench['threads']} threads for every backend, "
            f"{bench.get('runs', '?')} timed steps per row after {bench.get('warmup', '?')} warm-up steps, the "
            f"backends of a batch taking turns in {bench.get('rounds', 1)} rounds; 1-minute load average {load} "
            "(on a shared machine the tails show it). fps is each player's frame rate (one step = one frame "
            "for every player); frames/s = batch × fps; `vs torch` divides by eager torch at the same batch. "
            "`ochre bench` with no arguments also times `compiled` (torch.compile), which the demo leaves out "
            "for its compile time.")


def render(out: Path, report: dict, command: str) -> str:
    m, bench, timings = report["metrics"], report["bench"], report["timings_s"]
    source = {"luanti": " The recordings are footage of the real game Luanti (`ochre record luanti`)."}
    parts = [f"# ochre demo report\n\nMade by `{command}` on {bench.get('device', 'this machine')} "
             f"(git {bench.get('git_sha', '?')}, {bench.get('date', '')}).{source.get(report.get('world'), '')}",
             "## World model\n\nDESIGN §6 on held-out trajectories: each of "
             f"{m.get('rollouts', '?')} rollouts starts from one real frame and runs on the recorded actions, "
             f"sampling at temperature {m.get('temperature')} top-{m.get('top_k')} with the copy prior's "
             f"proposals boosted by {m.get('copy_boost')} (copies) and {m.get('fill_boost')} (fills), "
             f"{m.get('walk_boost')} of that while walking; the world model trained "
             f"{m.get('train_steps')} steps ({_num(m.get('train_frames_per_s'))} predicted frames/s)."
             + (" The comparison recipe trained on the same tokens, seed and budget." if compared_recipes(m) else ""),
             metrics_table(m),
             *(f"Not run: {what} ({why})." for what, why in report.get("skipped", {}).items()),
             "![PSNR against rollout step](eval/psnr.png)\n\nThe dreams beside the real frames, the actions drawn "
             "below: [eval/dream.mp4](eval/dream.mp4).",
             "## Tokenizer\n\n| metric | value | what it says |\n|---|---|---|\n"
             + "\n".join(f"| {k} | {_num(m.get(k))} | {w} |" for k, w in TOKENIZER_METRICS)
             + "\n\nOriginals over reconstructions: [tokenizer/recon.png](tokenizer/recon.png)."]
    play = out / "play" / "stats.json"
    if play.is_file():
        s = json.loads(play.read_text())
        parts.append(f"## Live play\n\nHeadless play of [play/actions.txt](play/actions.txt) with the "
                     f"`{s['backend']}` backend on the batch-1 export: {s['steps']} steps, {s['fps']:.1f} fps, step "
                     f"p50 {s['step_ms_p50']:.2f} ms, p99 {s['step_ms_p99']:.2f} ms: [play/dream.mp4](play/dream.mp4).")
    parts.append(f"## Speed\n\n{_speed(bench)}\n\n![fps per backend](bench/live.png)")
    rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items())
    parts.append("## Stage timings (this run)\n\n| stage | seconds |\n|---|---|\n" + rows
                 + "\n\nA rerun skips the stages whose output is complete, so they show as a few seconds or 0.")
    return "\n\n".join(parts) + "\n"


def write_report(out, report: dict, command: str) -> Path:
    from ochre.io import write_bytes_atomic

    path = Path(out) / "report.md"
    write_bytes_atomic(path, render(Path(out), report, command).encode())
    return path
