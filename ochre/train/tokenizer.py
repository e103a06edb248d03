"""`ochre train-tokenizer`: the VQ-VAE on random frames from clip shards.

One step: compute_loss (compiled with --compile; bf16 autocast where the hardware has bf16 units,
ochre.device.train_precision) -> backward -> clip
-> AdamW -> update_codebook (eager: EMA + dead-code restarts, all-reduced under DDP).
Resuming is exact: the checkpoint holds weights, codebook buffers, optimizer state, the step
and the data position (epoch, batch in epoch); the frame stream is a pure function of
(seed, epoch, rank, workers), so the resumed run sees the batches the first run would have.
It also holds the run's record (`run_record`), and a resume with another preset, batch, seed,
worker or rank count or data set is refused before any work (ochre.train.run_folder).
Pieces: start_run (checks, model, optimizer, checkpoint) -> train_loop (_train_step) -> evaluate.

--decoder-of TOK refines a trained tokenizer's decoder alone: the run starts from TOK's weights and
codebook, trains only the decoder (the encoder frozen, the codebook never updated), so every frame
gets TOK's codes (`Tokenizer.codes_digest` is unchanged): TOK's token shards, and the world models
trained on them, stay valid, and only what a player sees of their codes changes. --decoder-blocks
gives the decoder more residual blocks than TOK's; they start as the identity (`grow_decoder`).
--adversarial W adds a patch discriminator's hinge loss to the refinement (ochre.models.discriminator):
after --disc-warmup steps of the discriminator training alone, each step updates the decoder on its
reconstruction loss + W · (adaptive weight) · adversarial loss, then the discriminator on real frames
against the step's reconstructions. The discriminator and its optimizer are saved in every
checkpoint (`companions`), so the resume is exact; shipping the decoder leaves them behind.
--dream-codes BANK (with --adversarial): the fakes the discriminator judges, and the decoder's adversarial
term, are the decoder's pictures of code grids a world model dreamed (bench/dream_decoder.py makes the
bank from train-split rollouts) instead of its reconstructions: a decoder taught to paint the codes
the dynamics actually draws, while the reconstruction loss keeps it faithful to real codes. Each step
draws its grids from the bank by a generator seeded with (seed, rank, step), so a resume draws the same.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ochre.data.loader import Split, eval_frames, frame_batches, rank_frame_count
from ochre.data.shards import index_digest, read_index
from ochre.device import train_autocast, train_precision
from ochre.images import grid, save_png
from ochre.io import write_json_atomic
from ochre.models.checkpoint import CheckpointError, checkpoint_hash, load_tokenizer, read_checkpoint_config
from ochre.models.discriminator import PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from ochre.models.tokenizer import Tokenizer, TokenizerConfig, TokenizerTrainConfig, grow_decoder
from ochre.train import checkpoint as ckpt
from ochre.train.common import RunLogger, cosine_lr
from ochre.train.distributed import DistInfo, check_ranks_agree, mean_across_ranks, setup, teardown
from ochre.train.run_folder import RunMismatch, check_every_rank_has_data, claim_run_folder, truncate_log


class _LossModule(torch.nn.Module):
    """DDP syncs gradients only through forward(); route compute_loss through it."""

    def __init__(self, model: Tokenizer):
        super().__init__()
        self.model = model

    def forward(self, frames, with_recon: bool = False):
        return self.model.compute_loss(frames, with_recon=with_recon)


# ---- what a run is, and where it starts -----------------------------------------------------

RUN_OUTPUTS = ("checkpoints", "log.jsonl", "tb", "metrics.json", "recon.png")


def run_record(clips, cfg: TokenizerConfig, tcfg: TokenizerTrainConfig, *, seed: int, workers: int,
               ranks: int, decoder_of: str | None = None, dream_codes: str | None = None) -> dict:
    """Everything that must match for --resume to continue the exact run: the model, the training
    settings, the seed, the data stream's shape (loader workers, ranks) and the data set itself (and,
    refining a decoder, the hash of the tokenizer it started from).
    `steps` may grow on resume (the cosine schedule then follows the new total); `impl` and
    --compile pick kernels, not results."""
    # decoder_blocks only where set: runs recorded before it existed resume unchanged
    model = {k: v for k, v in asdict(cfg).items() if k != "impl" and not (k == "decoder_blocks" and v is None)}
    train = {k: v for k, v in asdict(tcfg).items() if k != "steps"}
    if not tcfg.adversarial:            # runs recorded before the adversarial term existed resume unchanged
        train = {k: v for k, v in train.items() if k not in ("adversarial", "disc_warmup", "disc_lr")}
    inputs = {"clips": index_digest(clips)}
    if decoder_of is not None:
        inputs["decoder_of"] = decoder_of
    if dream_codes is not None:
        inputs["dream_codes"] = dream_codes
    return {"kind": "tokenizer-run",
            "config": {**train, "seed": seed, "workers": workers, "ranks": ranks, "model": model},
            "inputs": inputs}


@dataclass
class _Run:
    """One process's training state: what the loop advances and the checkpoints save."""
    info: DistInfo
    out: Path
    model: Tokenizer
    opt: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    batches: Iterator
    record: dict
    step: int = 0
    precision: str = "fp32"     # of the train step (ochre.device.train_precision)
    decoder_of: dict | None = None  # refining a decoder: {"checkpoint": hash, "codes": codes_digest}
    disc: PatchDiscriminator | None = None          # with --adversarial
    disc_opt: torch.optim.Optimizer | None = None
    dreams: torch.Tensor | None = None              # with --dream-codes: (N, h, w) int16 code grids
    seed: int = 0

    def companions(self) -> dict:
        return _companions(self.disc, self.disc_opt)


def start_run(clips, out, cfg: TokenizerConfig, tcfg: TokenizerTrainConfig, info: DistInfo, *, seed: int,
              compile: bool, resume: bool, overwrite: bool, workers: int, decoder_of=None, dream_codes=None) -> _Run:
    """Check the run folder and the data, build model and optimizer, restore a checkpoint.
    decoder_of: a tokenizer checkpoint (or run) whose decoder alone this run trains (cfg is its config).
    dream_codes: a bank of dreamed code grids (.npz) whose pictures the discriminator judges (module doc)."""
    out = Path(out)
    if tcfg.adversarial and decoder_of is None:
        raise ValueError("--adversarial refines a trained decoder; pass --decoder-of TOKENIZER")
    if dream_codes is not None and not tcfg.adversarial:
        raise ValueError("--dream-codes are judged by the discriminator; pass --adversarial W")
    index = read_index(clips)                   # a wrong path fails here, before any work
    dreams = read_dream_bank(dream_codes, cfg) if dream_codes is not None else None
    source = checkpoint_hash(decoder_of) if decoder_of is not None else None
    record = run_record(clips, cfg, tcfg, seed=seed, workers=workers, ranks=info.world, decoder_of=source,
                        dream_codes=None if dreams is None else _file_hash(dream_codes))
    latest = claim_run_folder(out, record, info, resume=resume, overwrite=overwrite, outputs=RUN_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # channels_last: 1.3x on a 2-core CPU for the tiny preset (118 vs 92 frames/s at B=32), and the
    # layout cuDNN's bf16 convolutions prefer on GPU.
    model = Tokenizer(cfg).to(info.device, memory_format=torch.channels_last)
    params, refine = list(model.parameters()), None
    if decoder_of is not None:
        grow_decoder(model, load_tokenizer(decoder_of))       # TOK's weights; added decoder blocks: identity
        refine = {"checkpoint": source, "codes": model.codes_digest()}
        params = model.freeze_codes()
    opt = torch.optim.AdamW(params, lr=tcfg.lr, betas=(0.9, 0.99), weight_decay=tcfg.weight_decay)
    disc = disc_opt = None
    if tcfg.adversarial:
        disc = PatchDiscriminator().to(info.device, memory_format=torch.channels_last)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=tcfg.disc_lr, betas=(0.5, 0.9))
    step, epoch, skip = (_restore(latest, model, opt, info, _companions(disc, disc_opt)) if latest is not None
                         else (0, 0, 0))
    if refine is not None and model.codes_digest() != refine["codes"]:
        raise CheckpointError(f"{latest}: its encoder or codebook differ from those of {decoder_of}, whose "
                              "decoder this run refines; start afresh with --overwrite")
    here = rank_frame_count(index, rank=info.rank, world=info.world, seed=seed, epoch=epoch)
    check_every_rank_has_data(clips, here, tcfg.batch, len(index["shards"]))
    loss_fn = _LossModule(model)
    if info.world > 1:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if compile:
        loss_fn = torch.compile(loss_fn)
    batches = frame_batches(clips, tcfg.batch, seed=seed, split="train", workers=workers,
                            dist=Split(info.rank, info.world), start_epoch=epoch, skip=skip)
    return _Run(info, out, model, opt, loss_fn, batches, record, step, decoder_of=refine, disc=disc,
                disc_opt=disc_opt, dreams=dreams, seed=seed)


def _companions(disc, disc_opt) -> dict:
    """What a checkpoint saves beside the model: the discriminator and its optimizer, when there is one."""
    return {"discriminator": (disc, disc_opt)} if disc is not None else {}


def read_dream_bank(path, cfg: TokenizerConfig) -> torch.Tensor:
    """The code grids (N, h, w) of a dream bank (bench/dream_decoder.py), checked against the tokenizer."""
    try:
        with np.load(path) as bank:
            codes = bank["codes"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a dream bank (an .npz with `codes`): {e}") from e
    if codes.ndim != 3 or not len(codes):
        raise ValueError(f"{path}: `codes` must be a non-empty (N, h, w) array, got shape {codes.shape}")
    if int(codes.max()) >= cfg.codebook_size:
        raise ValueError(f"{path}: holds code {int(codes.max())}, outside this tokenizer's {cfg.codebook_size} codes")
    return torch.from_numpy(codes.astype(np.int16))


def _file_hash(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _restore(latest: Path, model: Tokenizer, opt: torch.optim.Optimizer, info: DistInfo,
             companions: dict | None = None) -> tuple[int, int, int]:
    """Load a checkpoint into model and optimizer (and companions), restore the RNGs; returns (step, epoch,
    batch in epoch)."""
    meta = ckpt.load_checkpoint(latest, model, opt, companions=companions)
    extra = meta["extra"]
    ckpt.restore_rng_state(extra["rng"])
    if info.is_main:
        truncate_log(latest.parent.parent, meta["step"])
        print(f"resuming from {latest} at step {meta['step']}", file=sys.stderr)
    return meta["step"], extra["epoch"], extra["batch_in_epoch"]


# ---- the loop ----------------------------------------------------------------------------------

def _train_step(run: _Run, frames: torch.Tensor, tcfg: TokenizerTrainConfig, autocast) -> tuple:
    """One optimizer step; returns (loss, grad_norm, logs) as detached tensors (no host sync)."""
    frames = frames.to(run.info.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    for group in run.opt.param_groups:
        group["lr"] = cosine_lr((run.step + 1) / tcfg.steps, tcfg.lr, tcfg.warmup / tcfg.steps)
    if run.disc is not None:
        loss, grad_norm, logs = _adversarial_step(run, frames, tcfg, autocast)
    else:
        with autocast:
            loss, logs = run.loss_fn(frames)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip)
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
    if run.decoder_of is None:
        logs = run.model.update_codebook(logs)
    else:                                       # the codebook stays TOK's: drop its statistics
        logs = {k: v for k, v in logs.items() if not k.startswith("vq/")}
    run.step += 1
    return loss.detach(), grad_norm, logs


def _adversarial_step(run: _Run, frames: torch.Tensor, tcfg: TokenizerTrainConfig, autocast) -> tuple:
    """The decoder's step on reconstruction (+ adversarial, after the warm-up) loss, then the
    discriminator's on real frames against this step's reconstructions (module doc)."""
    disc, adversarial = run.disc, run.step >= tcfg.disc_warmup
    disc.requires_grad_(False)
    with autocast:
        loss, logs, recon = run.loss_fn(frames, with_recon=True)
        fake = recon if run.dreams is None else _paint(run, _dream_batch(run, len(frames)))
        if adversarial:
            g_loss = hinge_g_loss(disc(fake))
            weight = tcfg.adversarial * adaptive_weight(loss, g_loss, run.model.decoder[-1].weight)
            logs.update({"adv/g_loss": g_loss.detach(), "adv/weight": weight})
            loss = loss + weight * g_loss
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)

    disc.requires_grad_(True)
    real = run.model.normalize(frames)
    with autocast:
        real_logits, fake_logits = disc(real), disc(fake.detach())
        d_loss = hinge_d_loss(real_logits, fake_logits)
    d_loss.backward()
    if run.info.world > 1:                       # the discriminator is not DDP-wrapped: average by hand
        for p in disc.parameters():
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
    run.disc_opt.step()
    run.disc_opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        logs.update({"adv/d_loss": d_loss.detach(), "adv/real_acc": (real_logits > 0).float().mean(),
                     "adv/fake_acc": (fake_logits < 0).float().mean(),
                     "grad_ratio": _edges(recon.detach().clamp(-1, 1)).sum() / _edges(real).sum()})
        if run.dreams is not None:
            logs["dream_grad_ratio"] = _edges(fake.detach().clamp(-1, 1)).sum() / _edges(real).sum()
    return loss.detach(), grad_norm, logs


def _dream_batch(run: _Run, n: int) -> torch.Tensor:
    """n grids of the dream bank, drawn by a generator seeded with (seed, rank, step): a resume draws the same."""
    gen = torch.Generator().manual_seed(hash((run.seed, run.info.rank, run.step)) & 0x7FFF_FFFF_FFFF_FFFF)
    return run.dreams[torch.randint(len(run.dreams), (n,), generator=gen)].long().to(run.info.device)


def _paint(run: _Run, codes: torch.Tensor) -> torch.Tensor:
    """The decoder's pictures of code grids (B, h, w), in the graph: (B, 3, H, W) in [-1, 1] space."""
    zq = run.model.codebook[codes].permute(0, 3, 1, 2)                               # (B, D, h, w)
    return run.model.decoder(zq.contiguous(memory_format=torch.channels_last))


def train_loop(run: _Run, tcfg: TokenizerTrainConfig, *, seed: int, ckpt_every: int, log_every: int,
               keep: int, progress: bool) -> None:
    from tqdm import tqdm

    info = run.info
    logger = RunLogger(run.out, info.is_main)
    autocast = train_autocast(info.device, run.precision)
    bar = tqdm(total=tcfg.steps, initial=run.step, desc="tokenizer", unit="step",
               disable=not (progress and info.is_main), file=sys.stderr)
    t_log, frames_seen = time.perf_counter(), 0
    run.model.train()
    while run.step < tcfg.steps:
        epoch, n, frames = next(run.batches)
        loss, grad_norm, logs = _train_step(run, frames, tcfg, autocast)
        frames_seen += len(frames) * info.world
        bar.update()
        if run.step % log_every == 0 or run.step == tcfg.steps:
            logs = mean_across_ranks({"loss": loss, "grad_norm": grad_norm, **logs})
            values = {k: float(v) for k, v in logs.items()}          # sync point: once per log interval
            values["lr"] = cosine_lr(run.step / tcfg.steps, tcfg.lr, tcfg.warmup / tcfg.steps)
            values["frames_per_s"] = frames_seen / (time.perf_counter() - t_log)
            values["precision"] = run.precision
            t_log, frames_seen = time.perf_counter(), 0
            logger.log(run.step, values)
            bar.set_postfix(loss=f"{values['loss']:.4f}", psnr=f"{values['psnr']:.1f}",
                            usage=f"{values['codebook_usage']:.2f}")
        if (run.step % ckpt_every == 0 or run.step == tcfg.steps) and info.is_main:
            ckpt.save_checkpoint(run.out, run.step, run.model, run.opt, keep=keep, companions=run.companions(),
                                 extra={"epoch": epoch, "batch_in_epoch": n + 1, "seed": seed,
                                        "train": asdict(tcfg), "rng": ckpt.capture_rng_state(),
                                        "run": run.record, "decoder_of": run.decoder_of})
    bar.close()


def train(clips, out, cfg: TokenizerConfig, tcfg: TokenizerTrainConfig, *, seed: int = 0,
          compile: bool = False, resume: bool = False, overwrite: bool = False, workers: int = 0,
          device: str | None = None, ckpt_every: int = 200, log_every: int = 25, keep: int = 3,
          progress: bool = True, eval_frames_n: int = 512, precision: str = "auto", decoder_of=None,
          dream_codes=None) -> dict:
    """Train (or resume) a tokenizer run in `out`; returns the held-out metrics (rank 0; {} elsewhere).
    precision: of the train step (ochre.device.train_precision); the held-out metrics are fp32.
    decoder_of: refine that tokenizer's decoder alone (module doc); cfg must be its config."""
    info = setup(device)
    run = start_run(clips, out, cfg, tcfg, info, seed=seed, compile=compile, resume=resume,
                    overwrite=overwrite, workers=workers, decoder_of=decoder_of, dream_codes=dream_codes)
    if run.decoder_of is not None and info.is_main:
        print(f"refining the decoder of {decoder_of} (codes {run.decoder_of['codes']}): its encoder and "
              "codebook stay as they are", file=sys.stderr)
    run.precision = train_precision(info.device, precision)
    train_loop(run, tcfg, seed=seed, ckpt_every=ckpt_every, log_every=log_every, keep=keep, progress=progress)
    if info.world > 1:
        check_ranks_agree(run.model)
    metrics = evaluate(run.model, clips, run.out, n=eval_frames_n) if info.is_main else {}
    teardown()
    return metrics


def _edges(frames: torch.Tensor) -> torch.Tensor:
    """Per frame, mean |∂x| + |∂y| of the grey image of (N, 3, H, W) frames (as ochre.eval's grad_ratio;
    any one scale: only ratios are read) -> (N,) float64."""
    g = frames.double().mean(dim=1)
    return g.diff(dim=-1).abs().mean(dim=(1, 2)) + g.diff(dim=-2).abs().mean(dim=(1, 2))


@torch.no_grad()
def reconstruct(model: Tokenizer, frames: torch.Tensor, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames (n, 3, H, W) -> their codes (n, h, w) and reconstructions, uint8 (n, 3, H, W), on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    codes, recon = [], []
    for i in range(0, len(frames), batch):
        c = model.encode(frames[i:i + batch].to(device))                    # (b, h, w)
        codes.append(c.cpu())
        recon.append(model.decode(c, as_uint8=True).cpu())                  # (b, 3, H, W)
    return torch.cat(codes), torch.cat(recon)


def frame_scores(frames: torch.Tensor, recon: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame of uint8 (N, 3, H, W) frames and their reconstructions: PSNR, and the image gradient
    (`_edges`) of the reconstruction and of the frame -> three (N,) float64 arrays. recon_psnr is the
    mean of the first, recon_grad_ratio (blur < 1) the ratio of the others' sums."""
    err = (recon.float() - frames.float()).div(255).square().mean(dim=(1, 2, 3))
    psnr = (-10 * torch.log10(err.clamp_min(1e-10))).double().numpy()
    return psnr, _edges(recon).numpy(), _edges(frames).numpy()


@torch.no_grad()
def evaluate(model: Tokenizer, clips, out: Path, n: int = 512, batch: int = 128, split: str = "test") -> dict:
    """Held-out reconstruction: recon_psnr, recon_grad_ratio (`frame_scores`), codebook usage and
    perplexity -> metrics.json, and originals over reconstructions -> recon.png. The frames are spread
    evenly over every trajectory of the split (ochre.data.loader.eval_frames)."""
    frames = eval_frames(clips, n, split=split)                              # (n, 3, H, W) uint8
    codes, recon = reconstruct(model, frames, batch)
    K = model.config.codebook_size
    counts = torch.bincount(codes.flatten(), minlength=K).double()
    p = counts / counts.sum()
    psnr, fake, real = frame_scores(frames, recon)
    metrics = {
        "recon_psnr": float(psnr.mean()),
        "recon_grad_ratio": float(fake.sum() / real.sum()),
        "codebook_perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())),
        "codebook_usage": float((counts > 0).double().mean()),
        "codes_used": int((counts > 0).sum()),
        "eval_frames": len(frames),
    }
    write_json_atomic(out / "metrics.json", metrics)
    pick = torch.linspace(0, len(frames) - 1, min(8, len(frames))).long()     # spread over the clips
    picture = grid([frames[pick].permute(0, 2, 3, 1).numpy(), recon[pick].permute(0, 2, 3, 1).numpy()])
    save_png(out / "recon.png", np.ascontiguousarray(picture))
    return metrics


def run(args) -> int:
    overrides = {k: v for k, v in (("steps", args.steps), ("batch", args.batch), ("lr", args.lr),
                                   ("adversarial", args.adversarial), ("disc_warmup", args.disc_warmup))
                 if v is not None}
    decoder_of = args.decoder_of
    if args.dream_codes and not args.adversarial:
        print("ochre train-tokenizer: --dream-codes are judged by the discriminator; pass --adversarial W",
              file=sys.stderr)
        return 2
    for flag, given in (("--decoder-blocks", args.decoder_blocks), ("--adversarial", args.adversarial)):
        if given and decoder_of is None:
            print(f"ochre train-tokenizer: {flag} refines a trained decoder; pass --decoder-of TOKENIZER",
                  file=sys.stderr)
            return 2
    try:
        tcfg = TokenizerTrainConfig.preset(args.preset, **overrides)
        if decoder_of is not None:          # the model is TOK's; --preset picks only the training defaults
            meta = read_checkpoint_config(decoder_of)
            if meta.get("kind") != "tokenizer":
                raise CheckpointError(f"--decoder-of {decoder_of}: holds a {meta.get('kind')!r} checkpoint, "
                                      "not a tokenizer")
            blocks = args.decoder_blocks
            cfg = TokenizerConfig(**{**meta["config"], **({"decoder_blocks": blocks} if blocks else {})})
        else:
            cfg = TokenizerConfig.preset(args.preset)
        metrics = train(args.clips, args.out, cfg, tcfg, seed=args.seed, compile=args.compile,
                        resume=args.resume, overwrite=args.overwrite, workers=args.workers,
                        device=args.device, ckpt_every=args.ckpt_every, log_every=args.log_every,
                        keep=args.keep, precision=args.precision, decoder_of=decoder_of,
                        dream_codes=args.dream_codes)
    except (FileNotFoundError, ValueError, CheckpointError) as e:     # ValueError: RunMismatch too
        print(f"ochre train-tokenizer: {e}", file=sys.stderr)
        return 2
    if metrics:
        print(json.dumps(metrics, indent=2))
        print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'recon.png'}")
    return 0


__all__ = ["train", "start_run", "train_loop", "evaluate", "reconstruct", "frame_scores", "run", "run_record",
           "RunMismatch"]
