"""What `ochre eval` rolls out: a world model, and the reference predictors that calibrate every
metric (docs/metrics.md: the calibration table puts each metric's value for all of them side by side).

Legend: N rollouts, S steps, h w token grid, H W pixels.

Every dreamer answers one call:
    dream(context uint8 (N, H, W, 3), actions float32 (N, S, 4), truth uint8 (N, S+1, H, W, 3) | None,
          seed, keep) -> frames uint8 (N, len(keep), H, W, 3), codes int64 (N, S+1, h, w)
frame 0 is the decoded context (the tokenizer's reconstruction), `keep` the steps whose frames are
decoded (all by default), `truth` the real frames, which only the oracle reads.
    ModelDreamer     the world model through ochre.models.step.live_step, as the runtime plays it
    RepeatDreamer    the real context frame, repeated (the baseline a model must beat)
    StillDreamer     the decoded context, repeated: a dream that never moves
    OracleDreamer    the tokenizer's reconstruction of the truth: what a perfect dynamics model gives
    RandomDreamer    uniform random codes, decoded: noise in the tokenizer's own vocabulary
"""

from __future__ import annotations

import numpy as np
import torch

from ochre.models.sampling import SamplingConfig
from ochre.models.step import draw_noise, live_step, noise_generator, render

CHUNK = 256          # frames per encode/decode call


class Codec:
    """The tokenizer's encode (full precision) and decode (optionally a lower-precision copy)."""

    def __init__(self, tokenizer, decoder=None):
        self.tokenizer = tokenizer.eval()
        self.decoder = (decoder or tokenizer).eval()
        self.device = next(tokenizer.parameters()).device

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> codes (N, h, w) on the device."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(self.device)
        return torch.cat([self.tokenizer.encode(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """codes (N, h, w) -> uint8 (N, H, W, 3)."""
        out = [self.decoder.decode(codes[i:i + CHUNK], as_uint8=True) for i in range(0, len(codes), CHUNK)]
        return torch.cat(out).permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def render(self, codes: torch.Tensor, view: torch.Tensor) -> np.ndarray:
        """codes (B, h, w) shown with the model's view (B, 3), as the runtime shows a step -> uint8 (B, H, W, 3)."""
        return render(self.decoder, codes, view).permute(0, 2, 3, 1).cpu().numpy()

    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (..., H, W, 3) -> the tokenizer's reconstructions, same shape."""
        flat = frames.reshape(-1, *frames.shape[-3:])
        return self.decode(self.encode(flat)).reshape(frames.shape)


def _steps(keep, total: int) -> list[int]:
    return list(range(total)) if keep is None else list(range(total))[keep]


class ModelDreamer:
    """A world model with its decoding, stepping `batch` rollouts at a time by the runtime's rules:
    the same live step and the same noise rule (a generator seeded with the eval seed per batch,
    one (B, h, w) draw per step), each step's frames decoded as the step makes them."""

    def __init__(self, name: str, model, codec: Codec, sampling: SamplingConfig, batch: int = 32):
        self.name, self.model, self.codec, self.sampling, self.batch = name, model.eval(), codec, sampling, batch
        self.device = next(model.parameters()).device

    def dream(self, context, actions, truth=None, seed: int = 0, keep=None):
        out = [self._batch(context[i:i + self.batch], actions[i:i + self.batch], seed, keep)
               for i in range(0, len(context), self.batch)]
        return np.concatenate([f for f, _ in out]), np.concatenate([c for _, c in out])

    @torch.no_grad()
    def _batch(self, context, actions, seed, keep):
        wanted = set(_steps(keep, actions.shape[1] + 1))
        gen = noise_generator(seed)
        tokens = self.codec.encode(context)                                          # (B, h, w)
        acts = torch.from_numpy(np.ascontiguousarray(actions, np.float32)).to(self.device)
        state = self.model.init_state(len(tokens), self.device)
        codes, frames = [tokens], [self.codec.render(tokens, state[-1])] if 0 in wanted else []
        for t in range(acts.shape[1]):
            u = draw_noise(gen, len(tokens), tokens.shape[-1]).to(self.device)
            tokens, state = self.draw(tokens, acts[:, t], u, state)
            codes.append(tokens)
            if t + 1 in wanted:
                frames.append(self.codec.render(tokens, state[-1]))
        return np.stack(frames, axis=1), torch.stack(codes, dim=1).cpu().numpy()     # (B, K, H, W, 3), (B, S+1, h, w)

    def draw(self, tokens, actions, noise, state):
        """One step: the live step's codes (B, h, w) and next state. A probe of another decoding
        overrides it (bench/pair_decoding.py)."""
        tokens, _, state = live_step(self.model, tokens, actions, noise, state, self.sampling)
        return tokens, state


class RepeatDreamer:
    """The real context frame at every step; its codes are the context's."""

    name = "repeat_frame"

    def __init__(self, codec: Codec):
        self.codec = codec

    def dream(self, context, actions, truth=None, seed: int = 0, keep=None):
        n = actions.shape[1] + 1
        codes = self.codec.encode(context).cpu().numpy()
        frames = np.repeat(context[:, None], len(_steps(keep, n)), axis=1)
        return frames, np.repeat(codes[:, None], n, axis=1)


class StillDreamer(RepeatDreamer):
    """The decoded context at every step: a dream that never moves."""

    name = "still"

    def dream(self, context, actions, truth=None, seed: int = 0, keep=None):
        _, codes = super().dream(context, actions)
        decoded = self.codec.decode(torch.from_numpy(codes[:, 0]).to(self.codec.device))
        return np.repeat(decoded[:, None], len(_steps(keep, actions.shape[1] + 1)), axis=1), codes


class OracleDreamer:
    """The tokenizer's reconstruction of the true frames: a perfect dynamics model's dream."""

    name = "oracle"

    def __init__(self, codec: Codec):
        self.codec = codec

    def dream(self, context, actions, truth=None, seed: int = 0, keep=None):
        if truth is None:
            raise ValueError("the oracle dreamer needs the true frames")
        N, n = truth.shape[:2]
        codes = self.codec.encode(truth.reshape(-1, *truth.shape[2:]))
        codes = codes.reshape(N, n, *codes.shape[1:])                                # (N, S+1, h, w)
        steps = _steps(keep, n)
        frames = self.codec.decode(codes[:, steps].flatten(0, 1)).reshape(N, len(steps), *truth.shape[2:])
        return frames, codes.cpu().numpy()


class RandomDreamer:
    """Uniform random codes after the decoded context."""

    name = "random_codes"

    def __init__(self, codec: Codec, codebook_size: int):
        self.codec, self.k = codec, codebook_size

    def dream(self, context, actions, truth=None, seed: int = 0, keep=None):
        n = actions.shape[1] + 1
        gen = torch.Generator().manual_seed(seed)
        first = self.codec.encode(context).cpu()                                     # (N, h, w)
        codes = torch.randint(0, self.k, (len(context), n, *first.shape[1:]), generator=gen)
        codes[:, 0] = first
        steps = _steps(keep, n)
        frames = self.codec.decode(codes[:, steps].flatten(0, 1).to(self.codec.device))
        return frames.reshape(len(context), len(steps), *context.shape[1:]), codes.numpy()
