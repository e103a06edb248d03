"""The `ochre` command line: flags map onto each component's config; the work lives elsewhere.

Parsers are declared here so `ochre --help` is instant; each command's module is imported
only when that command runs (torch alone takes a second to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ochre import choices


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="render a procedural Minecraft-like world into real MineRL/VPT-layout recordings",
        description="Render N episodes of a deterministic voxel world driven by a balanced random "
        "policy (turning, looking up/down, walking every way, standing still), written in the "
        "MineRL v0 or VPT contractor layout so `ochre prepare` reads them like real data.",
    )
    p.add_argument("out", help="output folder (created); one recording per episode")
    p.add_argument("--episodes", type=_positive_int, default=16, help="number of episodes (default 16)")
    p.add_argument("--steps", type=_positive_int, default=400, help="ticks per episode at 20 Hz (default 400)")
    p.add_argument("--seed", type=int, default=0, help="world and policy seed (default 0)")
    p.add_argument("--layout", choices=choices.LAYOUTS, default="minerl", help="recording layout")
    p.add_argument("--size", type=_positive_int, default=64, help="rendered frame size in pixels (default 64)")
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all cores)")
    p.set_defaults(_run="ochre.data.synth:run")


def _add_record(sub) -> None:
    p = sub.add_parser(
        "record",
        help="record a real voxel game (Luanti) headless, with exact actions, in the VPT layout",
        description="Record footage of a real game with the actions it performed (docs/recording.md).",
    )
    rsub = p.add_subparsers(dest="record_command", required=True, metavar="{luanti}")
    r = rsub.add_parser(
        "luanti",
        help="drive Luanti (Minetest) on private X displays and write NAME.mp4 + NAME.jsonl per episode",
        description="Run Luanti (Debian: `apt-get install minetest xvfb libxtst6`) on its own X display per "
        "worker, with a private seeded world (creative, no damage, no sound, noon, server on 127.0.0.1), and "
        "drive the player with `ochre synth`'s balanced behaviours plus jumps, one game step per recorded frame "
        "(20 frames/s). Writes the VPT layout `ochre prepare` reads: NAME.mp4 + NAME.jsonl with one action line "
        "per frame, labelled with what the game did (its own pose log, also in each line's \"pose\"), and "
        "NAME.episode.json. A rerun keeps finished episodes and redoes a half-written one; a rerun with other "
        "settings is refused (--overwrite replaces the folder). Nothing the recorder starts outlives it.",
    )
    r.add_argument("out", help="output folder (created)")
    r.add_argument("--episodes", type=_positive_int, default=16, help="episodes (default 16; a rerun may add more)")
    r.add_argument("--steps", type=_positive_int, default=400, help="steps (frames) per episode at 20 Hz (default 400)")
    r.add_argument("--seed", type=int, default=0, help="map seed and the episodes' starts and plans (default 0)")
    r.add_argument("--size", default="64", help="frame size: N for NxN, or WxH (default 64)")
    r.add_argument("--hud", action=argparse.BooleanOptionalAction, default=False,
                   help="show the hotbar, crosshair and wielded hand (default: a plain view)")
    r.add_argument("--workers", type=_positive_int, default=1,
                   help="games recording at once, each on its own X display (default 1; README: rates per core)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it was recorded with other settings (default: refuse)")
    r.set_defaults(_run="ochre.data.luanti.record:run")


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="recordings (MineRL/VPT) -> aligned 64x64 clip shards",
        description="Find MineRL and VPT recordings anywhere under SRC, align frames and actions "
        "(skipping MineRL loading frames), resample to --fps, and write webdataset clip shards "
        "plus index.json and report.json (every skipped input with its reason). Rerunning after "
        "an interruption finishes the shards that are missing; a rerun with other settings or "
        "sources into the same OUT is refused (--overwrite replaces it). With --engine ray each recording "
        "is one task on a Ray cluster whose nodes all see SRC and OUT at the same paths.",
    )
    p.add_argument("src", help="folder holding recordings (searched recursively)")
    p.add_argument("out", help="output folder")
    p.add_argument("--fps", type=_positive_float, default=8.0, help="kept frames per second (default 8)")
    p.add_argument("--size", type=_positive_int, default=64, help="frame size in pixels (default 64)")
    p.add_argument("--segment", type=_positive_int, default=128,
                   help="max kept frames per clip sample; longer trajectories are split (default 128)")
    p.add_argument("--per-shard", type=_positive_int, default=4,
                   help="recordings per shard (default 4; keep shards >= ranks x workers)")
    _add_engine_flags(p, "recording")
    p.add_argument("--crop", choices=choices.CROPS, default="center",
                   help="non-square video (VPT's 16:9): centre square crop (default) or squash the whole frame")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it was prepared with other settings or sources (default: refuse)")
    p.set_defaults(_run="ochre.data.prepare:run")


def _add_engine_flags(p, unit: str, local: str = "processes (default: all cores)") -> None:
    """Where a data stage's work runs: this machine's processes, or a Ray cluster (docs/scale.md)."""
    p.add_argument("--engine", choices=choices.ENGINES, default="local",
                   help=f"local: processes on this machine (default); ray: one Ray task per {unit} (the [ray] "
                   "extra); the outputs are byte-identical either way")
    p.add_argument("--address", default=None,
                   help="--engine ray: the cluster's head, HOST:PORT or 'auto' (default: start a private "
                   "cluster on this machine)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help=f"local: {local}; ray: tasks at once (default: the cluster's CPUs, or GPUs with "
                   "--device cuda)")


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect prepared data")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{check}")
    c = dsub.add_parser(
        "check",
        help="alignment self-test: yaw/pitch vs image shift at lags -5..+5",
        description="Correlate yaw with the horizontal shift (phase correlation) of consecutive "
        "frames, and pitch with the vertical shift, at lags -5..+5. Exits 0 when the two together (the "
        "mean of their correlations) peak at lag 0 and neither alone peaks elsewhere in 95 % of block "
        "resamples of its pairs (a weak action's chance peak beside lag 0 is reported as within noise), "
        "1 otherwise, 3 when yaw or pitch never moves in the data (nothing to check) — run it before training.",
    )
    c.add_argument("prepared", help="output folder of `ochre prepare`")
    c.add_argument("--max-samples", type=_positive_int, default=64, help="clips to read (default 64)")
    c.add_argument("--max-lag", type=_positive_int, default=5, help="largest lag (default 5)")
    c.set_defaults(_run="ochre.data.check:run")


def _add_train_tokenizer(sub) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train the VQ-VAE tokenizer on clip shards",
        description="Train the VQ-VAE (64x64 frames -> 16x16 codes) on random frames from clip "
        "shards. Checkpoints are atomic; --resume continues the exact run.",
    )
    p.add_argument("clips", help="output folder of `ochre prepare`")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, metrics)")
    p.add_argument("--preset", choices=choices.TOKENIZER_PRESETS, default="tiny",
                   help="model size: tiny (demos, tests), small (the shipped model), base (GPU); default tiny")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps (default: preset's)")
    p.add_argument("--batch", type=_positive_int, default=None, help="frames per step (default: preset's)")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (default: preset's)")
    p.add_argument("--decoder-of", default=None, metavar="TOKENIZER",
                   help="refine the decoder of this trained tokenizer (checkpoint or run folder) alone: its "
                   "encoder and codebook are kept, so it makes the same codes and its token shards and world "
                   "models stay valid; only the frames a player sees change. The model is TOKENIZER's "
                   "(--preset sets only the training settings: steps, batch, lr, warm-up)")
    p.add_argument("--decoder-blocks", type=int, nargs=3, default=None, metavar=("N64", "N32", "N16"),
                   help="with --decoder-of: residual blocks of the refined decoder at 64x64, 32x32 and 16x16, at "
                   "least TOKENIZER's; the added blocks start as the identity, so training starts from TOKENIZER's "
                   "frames")
    p.add_argument("--adversarial", type=_positive_float, default=None, metavar="W",
                   help="with --decoder-of: add a patch discriminator's hinge loss (no pretrained network), weighted "
                   "W times the weight at which it pulls the decoder's last layer as hard as the reconstruction "
                   "loss does (VQGAN's adaptive weight): sharper frames for some PSNR. Default: off")
    p.add_argument("--disc-warmup", type=int, default=None, metavar="N",
                   help="with --adversarial: steps the discriminator trains alone first (default 500)")
    p.add_argument("--dream-codes", default=None, metavar="BANK",
                   help="with --adversarial: the discriminator judges the decoder's pictures of these dreamed code "
                   "grids (an .npz from `python -m ochre.bench.dream_decoder bank`) against real frames, instead of "
                   "its reconstructions: a decoder taught to paint the codes a world model draws")
    _add_run_flags(p)
    p.set_defaults(_run="ochre.train.tokenizer:run")


def _add_run_flags(p) -> None:
    """What every training command shares: seed, compile, the run folder's rules, DDP data, checkpoints."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the train step")
    p.add_argument("--precision", choices=choices.TRAIN_PRECISIONS, default="auto",
                   help="the train step's precision: bf16 autocast (convolutions and matrix products in bf16; "
                   "weights, losses and reductions fp32) or fp32. auto (default): bf16 on a GPU; on a CPU with "
                   "AMX bf16 units, bf16 for the tokenizer (its step about 2x faster on 2 cores) and fp32 for the "
                   "world model (its compiled bf16 step gains 1.15x but compiles minutes longer); else fp32")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly (refused, in one line, if its settings or data differ)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run in --out and start afresh (default: refuse without --resume)")
    p.add_argument("--workers", type=int, default=0, help="data loader workers per rank (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--ckpt-every", type=_positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--log-every", type=_positive_int, default=25, help="steps between log lines")
    p.add_argument("--keep", type=_positive_int, default=3, help="checkpoints kept (default 3)")


def _add_tokenize(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="clip shards -> token shards with a trained tokenizer",
        description="Encode every clip into 16x16 code grids (uint16) with the tokenizer checkpoint; "
        "writes token shards in the clip shards' layout, recording the tokenizer's hash. With --engine ray "
        "each clip shard is one task on a Ray cluster whose nodes all see CLIPS, --tokenizer and --out at the "
        "same paths.",
    )
    p.add_argument("clips", help="output folder of `ochre prepare`")
    p.add_argument("--tokenizer", required=True, help="tokenizer run folder or checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch", type=_positive_int, default=256, help="frames per forward (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if present)")
    _add_engine_flags(p, "clip shard", local="ignored (one process, every core for torch)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when it holds tokens of other clips or another tokenizer (default: refuse)")
    p.set_defaults(_run="ochre.tokenize:run")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the world model (FiLM-ConvGRU dynamics) on token shards",
        description="Train the dynamics model on windows of token shards: teacher-forced context, "
        "then an autoregressive unroll on the model's own samples that grows by a curriculum, with "
        "token noise and action dropout (recipe ochre), or the earlier prototype's recipe (seed-v3) "
        "as a baseline. Checkpoints are atomic; --resume continues the exact run; "
        "`torchrun --nproc-per-node G ochre train ...` for DDP.",
    )
    p.add_argument("tokens", help="output folder of `ochre tokenize`")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, tb/)")
    p.add_argument("--preset", choices=choices.PRESETS, default="tiny", help="model size (default tiny)")
    p.add_argument("--recipe", choices=choices.RECIPES, default="ochre",
                   help="training recipe (default ochre; seed-v3 = the earlier prototype, the baseline)")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps (default: preset's)")
    p.add_argument("--minutes", type=_positive_float, default=None,
                   help="wall-time budget; stops at whichever of --steps/--minutes comes first")
    p.add_argument("--batch", type=_positive_int, default=None, help="windows per step (default: preset's)")
    p.add_argument("--window", type=_positive_int, default=None, help="frames per window (default: preset's)")
    p.add_argument("--unroll", type=int, default=None, help="max autoregressive steps (default: preset's)")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (default: preset's)")
    p.add_argument("--unroll-feed", choices=choices.UNROLL_FEEDS, default=None,
                   help="what the unroll feeds back as its next input: sample = the model's own distribution "
                   "without the decoding's boosts (the ochre recipe's default), decoding = the shipped decoding, "
                   "boosts included (the inputs a dream feeds it), argmax (seed-v3's)")
    p.add_argument("--soft-targets", type=float, default=None, metavar="SHARE",
                   help="give this share of each target code's probability to its look-alikes, its nearest "
                   "codes in the tokenizer's codebook (default 0: exact targets)")
    p.add_argument("--soft-neighbours", type=_positive_int, default=None, metavar="N",
                   help="how many look-alikes share it (default 16)")
    p.add_argument("--pointer", type=int, default=0, metavar="R",
                   help="learned pointer: each position copies the code the state chooses among the (2R+1)^2 "
                   "around the motion prior's source, instead of the source's own (default 0: off; with --init "
                   "from a model without one, it grows one that starts as the prior)")
    p.add_argument("--impl", choices=choices.IMPLS, default="auto",
                   help="fused step kernel: Triton on CUDA (auto), or the torch reference")
    p.add_argument("--shift-per-unit", type=float, nargs=2, default=None, metavar=("YAW_PX", "PITCH_PX"),
                   help="pixels the picture moves per unit of yaw and of pitch, for the warp prior (default: "
                   "what `ochre tokenize` measured on the train clips; `ochre data check` prints it)")
    p.add_argument("--walk-zoom-scale", type=float, default=1.0, metavar="F",
                   help="walking zooms the motion prior's picture by F times the measured rate (or, with --init, "
                   "the model's own): a uniform zoom fitted to the clips moves the near ground slower than "
                   "walking does (default 1; refused under a recipe without the prior, seed-v3)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start a new run from this world model's weights (a checkpoint or run folder, e.g. "
                   "ochre/shipped/world) with a fresh optimizer and schedule: to train a model further on the "
                   "codes of the tokenizer it was trained on; its model settings must match this run's")
    _add_run_flags(p)
    p.set_defaults(_run="ochre.train.world:run")


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="world-model metrics on held-out trajectories (docs/metrics.md)",
        description="Roll the model out from one real context frame on the recorded actions of a split's "
        "trajectories (default test; choose settings on val), with the decoding its checkpoint ships, through "
        "the runtime's live step: psnr@1/8/32, delta_psnr@16, yaw_response, code_usage@256 and "
        "grad_ratio@256 with 95 % bootstrap intervals over rollouts, each the mean over --seeds; the same "
        "without decoding boosts (learned/); the repeat-the-context-frame predictor; scripted tours against "
        "the synthetic renderer's truth; action accuracy by an inverse-dynamics model (trained once per token "
        "set, kept in TOKENS/idm); realism by a classifier two-sample test. Writes metrics.json, rollouts.npz, "
        "tours.npz, dream.mp4, tour.mp4 and psnr.png.",
    )
    p.add_argument("checkpoint", help="dynamics run folder or checkpoint folder")
    p.add_argument("tokens", help="output folder of `ochre tokenize` (names the clips and the tokenizer)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                   help="whose trajectories: test (default; report it), val (choose settings on it), train, all")
    p.add_argument("--test-world", default=None, metavar="TOKENS",
                   help="token shards of another world, never trained on (made with the same tokenizer): its "
                   "metrics are added under test_world/")
    p.add_argument("--compare", default=None, help="a second dynamics checkpoint (e.g. a seed-v3 run)")
    p.add_argument("--clips", default=None, help="clip shards (default: the ones the tokens were made from)")
    p.add_argument("--tokenizer", default=None,
                   help="decode with this tokenizer instead of the one the tokens were made with: a decoder refined "
                   "by `ochre train-tokenizer --decoder-of` (refused unless it makes the same codes)")
    p.add_argument("--rollouts", type=_positive_int, default=100, help="32-step rollouts (default 100)")
    p.add_argument("--long-rollouts", type=int, default=16, help="256-step rollouts (default 16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="sampling-noise seeds; every metric is their mean (default 0 1 2)")
    p.add_argument("--long-seeds", type=_positive_int, default=1,
                   help="how many of --seeds the 256-step rollouts run (default 1)")
    p.add_argument("--tours", type=int, default=32, help="tour contexts on synthetic worlds (default 32; 0: none)")
    p.add_argument("--world-tours", type=int, default=None,
                   help="tour contexts on the --test-world world (default: --tours)")
    p.add_argument("--no-learned", action="store_true", help="skip learned/ (the model without decoding boosts)")
    p.add_argument("--learned-short", action="store_true",
                   help="learned/ on the short rollouts only: its 256-step rollouts cost as many model steps as "
                   "all its short ones, and no bar reads them")
    p.add_argument("--no-idm", action="store_true", help="skip the inverse-dynamics action accuracy")
    p.add_argument("--idm-steps", type=_positive_int, default=None,
                   help="training steps of the inverse-dynamics model when TOKENS/idm holds none for these clips "
                   "(default 1200, about a minute on 2 cores)")
    p.add_argument("--no-c2st", action="store_true", help="skip the classifier two-sample test")
    p.add_argument("--calibrate", action="store_true",
                   help="also score the reference dreamers (oracle/, still/, random_codes/): what each metric gives a "
                   "perfect model, a dream that never moves and noise")
    p.add_argument("--temperature", type=float, default=None,
                   help="override the checkpoint's sampling temperature (0 = argmax)")
    p.add_argument("--top-k", type=_positive_int, default=None, help="override the checkpoint's top-k")
    p.add_argument("--guidance", type=float, default=None, help="override the action guidance weight")
    p.add_argument("--guide", choices=choices.GUIDES, default=None,
                   help="what guidance extrapolates: all (the whole distribution, the default) or head (the head's "
                   "codes alone; the copy gate and its proposals stay the conditional branch's)")
    p.add_argument("--copy-boost", type=float, default=None,
                   help="override the decoding's boost of the copy prior's proposals (logits)")
    p.add_argument("--fill-boost", type=float, default=None,
                   help="override the decoding's boost of the fills of revealed positions (logits)")
    p.add_argument("--walk-boost", type=float, default=None,
                   help="override the share of both boosts kept while a movement key is held (0..1)")
    p.add_argument("--min-p", type=float, default=None,
                   help="override the decoding's min-p: codes less likely than this share of each position's "
                   "likeliest are not drawn (0: none)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if present)")
    p.add_argument("--dtype", choices=choices.CPU_PRECISIONS, default="fp32",
                   help="run the model's and the decoder's convolutions and linear layers in this precision, as "
                   "`ochre play/bench --dtype bf16` does (default fp32); the baselines stay fp32")
    p.set_defaults(_run="ochre.eval.evaluate:run")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the built-in synthetic world, on a CPU",
        description="synth -> prepare -> data check -> train-tokenizer -> tokenize -> train (world model) -> "
        "eval -> export (ONNX, AOTInductor) -> headless play -> bench, on the built-in synthetic world; writes "
        "DIR/report.json (metrics, the `ochre bench` JSON, per-stage timings), DIR/report.md for people (metrics "
        "against repeating the frame, PSNR plot, dream videos, speed table, timings), DIR/eval/ (dream.mp4, "
        "psnr.png), DIR/play/dream.mp4 and DIR/bench/. About 30 minutes on a 2-core CPU "
        "(29.9 measured on 2026-12-04; about 70 on a 2-core AVX2-only CPU on 2026-12-06, where the world model's "
        "12 minutes also fit fewer steps and the demo's bars can be missed; the world model trains for "
        "--world-minutes, 12 by default; eval is the next largest stage); --quick runs every "
        "stage small (torch and onnxruntime at batch 1 in the bench) in 2-5 minutes. A rerun skips finished stages. "
        "Afterwards `ochre play` and "
        "`ochre bench` take this model by default.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (CI)")
    p.add_argument("--world", choices=choices.WORLDS, default="synth",
                   help="synth: render the built-in world (default); luanti: record the real game Luanti instead "
                   "(`ochre record luanti`, needs `apt-get install minetest xvfb libxtst6`; 24 episodes of 400 steps "
                   "by default, about 15 minutes of recording on 2 cores)")
    p.add_argument("--episodes", type=_positive_int, default=None,
                   help="recordings to render or record (default 200; luanti 24)")
    p.add_argument("--steps", type=_positive_int, default=None, help="ticks per episode (default 400; luanti 400)")
    p.add_argument("--tokenizer-steps", type=_positive_int, default=None,
                   help="tokenizer training steps at batch 32 (default 500)")
    p.add_argument("--world-minutes", type=_positive_float, default=None,
                   help="world-model training budget in minutes (default 12)")
    p.add_argument("--world-steps", type=_positive_int, default=None,
                   help="world-model step cap (default: the minutes decide)")
    p.add_argument("--rollouts", type=_positive_int, default=None, help="eval's 32-step rollouts (default 100)")
    p.add_argument("--long-rollouts", type=int, default=None, help="eval's 256-step rollouts (default 16)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="eval's noise seeds (default 0 1)")
    p.add_argument("--tours", type=int, default=None, help="eval's tour contexts (default 32)")
    p.add_argument("--world-tours", type=int, default=None,
                   help="eval's tour contexts on the second world (default 16)")
    p.add_argument("--idm-steps", type=_positive_int, default=None,
                   help="training steps of eval's inverse-dynamics model (default 1200)")
    p.add_argument("--compare", choices=choices.COMPARE, default=None,
                   help="also train this recipe on the same tokens, seed and budget, and evaluate it beside "
                   "the ochre recipe (`ochre eval --compare`); doubles the training time")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(_run="ochre.demo:run")


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="world model -> ONNX (fp32/fp16) with a parity check [+ TensorRT engines], or AOTInductor .pt2",
        description="Export the tokenizer encoder, the world-model step (sampling inside the graph, driven "
        "by a noise input) and the decoder at a static batch, then check ONNX Runtime against eager torch "
        "and an fp64 reference on random inputs and a 64-step rollout fed the same noise; a failed check "
        "fails the export. --format tensorrt also builds TensorRT engines from that ONNX (GPU, extra "
        "`tensorrt`). --format aoti writes AOTInductor .pt2 packages (C++ on CPU, Triton inside on GPU) for "
        "ochre-native and the `native` backend, checked against eager torch on a short rollout.",
    )
    p.add_argument("checkpoint", help="world-model run folder (or checkpoint folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=choices.EXPORT_FORMATS, default="onnx")
    p.add_argument("--dtype", choices=choices.PRECISIONS, default="fp32",
                   help="precision of the convolutions and linear layers: fp16 for onnx/tensorrt (TensorRT's "
                   "FP16 engines come from it), bf16 for aoti (CPUs with bf16 vector instructions, e.g. "
                   "AVX512-BF16 or AMX, run it about twice as fast); the rest of each graph stays fp32")
    p.add_argument("--batch", type=_positive_int, default=1, help="players per step (static; default 1)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer run folder (default: the one the world model's token shards name)")
    p.add_argument("--guidance", type=float, default=None,
                   help="action guidance baked into the step graph (default: the checkpoint's)")
    p.add_argument("--check-steps", type=int, default=16, help="aoti: parity rollout length; 0 skips the check")
    p.add_argument("--seed", type=int, default=0, help="aoti: parity rollout and context seed")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="aoti: compile for this machine's CPU (C++) or GPU (Triton kernels for its architecture), "
                   "and check parity there; onnx/tensorrt: also rerun the parity check with onnxruntime on it "
                   "(default cpu)")
    p.set_defaults(_run="ochre.export.cli:run")


def _add_model_args(p) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="world-model run folder (default: the newest `ochre demo` model, else the shipped one)")
    p.add_argument("--tokenizer", default=None, help="tokenizer run folder (default: the one the run's data names)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def _add_play(sub) -> None:
    p = sub.add_parser(
        "play",
        help="play the dream: WASD + mouse in a window, or headless from an action file",
        description="A pygame window: WASD to move, mouse (captured) or arrow keys to look, R to restart "
        "from another context frame, Esc to quit; fps and step latency drawn over the frame. The dream "
        "advances at the model's frame rate. --headless --actions FILE [--record OUT.mp4] plays an action "
        "file (one step per line: yaw pitch move_x move_z, docs/data.md#actions units) without a display.",
    )
    _add_model_args(p)
    p.add_argument("--onnx", default=None,
                   help="an `ochre export` folder to play (onnxruntime or tensorrt) instead of a checkpoint")
    p.add_argument("--aoti", default=None,
                   help="an `ochre export --format aoti` folder to play (native) instead of a checkpoint")
    p.add_argument("--guidance", type=float, default=None, help="action guidance (default: the model's)")
    p.add_argument("--backend", choices=choices.BACKENDS, default=None,
                   help="torch (eager), compiled (torch.compile), onnxruntime, tensorrt (GPU) or native "
                   "(AOTInductor packages); exports they need are made on demand and cached (default: "
                   "onnxruntime with --onnx, native with --aoti, else torch)")
    p.add_argument("--dtype", choices=choices.CPU_PRECISIONS, default=None,
                   help="precision of the convolutions and linear layers: bf16 for torch, compiled and native "
                   "(about twice as fast on CPUs with AVX512-BF16 or AMX; `ochre eval --dtype bf16` measures "
                   "its dreams); default fp32, or the export folder's")
    p.add_argument("--headless", action="store_true", help="no window: play --actions and exit")
    p.add_argument("--actions", default=None, help="action file (one step per line)")
    p.add_argument("--record", default=None, help="write the headless frames to this .mp4")
    p.add_argument("--scale", type=_positive_int, default=8, help="window pixels per model pixel (default 8)")
    p.add_argument("--fps", type=float, default=None,
                   help="model steps per second in the window (default: the model's rate; 0: as fast as it goes)")
    p.add_argument("--steps", type=_positive_int, default=None, help="quit the window after this many steps")
    p.add_argument("--screenshot", default=None, help="save the window to this PNG when it closes")
    p.add_argument("--context", type=int, default=0, help="headless: index of the context frame (default 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling noise and context choice seed")
    p.add_argument("--stats", default=None, help="headless: write the run's latency and fps to this JSON file")
    p.set_defaults(_run="ochre.runtime.play:run")


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="live step + decode latency and fps per runtime backend, batch 1 and batch B",
        description="Times stepper.step (the world-model step, in-graph sampling and the decode to RGB) per "
        "available backend at batch 1 and batch B: p50/p99 latency, fps per player and frames/s for all B, "
        "and the speedup over eager torch. Warm-up and compilation excluded; every backend gets the same "
        "threads and preallocated buffers; the backends of a batch take turns in --rounds rounds. Exported "
        "backends run the folders given with --onnx/--aoti, else exports made on demand and cached (an "
        "AOTInductor compile takes about 35 s per batch on 2 cores). Writes the bench JSON of "
        "docs/runtime.md#bench-rows (default bench/results/live_<device>_<date>.json in a source checkout) "
        "and a plot beside it.",
    )
    _add_model_args(p)
    p.add_argument("--onnx", nargs="+", default=None, metavar="DIR",
                   help="`ochre export` folders (one per batch) for onnxruntime and tensorrt")
    p.add_argument("--aoti", nargs="+", default=None, metavar="DIR",
                   help="`ochre export --format aoti` folders (one per batch) for native")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--backends", nargs="+", choices=choices.BACKENDS, default=None,
                   help="default: every backend available here (torch, compiled, onnxruntime, native on a CPU)")
    p.add_argument("--batch", type=_positive_int, nargs="+", default=None,
                   help="batch sizes (default 1 8 on CPU, 1 64 on CUDA)")
    p.add_argument("--runs", type=_positive_int, default=200, help="timed steps per row (default 200)")
    p.add_argument("--warmup", type=_positive_int, default=20, help="untimed steps per row (default 20)")
    p.add_argument("--rounds", type=_positive_int, default=4,
                   help="the backends of a batch take turns in this many rounds (default 4)")
    p.add_argument("--dtypes", nargs="+", choices=choices.CPU_PRECISIONS, default=None,
                   help="precisions of the convolutions and linear layers to time; bf16 rows for compiled and "
                   "native (default: fp32, and bf16 on a CPU with bf16 instructions: AVX512-BF16 or AMX)")
    p.add_argument("--note", default=None, help="a line kept in the JSON (e.g. what else the machine was running)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="intra-op threads for every backend (default: the physical cores)")
    p.set_defaults(_run="ochre.runtime.bench:run")


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="play in a browser: a web page and a WebSocket per player, all players stepped in one batch",
        description="A web server for the dream: GET / is the play page (click to capture the mouse, WASD to "
        "move, R to restart, Esc to let the mouse go; fps and input-to-frame latency on screen), GET /healthz "
        "the player count, and each WebSocket at /play one player (protocol: docs/serve.md). Every tick the "
        "input of every connected player is stepped in one batch of --max-players rows; each player gets "
        "only its own frame. Misbehaving clients are closed (code 1008) without slowing the others; a full "
        "server answers 1013. It listens on 127.0.0.1 unless --host says otherwise. Needs the [serve] extra "
        "(aiohttp, Pillow).",
    )
    _add_model_args(p)
    p.add_argument("--backend", choices=choices.BACKENDS, default=None,
                   help="stepper backend (default: native on a CPU, its AOTInductor packages compiled once per "
                   "batch and cached, about 35 s; compiled on CUDA); torch starts at once")
    p.add_argument("--dtype", choices=choices.CPU_PRECISIONS, default=None,
                   help="precision of the convolutions and linear layers (bf16: compiled and native, about twice "
                   "as fast on CPUs with AVX512-BF16 or AMX; torch too); default bf16 with compiled or native on "
                   "such a CPU, where it serves twice the players, else fp32")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; a wider one is warned about)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free one, printed)")
    p.add_argument("--max-players", type=_positive_int, default=None,
                   help="players at once, the stepper's batch (default 8 on a CPU, 64 on CUDA); one more is "
                   "told the server is full")
    p.add_argument("--fps", type=_positive_float, default=20.0,
                   help="ticks (frames per player) per second (default 20; the model's actions are its own "
                   "frame rate's windows, 8 for the shipped model, so at 20 the dream walks 2.5x faster than "
                   "it was recorded)")
    p.add_argument("--idle-timeout", type=_positive_float, default=120.0,
                   help="seconds without a message before a player's slot is freed (default 120)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="the model's intra-op threads on a CPU (default: one less than the cores, at least 1; the "
                   "other core serves the players' connections)")
    p.add_argument("--seed", type=int, default=0, help="sampling noise and context choice seed")
    p.set_defaults(_run="ochre.runtime.serve.cli:run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ochre",
        description="ochre: play a dreamed Minecraft. Data preparation, training, export and live play.",
    )
    parser.add_argument("--version", action="version", version="ochre 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_record, _add_prepare, _add_data, _add_train_tokenizer, _add_tokenize, _add_train,
                _add_eval, _add_export, _add_play, _add_serve, _add_bench, _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ochre.device import keep_large_blocks

    keep_large_blocks()                  # every command: large tensors reused, not re-faulted (ochre.device)
    module_name, func_name = args._run.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
