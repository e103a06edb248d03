"""Put a trained model into the package: `python -m ochre.runtime.ship DEMO_DIR`.

Copies the tokenizer and world model that `ochre demo --out DEMO_DIR` trained (weights only, as
safetensors, with pickle-free config.json files that `ochre.models.checkpoint` loads), 16 real
held-out context frames, the eval's metrics.json and the command that made them into
ochre/shipped/ (package data), so `ochre play` and `ochre bench` work on a fresh install with
no data. Refuses models over 10 MB. Run it from a source checkout, then commit ochre/shipped/.

`python -m ochre.runtime.ship --decoder TOK --command CMD [--metrics EVAL/metrics.json]` puts a
decoder refined from the shipped tokenizer (`ochre train-tokenizer --decoder-of`) in its place: refused
unless it makes the shipped tokenizer's codes (`Tokenizer.codes_digest`), so the shipped world model
still reads them; MODEL.json records CMD as `tokenizer_made_by`, and the eval's metrics of the model
decoded through it replace metrics.json.

`python -m ochre.runtime.ship --world RUN --command CMD --metrics EVAL/metrics.json` puts a world model
trained on the shipped tokenizer's codes (e.g. `ochre train TOKENS --init ochre/shipped/world ...`) in the
shipped one's place: refused unless its token shards were made by a tokenizer with the shipped one's codes,
and unless the metrics are that model's own eval (their `world_hash`); MODEL.json records CMD as
`world_made_by`, with its step (counting the shipped model's before it when the run started from them).

`python -m ochre.runtime.ship --decoding EVAL/metrics.json --command CMD` ships the decoding that eval read
(temperature, top-k, action guidance, the copy, fill and walk boosts, min-p: what `ochre eval --guidance`
and its neighbours override) with the shipped world model, whose weights stay as they are: refused unless
the eval is of the shipped world model; its metrics replace metrics.json and MODEL.json records CMD as
`decoding_chosen_by`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ochre.io import write_json_atomic
from ochre.models.checkpoint import CheckpointError
from ochre.models.lookup import SHIPPED, from_run

MAX_BYTES = 10 * 2**20
CONTEXTS = 16
_KEEP_EXTRA = ("sampling", "recipe", "preset", "identity", "decoder_of")


def _copy_checkpoint(src: Path, dst: Path) -> dict:
    """model.safetensors + a config.json without optimizer or RNG state."""
    meta = json.loads((src / "config.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "model.safetensors", dst / "model.safetensors")
    digest = hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()
    extra = {k: meta.get("extra", {})[k] for k in _KEEP_EXTRA if k in meta.get("extra", {})}
    if "identity" in extra:
        extra["identity"] = {"tokens": extra["identity"].get("tokens")}
    slim = {"format": meta["format"], "kind": meta["kind"], "config": meta["config"], "step": meta["step"],
            "optim": None, "extra": extra, "files": {"model.safetensors": digest}}
    write_json_atomic(dst / "config.json", slim)
    return slim


def _swap_in_checkpoint(src: Path, dst: Path) -> dict:
    """_copy_checkpoint written beside dst, then put in its place."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    slim = _copy_checkpoint(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return slim


def _swap_in_file(src: Path, dst: Path) -> None:
    """A copy of src written beside dst, then put in its place."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _eval_of(metrics: Path, world, run, name=None) -> dict:
    """The contents of `metrics`, refused unless it is an eval of the world checkpoint `world` (its
    `world_hash`); `run` is what `ochre eval` would be given, `name` what the errors call it (default: run)."""
    from ochre.models.checkpoint import checkpoint_hash, motion_prior_of

    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no eval metrics; run `ochre eval {run} TOKENS --out EVAL` first")
    read = json.loads(metrics.read_text())
    evaluated, ours = read.get("world_hash"), checkpoint_hash(world)
    if evaluated != ours:
        raise ValueError(f"{metrics} is the eval of world model {evaluated}, not of {name or run} ({ours})")
    # The hash names the weights; the motion prior lives in the config (an eval before it was recorded says nothing).
    prior = motion_prior_of(world)
    if read.get("motion_prior", prior) != prior:
        raise ValueError(f"{metrics} read these weights with the motion prior {read['motion_prior']}, not "
                         f"{name or run}'s {prior}")
    return read


def ship(demo_dir, command: str, dest: Path = SHIPPED) -> dict:
    demo_dir = Path(demo_dir)
    model = from_run(demo_dir / "world")
    metrics = demo_dir / "eval" / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: the model has no eval; finish `ochre demo` first")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    world = _copy_checkpoint(model.world, tmp / "world")
    _copy_checkpoint(model.tokenizer, tmp / "tokenizer")
    frames = model.context_frames()
    pick = np.linspace(0, len(frames) - 1, min(CONTEXTS, len(frames))).round().astype(int)
    np.save(tmp / "contexts.npy", frames[pick])
    shutil.copyfile(metrics, tmp / "metrics.json")
    if (demo_dir / "tokenizer" / "metrics.json").is_file():
        shutil.copyfile(demo_dir / "tokenizer" / "metrics.json", tmp / "tokenizer_metrics.json")
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise ValueError(f"the model takes {size / 2**20:.1f} MB; the package ships at most {MAX_BYTES / 2**20:.0f} MB")
    from ochre.measure import git_sha

    info = {"made_by": command, "fps": model.fps, "world_step": world["step"], "bytes": size,
            "recipe": world["extra"].get("recipe"), "preset": world["extra"].get("preset"),
            "git_sha": git_sha(), "date": _dt.date.today().isoformat()}
    write_json_atomic(tmp / "MODEL.json", info)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return info


def ship_decoder(tokenizer, command: str, dest: Path = SHIPPED, metrics=None) -> dict:
    """Replace the shipped tokenizer by `tokenizer`, a decoder refined from it (module doc)."""
    from ochre.models.checkpoint import codes_mismatch, read_checkpoint_config

    dest = Path(dest)
    info_path = dest / "MODEL.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: no shipped model to refine the decoder of")
    why = codes_mismatch(dest / "tokenizer", tokenizer)
    if why:
        raise ValueError(f"{why}: it cannot replace the shipped tokenizer")
    src = Path(read_checkpoint_config(tokenizer)["path"])
    run = src.parent.parent if src.parent.name == "checkpoints" else src.parent
    if (run / "metrics.json").is_file():
        _swap_in_file(run / "metrics.json", dest / "tokenizer_metrics.json")
    if metrics is not None:
        _swap_in_file(Path(metrics), dest / "metrics.json")
    _swap_in_checkpoint(src, dest / "tokenizer")
    info = json.loads(info_path.read_text())
    info.update(tokenizer_made_by=command, bytes=sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()))
    write_json_atomic(info_path, info)
    return info


def ship_world(run, command: str, metrics, dest: Path = SHIPPED) -> dict:
    """Replace the shipped world model by `run`'s newest checkpoint (module doc)."""
    from ochre.models.checkpoint import checkpoint_hash, codes_mismatch, read_checkpoint_config

    dest = Path(dest)
    info_path = dest / "MODEL.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: no shipped model to replace the world model of")
    model = from_run(run)                                       # a ModelError (ValueError) says what is missing
    why = codes_mismatch(dest / "tokenizer", model.tokenizer)
    if why:
        raise ValueError(f"{run} was trained on codes the shipped tokenizer does not make ({why})")
    metrics = Path(metrics)
    _eval_of(metrics, model.world, run)
    # A run started from the shipped weights (`--init`) counts the shipped model's steps before its own.
    init = (read_checkpoint_config(model.world).get("extra", {}).get("run", {}).get("inputs", {}).get("init") or "")
    info = json.loads(info_path.read_text())
    before = info.get("world_step", 0) if init[:16] == checkpoint_hash(dest / "world") else 0
    _swap_in_file(metrics, dest / "metrics.json")
    world = _swap_in_checkpoint(model.world, dest / "world")
    from ochre.measure import git_sha

    info.update(world_made_by=command, world_step=before + world["step"], git_sha=git_sha(),
                date=_dt.date.today().isoformat(), bytes=sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()))
    write_json_atomic(info_path, info)
    return info


def ship_decoding(metrics, command: str, dest: Path = SHIPPED) -> dict:
    """Make the decoding an eval of the shipped world model read the one it ships with (module doc)."""
    from ochre.models.sampling import SamplingConfig

    dest, metrics = Path(dest), Path(metrics)
    info_path, config_path = dest / "MODEL.json", dest / "world" / "config.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: no shipped model to set the decoding of")
    read = _eval_of(metrics, dest / "world", dest / "world", "the shipped one")
    read = {"guide": "all", **read}             # an eval from before `guide` existed guided the whole distribution
    meta = json.loads(config_path.read_text())
    missing = [k for k in SamplingConfig.__dataclass_fields__ if k not in read]
    if missing:
        raise ValueError(f"{metrics} does not say which decoding it read (no {', '.join(missing)})")
    sampling = asdict(SamplingConfig(**{k: read[k] for k in SamplingConfig.__dataclass_fields__}))   # checks ranges
    meta.setdefault("extra", {})["sampling"] = sampling
    _swap_in_file(metrics, dest / "metrics.json")
    write_json_atomic(config_path, meta)
    info = json.loads(info_path.read_text())
    info.update(decoding_chosen_by=command, date=_dt.date.today().isoformat())
    write_json_atomic(info_path, info)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.runtime.ship", description=__doc__.split("\n")[0])
    ap.add_argument("demo_dir", nargs="?", help="an `ochre demo --out` folder (tokenizer/, tokens/, world/, eval/)")
    ap.add_argument("--decoder", default=None, metavar="TOK",
                    help="instead of a demo: replace the shipped tokenizer by a decoder refined from it "
                         "(`ochre train-tokenizer --decoder-of`; refused unless it makes the same codes)")
    ap.add_argument("--world", default=None, metavar="RUN",
                    help="instead of a demo: replace the shipped world model by a run trained on the shipped "
                         "tokenizer's codes (e.g. `ochre train TOKENS --init ochre/shipped/world`); needs --metrics")
    ap.add_argument("--decoding", default=None, metavar="METRICS",
                    help="instead of a demo: ship the decoding (temperature, top-k, guidance, boosts, min-p) that "
                         "this eval metrics.json of the shipped world model read; the weights stay")
    ap.add_argument("--metrics", default=None,
                    help="with --decoder: the eval metrics.json of the shipped world decoded through it; with "
                         "--world: the run's own eval metrics.json")
    ap.add_argument("--command", required=True,
                    help="the exact command that made DEMO_DIR, recorded with the model "
                         "(e.g. \"ochre demo --quick --out demo-out\")")
    ap.add_argument("--dest", default=str(SHIPPED), help="where to write (default: the package's ochre/shipped)")
    args = ap.parse_args(argv)
    if sum(x is not None for x in (args.demo_dir, args.decoder, args.world, args.decoding)) != 1:
        ap.error("give a demo folder, --decoder TOK, --world RUN or --decoding METRICS, one of them")
    if args.world is not None and args.metrics is None:
        ap.error("--world needs --metrics: the run's own eval")
    try:
        if args.decoding is not None:
            info = ship_decoding(args.decoding, args.command, Path(args.dest))
        elif args.world is not None:
            info = ship_world(args.world, args.command, args.metrics, Path(args.dest))
        elif args.decoder is not None:
            info = ship_decoder(args.decoder, args.command, Path(args.dest), args.metrics)
        else:
            info = ship(args.demo_dir, args.command, Path(args.dest))
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"ochre ship: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    print(f"wrote {args.dest}; commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
