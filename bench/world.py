"""World-model quality record: the §6 metrics of a demo run (recipe ochre, the repeat-frame
predictor, and a seed-v3 run on the same tokens with the same budget), the training curves and
the dream video, collected into bench/results/.

    python -m ochre.bench.world DEMO_DIR [--seed-v3 RUN] [--eval DIR] [--log DEMO.log]

DEMO_DIR is an `ochre demo` output (DIR/world, DIR/eval); --seed-v3 a `ochre train --recipe
seed-v3` run on DIR/tokens with the same --minutes; --eval an `ochre eval DIR/world DIR/tokens
--compare RUN` output (default DEMO_DIR/eval); --log the demo's log, whose "eval: … took N s" lines
give the eval's per-part timings. Writes world_<device>_<date>.json (the table, the bars of
docs/metrics.md#bars judged on the interval's worse end, the timings), world_curves_<date>.png,
world_dream_<date>.mp4 and world_tour_<date>.mp4.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ochre.bench.common import RESULTS, header, result_path
from ochre.io import atomic_path, write_json_atomic

ROWS = ("psnr@1", "psnr@8", "psnr@32", "delta_psnr@16", "yaw_response", "code_usage@256", "grad_ratio@256")


def bars(m: dict) -> dict[str, list[dict]]:
    """docs/metrics.md#bars judged on the interval's worse end (ochre.eval.bars): the default demo's
    bars on test and on the second world, and the shipped model's for how far this model is from them."""
    from ochre.eval.bars import DEMO, SHIPPED, judge

    out = {"demo/test": judge(m, DEMO), "shipped/test": judge(m, SHIPPED)}
    if any(k.startswith("test_world/") for k in m):
        out["demo/test_world"] = judge(m, DEMO, prefix="test_world/")
        out["shipped/test_world"] = judge(m, SHIPPED, prefix="test_world/")
    return out


def eval_timings(log: Path) -> dict[str, float]:
    """The eval's own per-part timings ("eval: <part> took N s" lines) from a demo's log, if kept."""
    import re

    if not log.is_file():
        return {}
    found = re.findall(r"^eval: (.+) took (\d+) s$", log.read_text(errors="replace"), flags=re.M)
    return {part: float(seconds) for part, seconds in found}


def table(m: dict) -> str:
    names = [p for p in ("", "seed-v3/", "repeat_frame/") if any(p + r in m for r in ROWS)]
    head = "| metric | " + " | ".join(p.rstrip("/") or "ochre" for p in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for r in ROWS:
        cells = [f"{m[p + r]:.3f}" if p + r in m else "–" for p in names]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append(f"| real/yaw_response | {m['real/yaw_response']:.3f} |" + " |" * (len(names) - 1))
    return "\n".join(lines)


def curves(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for name, run in runs.items():
        rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x]
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["ce_teacher"] for r in rows], label=f"{name} teacher-forced")
        axes[0].plot(steps, [r["ce_unroll"] for r in rows], linestyle="--", label=f"{name} own samples")
        axes[1].plot([r["elapsed_s"] / 60 for r in rows], [r["loss"] for r in rows], label=name)
    axes[0].set(xlabel="step", ylabel="cross-entropy (nats)", title="per-frame code loss")
    axes[1].set(xlabel="training minutes", ylabel="loss", title="loss against wall time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.world", description=__doc__.split("\n")[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("--seed-v3", type=Path, default=None, help="the seed-v3 training run")
    ap.add_argument("--eval", type=Path, default=None, help="eval output (default DEMO/eval)")
    ap.add_argument("--note", default=None, help="a line kept in the JSON (what else ran, what a number means)")
    ap.add_argument("--log", type=Path, default=None, help="the demo's log (stderr), for the eval's per-part timings")
    args = ap.parse_args(argv)
    eval_dir = args.eval or args.demo / "eval"
    m = json.loads((eval_dir / "metrics.json").read_text())
    tokenizer = args.demo / "tokenizer" / "metrics.json"          # recon_psnr, recon_grad_ratio: the tokenizer's bars
    if tokenizer.is_file():
        m = {**json.loads(tokenizer.read_text()), **m}
    report = json.loads((args.demo / "report.json").read_text()) if (args.demo / "report.json").is_file() else {}
    runs = {"ochre": args.demo / "world"}
    if args.seed_v3:
        runs["seed-v3"] = args.seed_v3
    trained = {name: json.loads((run / "log.jsonl").read_text().splitlines()[-1]) for name, run in runs.items()}
    date = header()["date"]
    result = {"benchmark": "world", **header(), "metrics": m, "bars": bars(m), "table_md": table(m),
              "training": {name: {"steps": t["step"], "minutes": round(t["elapsed_s"] / 60, 2),
                                  "frames_per_s": t["frames_per_s"]} for name, t in trained.items()},
              "demo_timings_s": report.get("timings_s", {}),
              "eval_timings_s": eval_timings(args.log) if args.log else {},
              **({"note": args.note} if args.note else {})}
    out = result_path("world")
    write_json_atomic(out, result)
    curves(runs, RESULTS / f"world_curves_{date}.png")
    shutil.copyfile(eval_dir / "dream.mp4", RESULTS / f"world_dream_{date}.mp4")
    shutil.copyfile(eval_dir / "psnr.png", RESULTS / f"world_psnr_{date}.png")
    if (eval_dir / "tour.mp4").is_file():        # the scripted tour: truth | dream, segment by segment
        shutil.copyfile(eval_dir / "tour.mp4", RESULTS / f"world_tour_{date}.mp4")
    print(result["table_md"])
    from ochre.eval.bars import bars_table

    for name, verdicts in result["bars"].items():
        print(f"\n{name}\n{bars_table(verdicts)}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
