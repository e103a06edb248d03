"""Action accuracy by an inverse-dynamics model (docs/metrics.md#action-accuracy-by-an-inverse-dynamics-model-idm).

A small CNN reads a pair of consecutive frames (t, t+1) and classifies the action between them, one
3-way head per control: HEADS. Trained on the `train` clips of a data set and kept in a folder beside
it, keyed by the clip index's digest: reused while the data is the same, retrained when it changes.
`accuracy` scores frame sequences against the actions that drove them as balanced accuracy (the mean
recall over the classes present), so chance is 1/3 whatever the action mix.
Legend: B pairs in a batch, P training pairs, F decoded frames, N sequences, S steps, H W pixels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ochre.data.loader import WindowDataset
from ochre.data.shards import index_digest
from ochre.eval.cnn import conv_stack, to_input
from ochre.io import atomic_path, write_json_atomic

HEADS = ("yaw", "pitch", "forward", "strafe")
COLUMNS = (0, 1, 3, 2)          # the action column each head reads: yaw, pitch, move_z, move_x
NONE_BAND = 0.1                 # |action| <= this is "none"; yaw 0.1 is 1.5 degrees in one step
FORMAT = "ochre-idm/1"


def labels(actions: np.ndarray) -> np.ndarray:
    """Class per head: actions (..., 4) -> int64 (..., 4) in HEADS order; 0 left / up / back / left,
    1 none, 2 right / down / forward / right (the sign of yaw, pitch, move_z, move_x)."""
    a = np.asarray(actions)[..., list(COLUMNS)]
    return (a > NONE_BAND).astype(np.int64) - (a < -NONE_BAND).astype(np.int64) + 1


@dataclass(frozen=True)
class IDMConfig:
    channels: tuple[int, ...] = (16, 32, 64, 64)    # ochre.eval.cnn.conv_stack: 64 px -> 4 x 4
    steps: int = 1200
    batch: int = 64
    lr: float = 2e-3
    max_pairs: int = 60_000       # training pairs read from the train clips (in shard order)

    def __post_init__(self):
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if min(self.steps, self.batch, self.max_pairs) < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch, max_pairs and lr must be positive; got {self}")


class IDM(nn.Module):
    """Frame pairs uint8 (B, 2, H, W, 3) -> logits (B, 4, 3)."""

    def __init__(self, cfg: IDMConfig, size: int = 64):
        super().__init__()
        self.cfg, self.size = cfg, size
        self.features = conv_stack(6, cfg.channels)
        side = size
        for _ in cfg.channels:
            side = (side + 1) // 2                  # a stride-2, padding-1 3x3 convolution's output
        # A linear read of the whole final map, not a pooled one: walking forward and back differ only
        # in where each motion is (outward from the centre or inward), which pooling would erase.
        self.head = nn.Linear(cfg.channels[-1] * side * side, len(HEADS) * 3)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = to_input(pairs)                                                        # (B, 6, H, W)
        return self.head(self.features(x).flatten(1)).view(len(pairs), len(HEADS), 3)


@torch.no_grad()
def predict(idm: IDM, pairs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Predicted class per head: uint8 pairs (B, 2, H, W, 3) -> int64 (B, 4)."""
    idm.eval()
    out = [idm(torch.from_numpy(np.ascontiguousarray(pairs[i:i + batch]))).argmax(-1)
           for i in range(0, len(pairs), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(HEADS)), np.int64)


def balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `true` (n,): chance is 1 / (classes present)."""
    return float(np.mean([np.mean(pred[true == c] == c) for c in np.unique(true)]))


def accuracy(idm: IDM, frames: np.ndarray, actions: np.ndarray) -> dict[str, float]:
    """Balanced accuracy per head of the actions read back from frames uint8 (N, S+1, H, W, 3),
    against the actions (N, S, 4) that led from each frame to the next -> {"acc_<head>"}."""
    n, t = frames.shape[:2]
    if actions.shape[:2] != (n, t - 1):
        raise ValueError(f"{n} sequences of {t} frames need actions ({n}, {t - 1}, 4), got {actions.shape}")
    pairs = np.stack([frames[:, :-1], frames[:, 1:]], axis=2).reshape(n * (t - 1), 2, *frames.shape[2:])
    pred, true = predict(idm, pairs), labels(actions).reshape(-1, len(HEADS))                    # (N·S, 4)
    return {f"acc_{head}": balanced_accuracy(true[:, i], pred[:, i]) for i, head in enumerate(HEADS)}


# ---- training ------------------------------------------------------------------------------------

def train_pairs(clips_root, max_pairs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every consecutive pair of the train clips, up to max_pairs -> (frames uint8 (F, H, W, 3),
    first int64 (P,): where each pair's frame t is in frames, labels int64 (P, 4))."""
    ds = WindowDataset(clips_root, window=2, split="train", shuffle=False)
    frames, first, targets, count, pairs = [], [], [], 0, 0
    for sample in ds.samples():
        k = min(sample["meta"]["frames"], max_pairs - pairs + 1)
        if k < 2:
            break
        clip = ds.load_clip(sample, 0, k)        # decodes the k frames once, sequentially
        frames.append(clip["frames"].permute(0, 2, 3, 1))                          # (k, H, W, 3)
        first.append(torch.arange(count, count + k - 1))
        targets.append(torch.from_numpy(labels(clip["actions"].numpy())))
        count, pairs = count + k, pairs + k - 1
    if not first:
        raise ValueError(f"{clips_root}: no train pairs to fit the inverse-dynamics model on "
                         "(the train split needs at least one clip of 2 frames)")
    return torch.cat(frames), torch.cat(first), torch.cat(targets)


def class_weights(targets: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights (4, 3) per head for targets (P, 4), mean 1 over the classes present,
    0 for absent ones: every class weighs as much as the others, however rare."""
    counts = F.one_hot(targets, 3).sum(0).float()                                  # (4, 3)
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros(()))
    return weights * (counts > 0).sum(1, keepdim=True) / weights.sum(1, keepdim=True)


def _batch(frames, first, targets, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of pairs uint8 (B, 2, H, W, 3) and labels (B, 4), half of them mirrored left to
    right: the mirror of a turn or strafe to one side is one to the other, which doubles the data."""
    pick = torch.randint(len(first), (size,), generator=gen)                      # (B,) pairs
    pairs = torch.stack([frames[first[pick]], frames[first[pick] + 1]], 1)
    mirror = torch.rand(size, generator=gen) < 0.5
    pairs[mirror] = pairs[mirror].flip(3)
    y = torch.where(mirror[:, None], _mirror_labels(targets[pick]), targets[pick])
    return pairs, y


def _mirror_labels(targets: torch.Tensor) -> torch.Tensor:
    """Labels (P, 4) of the mirrored pairs: left and right swap for yaw and strafe."""
    out = targets.clone()
    for head in (HEADS.index("yaw"), HEADS.index("strafe")):
        out[:, head] = 2 - out[:, head]
    return out


def fit(frames: torch.Tensor, first: torch.Tensor, targets: torch.Tensor, cfg: IDMConfig, seed: int = 0,
        progress: bool = True) -> tuple[IDM, float]:
    """Train an IDM on pairs (frames[first], frames[first + 1]) labelled targets (P, 4) -> (model,
    mean loss over the last 10 % of steps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):          # the same weights for a seed; global RNG untouched
        torch.manual_seed(seed)
        idm = IDM(cfg, frames.shape[1])
    weights = class_weights(torch.cat([targets, _mirror_labels(targets)]))      # as batches see them
    opt = torch.optim.AdamW(idm.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    idm.train()
    tail = []
    for step in tqdm(range(cfg.steps), desc="idm", unit="step", disable=not progress):
        pairs, y = _batch(frames, first, targets, gen, cfg.batch)
        logits = idm(pairs)                                                        # (B, 4, 3)
        loss = sum(F.cross_entropy(logits[:, i], y[:, i], weight=weights[i]) for i in range(len(HEADS)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= cfg.steps * 9 // 10:
            tail.append(loss.detach())
    return idm.eval(), float(torch.stack(tail).mean())                            # one sync, at the end


# ---- kept beside the data ------------------------------------------------------------------------

def _record(clips_root, cfg: IDMConfig, seed: int) -> dict:
    """What an IDM folder must match to be reused: the data (index digest), the config, the seed."""
    record = {"format": FORMAT, "clips": index_digest(clips_root), "config": asdict(cfg), "seed": seed}
    return json.loads(json.dumps(record))             # as config.json stores it (tuples are lists)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(folder) -> tuple[IDM, dict]:
    """The IDM saved in `folder` and its config.json record; ValueError when it is not a whole one."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        record = json.loads((folder / "config.json").read_text())
        weights = folder / "model.safetensors"
        if record.get("format") != FORMAT or record.get("sha256") != _sha256(weights):
            raise ValueError(f"{folder}: config.json does not describe model.safetensors")
        cfg = IDMConfig(**{**record["config"], "channels": tuple(record["config"]["channels"])})
        idm = IDM(cfg, record["size"])
        idm.load_state_dict(load_file(weights))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder}: no readable inverse-dynamics model ({type(e).__name__}: {e})") from None
    return idm.eval(), record


def save(idm: IDM, folder, record: dict) -> None:
    """Weights, then config.json (with their sha256) last, each written atomically: a folder whose
    config.json does not hash its weights is never loaded."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in idm.state_dict().items()}, str(tmp))
    write_json_atomic(folder / "config.json", {**record, "size": idm.size,
                                               "sha256": _sha256(folder / "model.safetensors")})


def load_or_train(clips_root, folder, *, steps: int | None = None, seed: int = 0, log=print,
                  progress: bool = True) -> IDM:
    """The IDM of `clips_root`'s train clips kept in `folder`: reused when it was trained on the same
    data (index digest), config and seed, otherwise trained now and saved there."""
    cfg = IDMConfig() if steps is None else IDMConfig(steps=steps)
    want = _record(clips_root, cfg, seed)
    try:
        idm, record = load(folder)
        if all(record.get(k) == v for k, v in want.items()):
            return idm
        log(f"idm: {folder} was trained for other data or settings; training again")
    except ValueError:
        log(f"idm: training an inverse-dynamics model on the train clips of {clips_root} into {folder}")
    frames, first, targets = train_pairs(clips_root, cfg.max_pairs)
    idm, loss = fit(frames, first, targets, cfg, seed, progress)
    save(idm, folder, {**want, "pairs": len(first), "final_loss": round(loss, 4)})
    log(f"idm: trained on {len(first)} pairs, final loss {loss:.3f}")
    return idm
