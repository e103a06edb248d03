"""`ochre eval`: every metric of docs/metrics.md for a world model on a split, and the files they
are computed from.

Legend: N rollouts, S steps, H W pixels.

The model dreams through the runtime's live step with the decoding its checkpoint ships
(`learned/`: with every decoding boost at 0), beside the repeat-the-context-frame predictor and an
optional second model (`--compare`, under its recipe's name). `--test-world TOKENS` adds the same
metrics on the token shards of a world never trained on, under `test_world/`. Splits are
docs/metrics.md#splits': choose settings on `val`, report `test`.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ochre.data.shards import index_digest, indexed_folder, read_index
from ochre.eval import rollouts as ro
from ochre.eval.dreamers import Codec, ModelDreamer, RepeatDreamer
from ochre.eval.intervals import put
from ochre.io import atomic_path, write_json_atomic
from ochre.models.precision import in_dtype
from ochre.models.sampling import SamplingConfig


@dataclass
class EvalConfig:
    split: str = "test"            # docs/metrics.md#splits: tune on val, report test
    rollouts: int = 100            # short (32-step) rollouts
    long_rollouts: int = 16        # 256-step rollouts
    spacing: int = 8               # frames between the starts of one trajectory's short rollouts
    seeds: tuple[int, ...] = (0, 1, 2)   # sampling-noise seeds; every short metric is their mean
    long_seeds: int = 1            # how many of the seeds the long rollouts use (each costs 8 short ones)
    learned: bool = True           # also `learned/`: the model with every decoding boost at 0 (first seed)
    learned_long: bool = True      # ... and its 256-step rollouts (as many model steps as its short ones)
    tours: int = 32                # tour contexts (synthetic worlds); 0: none
    world_tours: int | None = None  # tour contexts on the second world (default: tours)
    idm: bool = True               # action accuracy by the inverse-dynamics model
    idm_steps: int | None = None   # its training steps (default: ochre.eval.idm.IDMConfig's)
    c2st: bool = True              # realism by the classifier two-sample test
    calibrate: bool = False        # also the reference dreamers (oracle/, still/, random_codes/; docs/metrics.md)
    videos: int = 6                # rollouts in dream.mp4
    batch: int = 32                # rollouts stepped at once

    def __post_init__(self):
        self.seeds = tuple(self.seeds)
        if self.split not in ("train", "val", "test", "all"):
            raise ValueError(f"split must be train, val, test or all, got {self.split!r}")
        if not self.seeds or min(self.rollouts, self.batch) < 1 or self.long_rollouts < 0 or self.spacing < 1:
            raise ValueError(f"need seeds, rollouts >= 1, long_rollouts >= 0, spacing >= 1, batch >= 1: {self}")
        if self.world_tours is not None and self.world_tours < 0:
            raise ValueError(f"world_tours must be >= 0, got {self.world_tours}")
        if not 1 <= self.long_seeds <= len(self.seeds):
            raise ValueError(f"long_seeds must be between 1 and the number of seeds, got {self.long_seeds}")


@dataclass
class _Data:
    """A split's trajectories and rollout plan, and what every dreamer on them is compared with."""
    name: str                      # "" for the main split, "test_world" for the other world
    clips: Path
    trajs: list
    plan: ro.Plan
    recon: np.ndarray | None = None         # the tokenizer's reconstructions of the real short rollouts
    recon_long: np.ndarray | None = None    # ... of real frames of the long rollouts' trajectories
    idm: object = None                      # the inverse-dynamics model (ochre.eval.idm)
    idm_real: dict | None = None            # its accuracy on the real pairs
    tours: tuple | None = None              # the tour contexts and the renderer's truth, once made
    long_truth: ro.LongTruth | None = None  # what long rollouts are compared with, once made


@contextmanager
def _timed(log, what: str):
    """Log how long a part of the eval took (the demo's time budget is spent here)."""
    t0 = time.perf_counter()
    yield
    log(f"eval: {what} took {time.perf_counter() - t0:.0f} s")


def _data(tokens_root, clips, split: str, cfg: EvalConfig, name: str = "") -> _Data:
    index = read_index(tokens_root)
    clips = Path(clips) if clips else indexed_folder(tokens_root, "clips", index)
    trajs = ro.trajectories(clips, split)
    return _Data(name, clips, trajs, ro.make_plan(trajs, cfg.rollouts, cfg.long_rollouts, cfg.spacing))


def dreamer_metrics(dreamer, data: _Data, codec: Codec, k: int, cfg: EvalConfig, *, seeds=None,
                    long_seeds: int | None = None, extras: bool = True, tours: bool = False, fps: float = 8.0,
                    other: bool = True, other_frames: bool = False, log=print) -> tuple[dict, ro.Rollouts, dict]:
    """Every metric of one dreamer on one data set: rollouts (with intervals), and with `extras`
    action accuracy and realism, with `tours` the scripted tours -> (metrics, rollouts, tour arrays).
    other_frames: the first seed's replays of other actions decoded whole (for rollouts.npz)."""
    seeds = cfg.seeds if seeds is None else seeds
    name = f"{data.name + ' ' if data.name else ''}{dreamer.name}"
    with _timed(log, f"{name} rollouts ({len(seeds)} seeds)"):
        r = ro.roll(dreamer, data.trajs, data.plan, seeds, cfg.long_seeds if long_seeds is None else long_seeds,
                    other, other_frames)
        if data.long_truth is None and data.plan.long:      # made once per data set, for every dreamer
            data.long_truth = ro.long_truth(data.trajs, data.plan, lambda f: codec.encode(f).cpu().numpy(), k)
        m = ro.rollout_metrics(r, data.long_truth, k)
    if extras:
        with _timed(log, f"{name} action accuracy and realism"):
            m.update(_extras(r, data, codec, cfg))
    arrays = {}
    if tours and _tour_count(data, cfg):
        with _timed(log, f"{name} tours"):
            tm, arrays = _tours(dreamer, data, cfg, fps, log)
        m.update(tm)
    return m, r, arrays


def _extras(r: ro.Rollouts, data: _Data, codec: Codec, cfg: EvalConfig) -> dict:
    """idm/… and c2st@… of one dreamer's rollouts (its first seed)."""
    m: dict = {}
    if cfg.idm and data.idm is not None:
        from ochre.eval import idm

        dream = idm.accuracy(data.idm, r.dream[0], r.actions)
        for head, value in dream.items():
            m[f"idm/dream/{head}"] = value
            real = data.idm_real[head]
            m[f"idm/ratio_{head.removeprefix('acc_')}"] = value / real if real > 0 else float("nan")
    if cfg.c2st:
        from ochre.eval.c2st import c2st_interval

        put(m, "c2st@1-8", c2st_interval(r.dream[0][:, 1:9], data.recon[:, 1:9]))
        put(m, "c2st@9-32", c2st_interval(r.dream[0][:, 9:33], data.recon[:, 9:33]))
        if r.long_frames:
            put(m, "c2st@129-256", c2st_interval(r.long_frames[0], data.recon_long))
    return m


def _prepare_references(data: _Data, codec: Codec, tokens_root, cfg: EvalConfig, log, idm_model=None) -> dict:
    """What every dreamer on this data is compared with: the real rollouts, their reconstructions,
    the inverse-dynamics model (idm_model, else the one trained on tokens_root's train clips) and its
    accuracy on real pairs; -> the data's own metrics."""
    real, actions, _ = ro.real_frames(data.trajs, data.plan)
    data.recon = codec.reconstruct(real) if cfg.c2st else None
    data.recon_long = None
    m: dict = {}
    put(m, "real/yaw_response", ro.real_yaw_response(ro.Rollouts(real, actions, None, [], [], [], [], [])))
    if cfg.c2st:
        from ochre.eval.c2st import c2st_interval

        long_real = np.stack([data.trajs[i].frames[:1 + ro.LONG - ro.LONG_FROM] for i, _ in data.plan.long]) \
            if data.plan.long else None
        data.recon_long = codec.reconstruct(long_real) if long_real is not None else None
        put(m, "tokenizer/c2st", c2st_interval(real[:, 1:], data.recon[:, 1:]))
    data.idm = None
    if cfg.idm:
        from ochre.eval import idm

        data.idm = idm_model or idm.load_or_train(data.clips, Path(tokens_root) / "idm", steps=cfg.idm_steps,
                                                  log=log, progress=False)
        data.idm_real = idm.accuracy(data.idm, real, actions)
        m.update({f"idm/real/{h}": v for h, v in data.idm_real.items()})
    return m


def _tour_count(data: _Data, cfg: EvalConfig) -> int:
    """Tour contexts on this data: cfg.world_tours on the second world when given, else cfg.tours."""
    return cfg.world_tours if data.name and cfg.world_tours is not None else cfg.tours


def _tours(dreamer, data: _Data, cfg: EvalConfig, fps: float, log) -> tuple[dict, dict]:
    """The tours of one dreamer (first noise seed); the contexts and the renderer's truth are made once
    per data set and shared by every dreamer."""
    from ochre.eval import tours

    if data.tours is None:
        contexts = tours.tour_contexts(data.clips, _sources(data), _tour_count(data, cfg))
        if isinstance(contexts, str):
            log(contexts)
        data.tours = (contexts, None if isinstance(contexts, str) else tours.render_truth(contexts, fps))
    contexts, truth = data.tours
    if isinstance(contexts, str):
        return {"tour/skipped": contexts}, {}
    seed = cfg.seeds[0]
    return tours.run_tours(lambda context, actions, true: dreamer.dream(context, actions, true, seed=seed)[0],
                           contexts, fps, truth=truth, progress=False)


def _sources(data: _Data) -> frozenset[str]:
    return frozenset(t.source for t in data.trajs)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {(f"{prefix}/{k}" if prefix else k): v for k, v in ro.public(metrics).items()}


def decoding_tokenizer(tokens_root, index: dict, tokenizer, device):
    """The tokenizer that decodes an eval: the token shards' own, or `tokenizer` if it makes the same
    codes (a decoder refined by `ochre train-tokenizer --decoder-of`; `Tokenizer.codes_digest`)."""
    from ochre.models.checkpoint import CheckpointError, codes_mismatch, load_tokenizer

    own = indexed_folder(tokens_root, "tokenizer_checkpoint", index)
    if tokenizer is None:
        return load_tokenizer(own, device)
    why = codes_mismatch(own, tokenizer)
    if why:
        raise CheckpointError(f"--tokenizer {why}; {tokens_root} was made with the former")
    return load_tokenizer(tokenizer, device)


def evaluate(ckpt, tokens_root, out, *, cfg: EvalConfig | None = None, compare=None, clips=None,
             test_world=None, device: str | None = None, sampling: dict | None = None, dtype: str = "fp32",
             tokenizer=None, dreamer_class=None, log=None) -> dict:
    """Write OUT/metrics.json, rollouts.npz, tours.npz, dream.mp4, tour.mp4 and psnr.png; return the
    metrics. dtype: the precision of the model's (and the decoder's) convolutions and linear layers,
    as a live backend runs them; the baselines stay fp32. tokenizer: decode with this checkpoint
    instead of the one the token shards name (`decoding_tokenizer`: it must make the same codes).
    dreamer_class: a ModelDreamer subclass that draws the model's dreams (probes of other decodings,
    e.g. bench/pair_decoding.py); the learned/ twin and the baselines stay as they are."""
    from ochre.models.checkpoint import checkpoint_hash, load_dynamics

    cfg = cfg or EvalConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    index = read_index(tokens_root)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = decoding_tokenizer(tokens_root, index, tokenizer, device)
    model, shipped, meta = load_dynamics(ckpt, device)
    decoding = SamplingConfig(**{**asdict(shipped), **(sampling or {})})     # overrides, for sweeps
    low_model, low_decoder = in_dtype((model, tokenizer), dtype)
    codec, plain = Codec(tokenizer, low_decoder), Codec(tokenizer)
    k = model.config.codebook_size
    dreamer = (dreamer_class or ModelDreamer)(meta["extra"].get("recipe", "model"), low_model, codec, decoding,
                                              cfg.batch)
    fps = float(index.get("fps", 8.0))

    worlds = [(_data(tokens_root, clips, cfg.split, cfg), tokens_root)]
    if test_world:
        worlds.append((_data(test_world, None, "all", cfg, "test_world"), test_world))
    metrics: dict = {}
    curves, arrays, tour_arrays = {}, None, {}
    for data, root in worlds:
        log(f"eval{' ' + data.name if data.name else ''}: {len(data.trajs)} trajectories, {len(data.plan.short)} "
            f"rollouts x {len(cfg.seeds)} seeds, {len(data.plan.long)} of {ro.LONG} steps")
        # One instrument for every world: the inverse-dynamics model of the main data's train split.
        with _timed(log, f"{data.name or cfg.split} references (reconstructions, action model)"):
            found = _prepare_references(data, plain, root, cfg, log,
                                        idm_model=worlds[0][0].idm if data.name else None)
        # The other world is a second opinion, at a third of the cost: the first noise seed.
        seeds = cfg.seeds[:1] if data.name else cfg.seeds
        m, r, ta = dreamer_metrics(dreamer, data, codec, k, cfg, seeds=seeds, tours=True, fps=fps,
                                   other_frames=not data.name, log=log)
        found.update(ro.public(m))
        tour_arrays = tour_arrays or ta
        repeat, *_ = dreamer_metrics(RepeatDreamer(plain), data, plain, k, cfg, seeds=(0,), long_seeds=1,
                                     extras=False, other=False, log=log)
        found.update({f"repeat_frame/{n}": v for n, v in ro.public(repeat).items()})
        found["repeat_frame/delta_psnr@16"] = 0.0
        found.update(ro.over_repeat(m, repeat))
        if cfg.learned:
            learned = ModelDreamer("learned", low_model, codec, replace(decoding, copy_boost=0.0, fill_boost=0.0),
                                   cfg.batch)
            short = data if cfg.learned_long else replace(data, plan=replace(data.plan, long=[]))
            lm, *_ = dreamer_metrics(learned, short, codec, k, cfg, seeds=cfg.seeds[:1], long_seeds=1, extras=False,
                                     log=log)
            found.update({f"learned/{n}": v for n, v in ro.public(lm).items()})
        if cfg.calibrate and not data.name:
            for name, rm in _references(data, plain, k, cfg, fps, log, skip=("repeat_frame",)).items():
                found.update({f"{name}/{n}": v for n, v in rm.items()})
        if not data.name:
            curves = {dreamer.name: m["curve"], "repeat_frame": repeat["curve"]}
            arrays = r
            if compare:
                other_model, other_sampling, other_meta = load_dynamics(compare, device)
                name = other_meta["extra"].get("recipe", "compare")
                cm, *_ = dreamer_metrics(ModelDreamer(name, other_model, plain, other_sampling, cfg.batch), data,
                                         plain, k, cfg, tours=True, fps=fps, log=log)
                found.update({f"{name}/{n}": v for n, v in ro.public(cm).items()})
                curves[name] = cm["curve"]
            found.update({"rollouts": len(data.plan.short), "rollouts@256": len(data.plan.long),
                          "trajectories": len(data.trajs)})
        metrics.update(_prefixed(data.name, found))
    metrics.update({"split": cfg.split, "seeds": list(cfg.seeds), "long_seeds": cfg.long_seeds,
                    "rollouts_asked": cfg.rollouts, "step": meta["step"], "world_hash": checkpoint_hash(meta["path"]),
                    "dtype": dtype, "tokens": index_digest(tokens_root),
                    "sources": index.get("sources_digest"), **asdict(decoding),
                    "motion_prior": model.config.motion_prior()})     # world_hash names the weights only
    _write(out, metrics, arrays, worlds[0][0], curves, tour_arrays, cfg)
    return metrics


def _write(out: Path, metrics: dict, r: ro.Rollouts, data: _Data, curves: dict, tour_arrays: dict,
           cfg: EvalConfig) -> None:
    from ochre.viz import dream_video, psnr_plot

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "rollouts.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, real=r.real, dream=r.dream[0], actions=r.actions.astype(np.float32),
                            dream_other=r.dream_other[0], other_actions=r.other_actions.astype(np.float32),
                            keys=np.array([data.trajs[i].key for i, _ in data.plan.short]),
                            starts=np.array([s for _, s in data.plan.short], np.int64))
    if tour_arrays:
        from ochre.eval.tours import tour_video

        with atomic_path(out / "tours.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **tour_arrays)
        tour_video(out / "tour.mp4", tour_arrays)
    n = cfg.videos
    dream_video(out / "dream.mp4", r.real[:n], r.dream[0][:n], r.actions[:n])
    psnr_plot(out / "psnr.png", curves)
    write_json_atomic(out / "metrics.json", metrics)        # last: its presence marks a finished eval


def run(args) -> int:
    from ochre.models.checkpoint import CheckpointError

    try:
        # One --flag per SamplingConfig field (ochre/cli.py), None where not given.
        overrides = {f.name: getattr(args, f.name) for f in fields(SamplingConfig) if getattr(args, f.name) is not None}
        cfg = EvalConfig(split=args.split, rollouts=args.rollouts, long_rollouts=args.long_rollouts,
                         seeds=tuple(args.seeds), long_seeds=min(args.long_seeds, len(args.seeds)),
                         learned=not args.no_learned, learned_long=not args.learned_short, tours=args.tours,
                         world_tours=args.world_tours, idm=not args.no_idm,
                         c2st=not args.no_c2st, calibrate=args.calibrate, idm_steps=args.idm_steps)
        metrics = evaluate(args.checkpoint, args.tokens, args.out, cfg=cfg, compare=args.compare, clips=args.clips,
                           test_world=args.test_world, device=args.device, sampling=overrides, dtype=args.dtype,
                           tokenizer=args.tokenizer)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"ochre eval: {e}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in metrics.items() if "/" not in k or k.startswith(("repeat_frame/psnr", "real/"))}
    print(json.dumps(shown, indent=2))
    print(f"wrote metrics.json ({len(metrics)} keys), rollouts.npz, dream.mp4 and psnr.png to {args.out}")
    return 0


REFERENCES = ("oracle", "repeat_frame", "still", "random_codes")


def _reference_dreamers(data: _Data, codec: Codec, k: int):
    """(name, dreamer, data, replays other actions, moves) of the calibration's reference dreamers:
    the oracle (the tokenizer's reconstruction of the truth: what a perfect world model scores; it
    has no truth past a trajectory's end, so no long rollouts, nor for other actions), the repeated
    frame, a still dream (the decoded context, never moving), uniform random codes. `moves`: whether
    its tours and action accuracy are run; random codes' read chance by construction, so they are
    judged by their realism (c2st) and rollouts only."""
    from dataclasses import replace as copy

    from ochre.eval.dreamers import OracleDreamer, RandomDreamer, StillDreamer

    truthful = copy(data, plan=copy(data.plan, long=[]))
    return (("oracle", OracleDreamer(codec), truthful, False, True),
            ("repeat_frame", RepeatDreamer(codec), data, False, True),
            ("still", StillDreamer(codec), data, True, True),
            ("random_codes", RandomDreamer(codec, k), data, True, False))


def _references(data: _Data, codec: Codec, k: int, cfg: EvalConfig, fps: float, log, skip=()) -> dict[str, dict]:
    out = {}
    for name, dreamer, on, other, moves in _reference_dreamers(data, codec, k):
        if name not in skip:
            log(f"calibration: {name}")
            m, *_ = dreamer_metrics(dreamer, on, codec, k, cfg if moves else replace(cfg, idm=False),
                                    seeds=cfg.seeds[:1], long_seeds=1, tours=moves, fps=fps, other=other, log=log)
            out[name] = ro.public(m)
    return out


def calibrate(tokens_root, runs: dict, *, cfg: EvalConfig, device: str | None = None, log=None) -> dict[str, dict]:
    """The calibration table (docs/metrics.md#calibration): every metric for the reference dreamers
    (REFERENCES) and for the world-model runs given by name (e.g. the shipped model, seed-v3, the
    action-blind recipe), on cfg.split of `tokens_root` -> {name: metrics}."""
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    log = log or (lambda msg: print(msg, file=sys.stderr))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    index = read_index(tokens_root)
    codec = Codec(load_tokenizer(indexed_folder(tokens_root, "tokenizer_checkpoint", index), device))
    k, fps = int(index["codebook_size"]), float(index.get("fps", 8.0))
    data = _data(tokens_root, None, cfg.split, cfg)
    shared = _prepare_references(data, codec, tokens_root, cfg, log)
    table = {name: {**shared, **m} for name, m in _references(data, codec, k, cfg, fps, log).items()}
    for name, run in runs.items():
        log(f"calibration: {name} ({run})")
        model, sampling, _ = load_dynamics(run, device)
        m, *_ = dreamer_metrics(ModelDreamer(name, model, codec, sampling, cfg.batch), data, codec, k, cfg, tours=True,
                                fps=fps, log=log)
        table[name] = {**shared, **ro.public(m)}
    return table
