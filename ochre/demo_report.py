"""DIR/report.md of `ochre demo`: what the run measured, for people — the docs/metrics.md metrics with
their intervals against the repeat-frame predictor (and a comparison recipe when the demo trained
one), on the test split and on a world never trained on, the tours, action accuracy, realism, the
calibration of every metric, the PSNR plot, the dream videos, the speed table of `ochre bench`, and
how long each stage took. Everything in it
comes from DIR/report.json and the files beside it; links are relative, so the folder can move.
"""

from __future__ import annotations

import json
from pathlib import Path

# (metric, how to read it), in the order of docs/metrics.md.
WORLD_METRICS = [
    ("psnr@1", "dB, dream vs real one step ahead"),
    ("psnr@8", "dB, eight steps ahead"),
    ("psnr@32", "dB, 32 steps ahead"),
    ("delta_psnr@16", "dB won by the real actions over another rollout's; ≈ 0 ignores the input"),
    ("yaw_response", "commanded yaw vs image shift (Pearson)"),
    ("code_usage@256", "codes in 256-step dreams / in real frames; collapse → 0"),
    ("grad_ratio@256", "image detail of steps 129–256 / real; blur < 1, noise > 1"),
]
TOUR_SCORES = [
    ("tour/turn_sign_acc", "turn and look steps moving the right way"),
    ("tour/turn_gain", "dream shift / true shift (median)"),
    ("tour/strafe_sign_acc", "strafe steps moving the right way"),
    ("tour/walk_sign_acc", "walking steps zooming the right way"),
    ("tour/revisit_psnr", "dB, the view after a full turn vs the start"),
]
IDM_HEADS = ("yaw", "pitch", "forward", "strafe")
C2ST = ("c2st@1-8", "c2st@9-32", "c2st@129-256")
CALIBRATION = ("psnr@8", "psnr@32", "delta_psnr@16", "yaw_response", "code_usage@256", "grad_ratio@256",
               "tour/turn_sign_acc", "tour/walk_sign_acc", "tour/revisit_psnr", "idm/dream/acc_yaw", "c2st@9-32",
               "c2st@129-256")
TOKENIZER_METRICS = [("recon_psnr", "dB, held-out reconstructions"), ("codebook_usage", "share of the codes used"),
                     ("codebook_perplexity", "effective number of codes"),
                     ("tokenizer/c2st", "reconstructions told from real frames; 0.5 = indistinguishable")]


def _num(value) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)                # a count: 32 contexts, not 32.00
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _ci(m: dict, name: str) -> str:
    """A value with its 95 % interval when it has one."""
    ci = m.get(f"{name}/ci")
    return _num(m.get(name)) + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else "")


def compared_recipes(metrics: dict) -> list[str]:
    """Names of the comparison models in an eval's metrics ("seed-v3" for "seed-v3/psnr@8")."""
    references = {"repeat_frame", "real", "learned", "test_world", "oracle", "still", "random_codes"}
    return sorted({k.split("/")[0] for k in metrics if k.endswith("/psnr@8") and k.count("/") == 1} - references)


def metrics_table(metrics: dict, prefix: str = "") -> str:
    """The rollout metrics of the model (with intervals), its learned/ twin, the comparison recipes
    and the repeated frame; prefix "test_world/" for the other world."""
    m = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)} if prefix else metrics
    others = compared_recipes(m)
    lines = ["| metric | ochre [95 % interval] | learned (no boosts) | " + " | ".join(others + ["repeat frame"])
             + " | what it says |", "|---|---|---|" + "---|" * (len(others) + 1) + "---|"]
    for name, what in WORLD_METRICS:
        if name == "yaw_response" and "real/yaw_response" in m:
            what += f"; real frames: {_num(m['real/yaw_response'])}"
        cells = [_ci(m, name), _num(m.get(f"learned/{name}"))] + [_ci(m, f"{o}/{name}") for o in others]
        lines.append(f"| {name} | " + " | ".join(cells + [_num(m.get(f"repeat_frame/{name}"))]) + f" | {what} |")
    return "\n".join(lines)


def tours_table(m: dict) -> str:
    if "tour/skipped" in m:
        return f"Tours skipped: {m['tour/skipped']}."
    segments = sorted({k.split("/")[1] for k in m if k.startswith("tour/") and k.count("/") == 2
                       and not k.endswith(("sign_acc", "gain"))} - {"repeat"})
    lines = ["| segment | psnr@4 | psnr@16 (8 for looks) | repeat frame psnr@16 |", "|---|---|---|---|"]
    for seg in segments:
        far = next((f"psnr@{h}" for h in (16, 8) if f"tour/{seg}/psnr@{h}" in m), "psnr@16")
        lines.append(f"| {seg} | {_num(m.get(f'tour/{seg}/psnr@4'))} | {_num(m.get(f'tour/{seg}/{far}'))} | "
                     f"{_num(m.get(f'tour/{seg}/repeat/{far}'))} |")
    scores = "\n".join(f"| {k} | {_num(m.get(k))} | {what} |" for k, what in TOUR_SCORES)
    return "\n".join(lines) + "\n\n| score | value | what it says |\n|---|---|---|\n" + scores


def idm_table(m: dict) -> str:
    lines = ["| head | real pairs (ceiling) | dreamed pairs | dream / real |", "|---|---|---|---|"]
    for h in IDM_HEADS:
        lines.append(f"| {h} | {_num(m.get(f'idm/real/acc_{h}'))} | {_num(m.get(f'idm/dream/acc_{h}'))} | "
                     f"{_num(m.get(f'idm/ratio_{h}'))} |")
    return "\n".join(lines)


def calibration_table(m: dict) -> str:
    names = [n for n in ("oracle", "repeat_frame", "still", "random_codes") if f"{n}/psnr@8" in m]
    lines = ["| metric | ochre | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for row in CALIBRATION:
        lines.append(f"| {row} | {_num(m.get(row))} | " + " | ".join(_num(m.get(f"{n}/{row}")) for n in names) + " |")
    return "\n".join(lines)


def _bars(m: dict, prefix: str) -> str:
    from ochre.eval.bars import DEMO, bars_table, judge

    where = "this world" if prefix else f"the {m.get('split', 'test')} split"
    return (f"#### Bars ({where})\n\nThe default demo's bars (docs/metrics.md#bars): met only when the worse end "
            "of the 95 % interval clears the bar; `psnr@h/over_repeat` is the dream's PSNR minus the repeated "
            "frame's on the same rollouts, with a paired interval.\n\n" + bars_table(judge(m, DEMO, prefix)))


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
    seeds = m.get("seeds", [])
    source = {"luanti": " The recordings are footage of the real game Luanti (`ochre record luanti`)."}
    parts = [f"# ochre demo report\n\nMade by `{command}` on {bench.get('device', 'this machine')} "
             f"(git {bench.get('git_sha', '?')}, {bench.get('date', '')}).{source.get(report.get('world'), '')}",
             f"## World model\n\ndocs/metrics.md on the **{m.get('split', 'test')}** split "
             f"({m.get('trajectories', '?')} held-out trajectories, never trained on): each of "
             f"{m.get('rollouts', '?')} rollouts starts from one real frame and runs on the recorded actions "
             "through the runtime's live step, "
             f"sampling at temperature {m.get('temperature')} with the copy prior's proposals boosted by "
             f"{m.get('copy_boost')} (copies) and {m.get('fill_boost')} (fills), {m.get('walk_boost')} of that while "
             f"walking; each value is the mean over noise seeds {seeds}, with a 95 % bootstrap interval over "
             f"rollouts; {m.get('rollouts@256', '?')} rollouts run 256 steps. `learned` is the same model with "
             f"every boost at 0: what the network itself learned. The world model trained {m.get('train_steps')} "
             f"steps ({_num(m.get('train_frames_per_s'))} predicted frames/s)."
             + (" The comparison recipe trained on the same tokens, seed and budget." if compared_recipes(m) else ""),
             metrics_table(m),
             _bars(m, ""),
             "### A world never trained on\n\nThe same metrics on a second "
             + ("map of the same game (another map seed)" if report.get("world") == "luanti" else
                "synthetic world (another world seed)")
             + ": a new map, not a new path through a known one.\n\n" + metrics_table(m, "test_world/"),
             _bars(m, "test_world/"),
             *(f"Not run: {what} ({why})." for what, why in report.get("skipped", {}).items()),
             "![PSNR against rollout step](eval/psnr.png)\n\nThe dreams beside the real frames, the actions drawn "
             "below: [eval/dream.mp4](eval/dream.mp4).",
             *(["## Tours against the renderer's truth\n\nScripted segments from test poses, run on the model and "
                f"on the synthetic world's own renderer ({_num(m.get('tour/contexts'))} contexts): truth | dream in "
                "[eval/tour.mp4](eval/tour.mp4).\n\n" + tours_table(m)]
              if "tours" not in report.get("skipped", {}) else []),
             "## Action accuracy\n\nAn inverse-dynamics model trained on train clip pairs reads the actions back "
             "(balanced accuracy: chance is 1/3).\n\n" + idm_table(m),
             "## Realism\n\nA classifier two-sample test: dreamed frames against the tokenizer's reconstructions of "
             "real test frames (0.5: indistinguishable, 1: told apart every time), with its 95 % interval over the "
             "scored rollouts.\n\n| range | accuracy [95 % interval] |\n|---|---|\n"
             + "\n".join(f"| {r} | {_ci(m, r)} |" for r in C2ST),
             "## Calibration\n\nWhat each metric gives the oracle (the tokenizer's reconstruction of the truth: a "
             "perfect world model), the repeated frame, a still dream and uniform random codes, beside the model: "
             "a metric is worth reading only where these differ.\n\n" + calibration_table(m),
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
