"""Choose the walk rule's smallest judged zoom (ochre.eval.tours.MIN_TRUE_ZOOM) on `val`, and report
`test` (docs/metrics.md#splits).

    python -m ochre.bench.walk_rule TOKENS [--tours 64] [--out FILE]

`tour/walk_sign_acc` judges a walking step by the sign of its zoom. The oracle (the tokenizer's
reconstruction of the renderer's truth: a perfect dynamics model behind this tokenizer) should score
it at its best; where it does not, the rule judges steps whose zoom the reconstruction's blur alone
flips. A step forward can only expand the view, so the rule judges the steps whose truth reads an
expansion of at least the threshold (since 2026-12-04; before, a true zoom that far from 1 on either
side, recorded as `two_sided`). For each candidate threshold this records, on the tours of each split:
the steps judged, the oracle's accuracy, and, as the estimator's floor, how often a pure turn (true zoom
1 by construction) reads at least that far from 1. The rule's threshold is the smallest candidate whose
oracle accuracy on val is at least BAR; test is reported beside it, never read to choose.
The strafe rule is recorded beside it: the oracle's strafe sign accuracy over every strafing step and
over the level steps only (the true eye height kept; the rule since 2026-12-04, as for walks).
Writes bench/results/walk_rule_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ochre.bench.common import data_record, header, result_path
from ochre.io import write_json_atomic

CANDIDATES = (0.01, 0.02, 0.03, 0.04, 0.05)
BAR = 0.95                 # docs/metrics.md#calibration: the oracle's sign accuracies


def oracle_tours(tokens, split: str, n: int) -> dict[str, np.ndarray]:
    """The tours of the oracle dreamer from n contexts of `split` -> run_tours' arrays."""
    import torch

    from ochre.data.shards import indexed_folder, read_index
    from ochre.eval import rollouts as ro
    from ochre.eval import tours
    from ochre.eval.dreamers import Codec, OracleDreamer
    from ochre.models.checkpoint import load_tokenizer

    index = read_index(tokens)
    oracle = OracleDreamer(Codec(load_tokenizer(indexed_folder(tokens, "tokenizer_checkpoint", index),
                                                torch.device("cpu"))))
    clips = indexed_folder(tokens, "clips", index)
    contexts = tours.tour_contexts(clips, frozenset(t.source for t in ro.trajectories(clips, split)), n)
    if isinstance(contexts, str):
        raise SystemExit(f"walk_rule: {contexts}")
    fps = float(index.get("fps", 8.0))
    return tours.run_tours(lambda c, a, t: oracle.dream(c, a, t)[0], contexts, fps, progress=False)[1]


def rows(arrays: dict[str, np.ndarray]) -> list[dict]:
    """Per candidate: steps judged, the oracle's walk sign accuracy, a pure turn's reading rate."""
    from ochre.eval import tours

    true, dream = tours.walk_zooms(arrays)
    turns = np.concatenate([tours.rollout_zooms(arrays[f"{name}/truth"]).ravel()
                            for name in ("turn_right", "turn_left")])
    out = []
    for t in CANDIDATES:
        out.append({"min_true_zoom": t, "steps": int(tours.expansions(true, t).sum()), "of": len(true),
                    "oracle_walk_sign_acc": tours.zoom_agreement(true, dream, t),
                    "two_sided": _two_sided(true, dream, t),
                    "turn_reads_zoom": float(np.mean(tours.judged_zooms(turns, t)))})
    return out


def _two_sided(true: np.ndarray, dream: np.ndarray, t: float) -> dict:
    """The walk rule before 2026-12-04, for comparison: every true zoom at least t from 1, on either side,
    judged by the dream's side of 1."""
    from ochre.eval import tours

    keep = tours.judged_zooms(true, t)
    acc = float(np.mean(np.sign(dream[keep] - 1) == np.sign(true[keep] - 1))) if keep.any() else None
    return {"steps": int(keep.sum()), "oracle_walk_sign_acc": acc}


def strafe_rows(arrays: dict[str, np.ndarray]) -> list[dict]:
    """The oracle's strafe sign accuracy over every strafing step and over the level ones (the rule)."""
    from ochre.eval import tours

    out = []
    for level_only in (False, True):
        true, dream = tours.strafe_shifts(arrays, level_only=level_only)
        out.append({"level_only": level_only, "steps": int(np.sum(np.abs(true) >= tours.MIN_TRUE_SHIFT)),
                    "of": len(true), "oracle_strafe_sign_acc": tours.sign_agreement(true, dream)[0]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token shards of a synthetic data set (`ochre tokenize`; the demo's tokens/)")
    ap.add_argument("--tours", type=int, default=64, help="tour contexts per split (default 64)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/walk_rule_<device>_<date>.json)")
    args = ap.parse_args(argv)
    result = {"benchmark": "walk_rule", **header("cpu"), "data": data_record(args.tokens), "bar": BAR,
              "candidates": list(CANDIDATES), "splits": {}, "strafe": {}}
    for split in ("val", "test"):
        t0 = time.perf_counter()
        arrays = oracle_tours(args.tokens, split, args.tours)
        result["splits"][split], result["strafe"][split] = rows(arrays), strafe_rows(arrays)
        print(f"walk_rule: {split} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    passing = [r["min_true_zoom"] for r in result["splits"]["val"] if r["oracle_walk_sign_acc"] >= BAR]
    result["chosen_on_val"] = passing[0] if passing else None
    out = Path(args.out) if args.out else result_path("walk_rule")
    write_json_atomic(out, result)
    for split, table in result["splits"].items():
        for r in table:
            print(f"{split} >= {r['min_true_zoom']:.2f}: {r['steps']}/{r['of']} steps, oracle "
                  f"{r['oracle_walk_sign_acc']:.3f}, a turn reads it {r['turn_reads_zoom']:.2f}")
        for r in result["strafe"][split]:
            print(f"{split} strafe, {'level steps' if r['level_only'] else 'every step'}: {r['steps']}/{r['of']} "
                  f"steps judged, oracle {r['oracle_strafe_sign_acc']:.3f}")
    print(f"chosen on val: {result['chosen_on_val']}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
