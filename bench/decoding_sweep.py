"""Choose a world model's decoding (temperature, boosts and min-p) on `val` (docs/metrics.md#splits: settings
are chosen on val and reported on test), and record every candidate so the choice can be rerun.

    python -m ochre.bench.decoding_sweep RUN TOKENS [--temperature 1 0.5 ...] [--copy 0 5 9 ...] [--fill ...]
        [--walk ...] [--min-p 0 0.01 ...] [--ship]

Every (temperature, copy_boost, fill_boost, walk_boost, min_p) on the grid is evaluated on the val split's rollouts
(the same rollouts and noise seeds for every candidate; no tours or action model, to keep a sweep
affordable). The chosen setting maximises the objective below among the candidates whose worse
interval ends keep the dream from collapsing or dissolving and whose late dreams a classifier does
not tell from real frames more often than the default demo's bar allows (`--bars shipped`: the shipped
model's bars on both c2st windows and on the detail's upper end; `--no-c2st` drops the realism guard and
says so in the result); `--ship` writes it into the
run's newest checkpoint as the decoding the model ships with (the checkpoint's weights and their
hash are unchanged; only config.json's decoding changes). Writes
bench/results/decoding_sweep_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from ochre.bench.common import data_record, header, result_path, run_record
from ochre.eval import EvalConfig, evaluate
from ochre.eval.bars import DEMO, SHIPPED
from ochre.eval.intervals import worse_end
from ochre.io import write_json_atomic

# The objective: a dream that stays close to the real future (psnr@8 and psnr@32, dB) and follows
# the controls (delta_psnr@16, dB); admissible only if the worse ends of the collapse and noise
# guards hold: as many codes as real play uses (>= 0.6) and image detail between blur and noise.
GUARDS = {"code_usage@256": (0.6, True), "grad_ratio@256": (0.8, True)}
GRAD_MAX = 1.25
# Realism: a model's bars on c2st (docs/metrics.md#bars, ochre.eval.bars): the default demo's by default.
# Without them a sweep cannot see a setting that sharpens PSNR by making dreams easier to tell from real play.
BARS = {"demo": DEMO, "shipped": SHIPPED}


def c2st_max(bars=DEMO) -> dict[str, float]:
    """The realism guard of a bar set: each c2st bar's ceiling."""
    return {bar.metric: bar.high for bar in bars if bar.metric.startswith("c2st@")}


def grad_max(bars=DEMO) -> float:
    """The detail guard's ceiling: the bar set's own upper bound on grad_ratio@256, else GRAD_MAX."""
    return next((bar.high for bar in bars if bar.metric == "grad_ratio@256" and bar.high is not None), GRAD_MAX)


def objective(m: dict) -> float:
    return m["psnr@8"] + m["psnr@32"] + m["delta_psnr@16"]


def admissible(m: dict, realism: bool = True, bars=DEMO) -> bool:
    """The guards' worse ends hold; with `realism`, the classifier's too (its upper end, as the bars
    read it; a score recorded without an interval is read as it is). bars: whose c2st ceilings and
    upper detail bound (ochre.eval.bars.DEMO or SHIPPED)."""
    return all((worse_end(m, k, hi) >= t) for k, (t, hi) in GUARDS.items()) \
        and worse_end(m, "grad_ratio@256", higher_is_better=False) <= grad_max(bars) \
        and (not realism or all(worse_end(m, k, higher_is_better=False) <= t for k, t in c2st_max(bars).items()))


KNOBS = ("temperature", "copy_boost", "fill_boost", "walk_boost", "min_p")     # a candidate, in this order


def _label(sampling: dict) -> str:
    return f"T {sampling['temperature']:g} copy {sampling['copy_boost']:g} fill {sampling['fill_boost']:g} " \
           f"walk {sampling['walk_boost']:g} min-p {sampling['min_p']:g}"


def sweep(run, tokens, grid: list[tuple[float, float, float, float]], *, out_dir: Path, cfg: EvalConfig,
          log=print, bars=DEMO) -> dict:
    """Evaluate every candidate (temperature, copy_boost, fill_boost, walk_boost, min_p) on val, guarded by
    `bars` (admissible); -> {"candidates": [...], "chosen": {...} | None}."""
    if cfg.split != "val":
        raise ValueError("a decoding sweep chooses on the val split only (docs/metrics.md#splits)")
    rows = []
    for candidate in grid:
        sampling = dict(zip(KNOBS, map(float, candidate), strict=True))
        folder = out_dir / "-".join(f"{knob[0]}{value:g}" for knob, value in sampling.items())     # t1-c15-f5.5-w0.5-m0
        m = _done(folder, run, tokens, cfg, sampling, bars)
        if m is None:
            m = evaluate(run, tokens, folder, cfg=cfg, sampling=sampling, log=lambda _: None)
        else:
            log(f"{_label(sampling)}: evaluated before ({folder / 'metrics.json'})")
        keep = {k: v for k, v in m.items() if k.split("/")[0] in {"psnr@1", "psnr@8", "psnr@32", "delta_psnr@16",
                                                                  "yaw_response", "code_usage@256", "grad_ratio@256",
                                                                  "c2st@1-8", "c2st@9-32", "c2st@129-256"}}
        row = {**sampling, "objective": objective(m), "admissible": admissible(m, realism=cfg.c2st, bars=bars),
               "metrics": keep}
        rows.append(row)
        log(f"{_label(sampling)}: objective {row['objective']:.2f} "
            f"({'admissible' if row['admissible'] else 'guard failed'}); psnr@8 {m['psnr@8']:.2f}, "
            f"code_usage {m['code_usage@256']:.2f}, grad_ratio {m['grad_ratio@256']:.2f}"
            + (f", c2st@129-256 {m['c2st@129-256']:.3f}" if cfg.c2st else ""))
    ok = [r for r in rows if r["admissible"]]
    chosen = max(ok, key=lambda r: r["objective"]) if ok else None
    return {"candidates": rows, "chosen": chosen}


def _done(folder: Path, run, tokens, cfg: EvalConfig, sampling: dict, bars=DEMO) -> dict | None:
    """A candidate's metrics from an earlier sweep (killed or rerun) if they were made from this run's
    newest weights, these tokens and these eval settings; else None. A sweep resumes where it stopped."""
    from ochre.data.shards import index_digest
    from ochre.models.checkpoint import checkpoint_hash, motion_prior_of

    try:
        m = json.loads((folder / "metrics.json").read_text())     # written last: its presence marks a finished eval
    except (OSError, json.JSONDecodeError):
        return None
    want = {"world_hash": checkpoint_hash(run), "motion_prior": motion_prior_of(run), "tokens": index_digest(tokens),
            "split": cfg.split, "seeds": list(cfg.seeds), "long_seeds": cfg.long_seeds, "rollouts_asked": cfg.rollouts,
            **sampling}
    if cfg.c2st and any(k not in m for k in c2st_max(bars)):
        return None                                              # evaluated without the realism test
    return m if all(m.get(k) == v for k, v in want.items()) else None


def ship(run, chosen: dict) -> Path:
    """Write the chosen temperature, boosts and min-p into the run's newest checkpoint's decoding (config.json)."""
    from ochre.models.checkpoint import read_checkpoint_config

    meta = read_checkpoint_config(run)
    path = Path(meta["path"]) / "config.json"
    config = json.loads(path.read_text())
    config["extra"]["sampling"].update({k: chosen[k] for k in KNOBS})
    write_json_atomic(path, config)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="world-model run folder")
    ap.add_argument("tokens", help="its token shards (`ochre tokenize` output)")
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0],
                    help="sampling temperatures (0: argmax; default 1: the whole distribution as trained)")
    ap.add_argument("--copy", type=float, nargs="+", default=[0.0, 3.0, 6.0, 9.0])
    ap.add_argument("--fill", type=float, nargs="+", default=[0.0, 4.0, 7.0])
    ap.add_argument("--walk", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--min-p", type=float, nargs="+", default=[0.0],
                    help="min-p cuts (0: the whole distribution; default 0)")
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--long-rollouts", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--work", default=None, help="folder for the candidates' eval outputs (default: beside --out)")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/decoding_sweep_cpu_<date>.json)")
    ap.add_argument("--no-c2st", action="store_true",
                    help="skip the realism test and its guard (faster; the result says the guard was off)")
    ap.add_argument("--bars", choices=sorted(BARS), default="demo",
                    help="whose bars guard the choice: the default demo's (c2st@129-256 <= 0.95; default) or the "
                         "shipped model's (c2st@9-32 <= 0.8, c2st@129-256 <= 0.85, grad_ratio@256 <= 1.2)")
    ap.add_argument("--ship", action="store_true", help="write the chosen decoding into the run's newest checkpoint")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else result_path("decoding_sweep")
    cfg = EvalConfig(split="val", rollouts=args.rollouts, long_rollouts=args.long_rollouts, seeds=tuple(args.seeds),
                     learned=False, tours=0, idm=False, c2st=not args.no_c2st)
    grid = list(itertools.product(args.temperature, args.copy, args.fill, args.walk, args.min_p))
    result = sweep(args.run, args.tokens, grid, out_dir=Path(args.work or out.with_suffix("")), cfg=cfg,
                   log=lambda m: print(m, file=sys.stderr), bars=BARS[args.bars])
    record = {**header("cpu"), "run": run_record(args.run), "tokens": data_record(args.tokens), "split": "val",
              "objective": "psnr@8 + psnr@32 + delta_psnr@16",
              "bars": args.bars,
              "guards": {**{k: t for k, (t, _) in GUARDS.items()}, "grad_ratio@256 max": grad_max(BARS[args.bars]),
                         **({f"{k} max": t for k, t in c2st_max(BARS[args.bars]).items()} if cfg.c2st
                            else {"realism": "off"})},
              "settings": {"rollouts": args.rollouts, "long_rollouts": args.long_rollouts, "seeds": args.seeds},
              **result}
    write_json_atomic(out, record)
    chosen = result["chosen"]
    if chosen is None:
        print(f"no candidate kept the guards; nothing chosen ({out})", file=sys.stderr)
        return 1
    print(f"chosen on val: {_label(chosen)} (objective {chosen['objective']:.2f}) -> {out}")
    if args.ship:
        print(f"shipped into {ship(args.run, chosen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
