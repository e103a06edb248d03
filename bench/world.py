"""World-model quality record: the §6 metrics of a demo run (recipe ochre, the repeat-frame
predictor, and a seed-v3 run on the same tokens with the same budget), the training curves and
the dream video, collected into bench/results/.

    python -m ochre.bench.world DEMO_DIR [--seed-v3 RUN] [--eval DIR]

DEMO_DIR is an `ochre demo` output (DIR/world, DIR/eval); --seed-v3 a `ochre train --recipe
seed-v3` run on DIR/tokens with the same --minutes; --eval an `ochre eval DIR/world DIR/tokens
--compare RUN` output (default DEMO_DIR/eval). Writes world_<device>_<date>.json (the table, the
bars of the world-model issue and how far each is), world_curves_<date>.png and
world_dream_<date>.mp4.
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


def bars(m: dict) -> list[dict]:
    """The world-model issue's quality bars, each with its value, its threshold and the gap."""
    def bar(name, value, threshold, ok):
        return {"bar": name, "value": value, "threshold": threshold, "met": bool(ok),
                "gap": 0.0 if ok else abs(value - threshold)}
    out = [bar("delta_psnr@16 >= 1.5", m["delta_psnr@16"], 1.5, m["delta_psnr@16"] >= 1.5),
           bar("yaw_response >= 0.8 x real", m["yaw_response"], 0.8 * m["real/yaw_response"],
               m["yaw_response"] >= 0.8 * m["real/yaw_response"]),
           bar("psnr@8 >= repeat + 1 dB", m["psnr@8"], m["repeat_frame/psnr@8"] + 1,
               m["psnr@8"] >= m["repeat_frame/psnr@8"] + 1),
           bar("code_usage@256 >= 0.6", m["code_usage@256"], 0.6, m["code_usage@256"] >= 0.6),
           bar("grad_ratio@256 >= 0.75", m["grad_ratio@256"], 0.75, m["grad_ratio@256"] >= 0.75),
           bar("grad_ratio@256 <= 1.33", m["grad_ratio@256"], 1.33, m["grad_ratio@256"] <= 1.33)]
    if "seed-v3/delta_psnr@16" in m:
        out.append(bar("delta_psnr@16 > seed-v3", m["delta_psnr@16"], m["seed-v3/delta_psnr@16"],
                       m["delta_psnr@16"] > m["seed-v3/delta_psnr@16"]))
    return out


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
    args = ap.parse_args(argv)
    eval_dir = args.eval or args.demo / "eval"
    m = json.loads((eval_dir / "metrics.json").read_text())
    report = json.loads((args.demo / "report.json").read_text()) if (args.demo / "report.json").is_file() else {}
    runs = {"ochre": args.demo / "world"}
    if args.seed_v3:
        runs["seed-v3"] = args.seed_v3
    trained = {name: json.loads((run / "log.jsonl").read_text().splitlines()[-1]) for name, run in runs.items()}
    date = header()["date"]
    result = {"benchmark": "world", **header(), "metrics": m, "bars": bars(m), "table_md": table(m),
              "training": {name: {"steps": t["step"], "minutes": round(t["elapsed_s"] / 60, 2),
                                  "frames_per_s": t["frames_per_s"]} for name, t in trained.items()},
              "demo_timings_s": report.get("timings_s", {})}
    out = result_path("world")
    write_json_atomic(out, result)
    curves(runs, RESULTS / f"world_curves_{date}.png")
    shutil.copyfile(eval_dir / "dream.mp4", RESULTS / f"world_dream_{date}.mp4")
    shutil.copyfile(eval_dir / "psnr.png", RESULTS / f"world_psnr_{date}.png")
    print(result["table_md"])
    for b in result["bars"]:
        print(f"{'met ' if b['met'] else 'MISS'} {b['bar']}: {b['value']:.3f} (threshold {b['threshold']:.3f})")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
