"""The bars a world model is judged by (docs/metrics.md#bars), and their verdicts on an eval's metrics.

A bar is met only when the worse end of the metric's 95 % interval clears it (the value itself for
the metrics that have no interval: the tours and action accuracy; for realism, c2st's upper end). A bar relative to a
reference metric (the repeated frame's tour PSNR, the real frames' yaw response) sets its threshold
from that reference's value. A metric the eval did not produce is "not measured", never met.

    python -m ochre.eval.bars METRICS [METRICS ...] [--demo]

prints the bars' verdicts on test and test_world for the metrics files merged (the first one naming a
metric wins), e.g. the shipped model's: ochre/shipped/metrics.json ochre/shipped/tokenizer_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ochre.eval.intervals import worse_end


@dataclass(frozen=True)
class Bar:
    metric: str
    low: float | None = None          # the worse end must be >= low (+ the reference's value when there is one)
    high: float | None = None         # ... and <= high
    reference: str | None = None      # the threshold is reference * scale + low, e.g. real/yaw_response
    scale: float = 1.0

    def thresholds(self, m: dict) -> tuple[float | None, float | None] | None:
        """(low, high) on this metrics dict; None when the reference is missing."""
        if self.reference is None:
            return self.low, self.high
        ref = m.get(self.reference)
        if not isinstance(ref, (int, float)) or not math.isfinite(ref):
            return None
        return (ref * self.scale + (self.low or 0.0), None)

    def text(self) -> str:
        if self.reference is not None:
            scaled = f"{self.scale:g} × {self.reference}" if self.scale != 1 else self.reference
            return f"≥ {scaled}" + (f" + {self.low:g}" if self.low else "")
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        return f"≥ {self.low:g}" if self.low is not None else f"≤ {self.high:g}"


# The default demo (about 30 minutes on 2 CPU cores, a small model trained for 12 of them).
DEMO = (
    Bar("psnr@8/over_repeat", low=1.0),
    Bar("psnr@32/over_repeat", low=0.0),
    Bar("tour/turn_sign_acc", low=0.9),
    Bar("tour/walk_sign_acc", low=0.7),
    Bar("c2st@129-256", high=0.95),
)

# The shipped model (trained as long as it needs).
SHIPPED = (
    Bar("recon_psnr", low=28.0),
    Bar("recon_grad_ratio", low=0.9),
    Bar("tokenizer/c2st", high=0.8),
    Bar("psnr@8/over_repeat", low=2.0),
    Bar("psnr@32/over_repeat", low=1.0),
    Bar("grad_ratio@256", low=0.8, high=1.2),
    Bar("tour/turn_sign_acc", low=0.95),
    Bar("tour/turn_gain", low=0.8, high=1.25),
    Bar("tour/walk_sign_acc", low=0.8),
    Bar("tour/walk/psnr@16", low=1.0, reference="tour/walk/repeat/psnr@16"),
    Bar("tour/revisit_psnr", low=20.0),
    Bar("idm/ratio_yaw", low=0.8),
    Bar("idm/ratio_pitch", low=0.8),
    Bar("idm/ratio_forward", low=0.8),
    Bar("c2st@9-32", high=0.8),
    Bar("c2st@129-256", high=0.85),
    Bar("learned/yaw_response", low=0.0, reference="real/yaw_response", scale=0.7),
)

# Metrics of the tokenizer, read without the world prefix (the other world shares the tokenizer).
SHARED = ("recon_psnr", "recon_grad_ratio", "tokenizer/c2st")


def judge(metrics: dict, bars=DEMO, prefix: str = "") -> list[dict]:
    """One verdict per bar on metrics[prefix + name]: {"metric", "bar", "value", "worse_end",
    "verdict": "met" | "missed" | "not measured", "gap"} (gap: how far the worse end is from the
    threshold it missed, in the metric's units; 0 when met)."""
    m = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)} if prefix else dict(metrics)
    for name in SHARED:
        m.setdefault(name, metrics.get(name))
    out = []
    for bar in bars:
        value, limits = m.get(bar.metric), bar.thresholds(m)
        row = {"metric": bar.metric, "bar": bar.text(), "value": value, "worse_end": None, "verdict": "not measured",
               "gap": None}
        if isinstance(value, (int, float)) and math.isfinite(value) and limits is not None:
            low, high = limits
            ends = []                             # (gap, the end of the interval it was measured at)
            if low is not None:
                lo = worse_end(m, bar.metric, higher_is_better=True)
                ends.append((max(low - lo, 0.0), lo))
            if high is not None:
                hi = worse_end(m, bar.metric, higher_is_better=False)
                ends.append((max(hi - high, 0.0), hi))
            row["gap"], row["worse_end"] = max(ends, key=lambda e: e[0])
            row["verdict"] = "met" if row["gap"] == 0 else "missed"
        out.append(row)
    return out


def _num(v) -> str:
    return "–" if not isinstance(v, (int, float)) else (f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")


def bars_table(verdicts: list[dict]) -> str:
    """Markdown: metric | bar | value | worse end | verdict (with the gap when missed)."""
    lines = ["| metric | bar | value | interval's worse end | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        verdict = v["verdict"] + (f" by {_num(v['gap'])}" if v["verdict"] == "missed" else "")
        lines.append(f"| {v['metric']} | {v['bar']} | {_num(v['value'])} | {_num(v['worse_end'])} | {verdict} |")
    return "\n".join(lines)


def worlds_table(metrics: dict, bars=SHIPPED, worlds: dict[str, str] | None = None) -> str:
    """Markdown, one row per bar and one column per world (default test and test_world, whose metrics
    carry the `test_world/` prefix): each cell the value, its interval's worse end, and the verdict."""
    worlds = worlds if worlds is not None else {"test": "", "test_world": "test_world/"}
    columns = [judge(metrics, bars, prefix) for prefix in worlds.values()]
    lines = ["| metric | bar | " + " | ".join(f"{w}: value (worse end), verdict" for w in worlds) + " |",
             "|---|---|" + "---|" * len(worlds)]
    for rows in zip(*columns):
        cells = []
        for v in rows:
            if v["verdict"] == "not measured":
                cells.append("not measured")
                continue
            end = f" ({_num(v['worse_end'])})" if v["worse_end"] != v["value"] else ""
            verdict = "met" if v["verdict"] == "met" else f"**missed by {_num(v['gap'])}**"
            cells.append(f"{_num(v['value'])}{end}, {verdict}")
        lines.append(f"| {rows[0]['metric']} | {rows[0]['bar']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merged(paths) -> dict:
    """The metrics of several files in one dict; the first file naming a metric wins."""
    out: dict = {}
    for path in paths:
        for k, v in json.loads(Path(path).read_text()).items():
            out.setdefault(k, v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ochre.eval.bars", description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", nargs="+", help="metrics.json files (an eval's, a tokenizer's), merged in order")
    p.add_argument("--demo", action="store_true", help="the default demo's bars instead of the shipped model's")
    args = p.parse_args(argv)
    print(worlds_table(merged(args.metrics), DEMO if args.demo else SHIPPED))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
