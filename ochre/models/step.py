"""The live step: one dreamed frame's codes from the current ones, an action and a noise draw. Every
backend runs this one function — eager (`torch`), compiled, exported to ONNX or AOTInductor — and
`ochre eval` dreams through it too, so what is measured is what is played.

Legend: B players, K codebook size, h w token grid, L ConvGRU layers.

    live_step(model, tokens (B, h, w), actions (B, 4), noise (B, h, w), state, sampling)
        -> next codes (B, h, w) int64, log-probabilities (B, h, w, K) or None, next state
    render(tokenizer, tokens (B, h, w), view (B, 3)) -> frames uint8 (B, 3, H, W)

Sampling happens inside the step, by inverse CDF on the noise input (ochre.models.sampling): no
host round trip between the model and its sampler, and the same noise gives the same codes on
every backend. The noise follows one rule everywhere (NOISE), also in the C++ loop. The frame a
step shows is its codes decoded and moved by the view the state carries (the sub-token shift and
zoom the codes still owe the camera), so a slow turn or a walk moves the picture smoothly although
codes move by whole tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ochre.models.dynamics import view_grid
from ochre.models.sampling import SamplingConfig, sample_mixture, sample_tokens

# The noise rule of every runtime backend, `ochre eval` and ochre-native: a CPU generator seeded
# with `seed`, one torch.rand((B, h, w)) draw per step (libtorch's mt19937 in Python and C++ alike,
# so the same seed gives bit-identical noise).
NOISE = "torch.rand((B, h, w), generator=torch.Generator().manual_seed(seed)), one draw per step"


def noise_generator(seed: int) -> torch.Generator:
    """The generator of the noise rule (NOISE)."""
    return torch.Generator().manual_seed(seed)


def draw_noise(gen: torch.Generator, batch: int, grid: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """One step's noise: (B, h, w) uniform in [0, 1), on the CPU (into `out` if given)."""
    return torch.rand((batch, grid, grid), generator=gen, out=out)


def live_step(model, tokens: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, state: list[torch.Tensor],
              sampling: SamplingConfig, logits: bool = False):
    """tokens (B, h, w), actions (B, 4), noise (B, h, w), state -> next codes (B, h, w), the
    log-probabilities they were drawn from (B, h, w, K) if `logits` (else None), next state.

    With the copy prior the draw comes from the mixture's factors (sample_mixture): no (B, h, w, K)
    tensor is written unless `logits` asks for it. Action guidance (w != 1) mixes the conditional
    and unconditional log-probabilities, so it needs them whole; with guide "head" only the head's are
    mixed and the draw comes from the mixture's factors again (a model without the copy prior has only
    its head: both guides are the same). The state follows the conditional branch."""
    if sampling.guidance != 1.0 and sampling.guide == "head" and model.config.copy_bias:
        mixture, new_state = _guided_head(model, tokens, actions, state, sampling)
        codes, lp = sample_mixture(mixture, noise, sampling, logits)
        return codes, lp, new_state
    if sampling.guidance != 1.0:
        lp, new_state = _guided(model, tokens, actions, state, sampling)                     # (B, h, w, K)
        return sample_tokens(lp.movedim(-1, 1), noise, sampling), lp if logits else None, new_state
    if model.config.copy_bias:
        mixture, new_state = model.step(tokens, actions, state, boost=sampling.boosts, parts=True)
        codes, lp = sample_mixture(mixture, noise, sampling, logits)
        return codes, lp, new_state
    lp, new_state = model.step(tokens, actions, state)                                      # (B, K, h, w)
    return sample_tokens(lp, noise, sampling), lp.movedim(1, -1) if logits else None, new_state


def _guided(model, tokens, actions, state, sampling):
    """Log-probabilities uncond + w·(cond − uncond) (B, h, w, K), and the conditional next state.

    Guidance extrapolates the model's own distribution; the decoding's boost is a preference added once
    after it, at the conditional branch's proposals. Guiding the boosted ones instead would count the boost
    twice: the null action moves nothing, so while a movement key is held the unconditional branch keeps
    its whole boost (walk_boost scales only the conditional's), and w > 1 took (w − 1)× that away from the
    copies the conditional proposes (bench/results/longer_cpu_2026-12-06.json: at w 1.5, psnr@1 −0.8 dB)."""
    B = tokens.shape[0]
    if model.config.copy_bias:
        mixture, new_state = _both_branches(model, tokens, actions, state, boost=sampling.boosts, parts=True)
        lp = mixture._replace(extra=None).log_probs()                                       # (2B, h, w, K)
        cond = _conditional(mixture, B)
        guided = lp[B:] + sampling.guidance * (lp[:B] - lp[B:])
        return cond.boosted(guided), [s[:B] for s in new_state]
    lp, new_state = _both_branches(model, tokens, actions, state)                            # (2B, K, h, w)
    cond, uncond = lp[:B].movedim(1, -1), lp[B:].movedim(1, -1)
    return uncond + sampling.guidance * (cond - uncond), [s[:B] for s in new_state]


def _guided_head(model, tokens, actions, state, sampling):
    """The conditional branch's mixture with its head guided: the head's log-softmax uncond + w·(cond −
    uncond) over the codes, the copy gate, proposals and boost the conditional branch's own. What guidance
    changes is then which new code a position draws, not whether it copies: extrapolating the whole
    distribution moved the copy mass too, and long dreams became far easier to tell from real play
    (bench/results/longer_cpu_2026-12-06.json). -> Mixture, the conditional next state."""
    B = tokens.shape[0]
    mixture, new_state = _both_branches(model, tokens, actions, state, boost=sampling.boosts, parts=True)
    lz = mixture.z.log_softmax(dim=-1)                                                 # (2B, h, w, K)
    cond = _conditional(mixture, B)
    return cond._replace(z=lz[B:] + sampling.guidance * (lz[:B] - lz[B:])), [s[:B] for s in new_state]


def _both_branches(model, tokens, actions, state, **kw):
    """One model step on the batch twice, actions present (rows :B) and dropped (rows B:) -> its output."""
    B = tokens.shape[0]
    present = torch.cat([torch.ones(B, device=tokens.device), torch.zeros(B, device=tokens.device)])
    twice = (tokens.repeat(2, 1, 1), actions.repeat(2, 1), [s.repeat(2, *[1] * (s.dim() - 1)) for s in state])
    return model.step(*twice, present=present, **kw)


def _conditional(mixture, B: int):
    """The conditional branch's rows (:B) of a two-branch step's Mixture."""
    return type(mixture)(*(None if x is None else x[:B] for x in mixture))


def render(tokenizer, tokens: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """The frames a step shows: tokens (B, h, w) decoded, then moved by the state's view (B, 3) [x, y
    in tokens, log zoom] (bilinear, edge pixels repeated) -> uint8 (B, 3, H, W). A zero view shows
    the decoded codes unchanged."""
    x = tokenizer.decode(tokens)                                                      # (B, 3, H, W) in [0, 1]
    H, W = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H, device=x.device), torch.linspace(-1, 1, W, device=x.device),
                            indexing="ij")
    per_token = 2.0 / (W - 1) * (W / tokens.shape[-1])                                # grid units of one token
    grid = view_grid(torch.stack([xs, ys], dim=-1), view.to(x.dtype), per_token)      # (B, H, W, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return x.mul(255).round().to(torch.uint8)
