"""Patch discriminator for refining a decoder adversarially (`ochre train-tokenizer --adversarial`).

Legend: B batch, H W frame size (64), P = H/8 patches a side.

MSE trains a decoder to the mean of the frames a code grid could stand for: where the codes cannot
tell two textures apart it paints their average, a blur that recon_psnr rewards and that
recon_grad_ratio and the c2st classifiers see at once. A discriminator that judges 8×8-pixel
patches (each logit's receptive field is 22 px wide) asks instead for a patch that real play could
have shown, which is the VQGAN recipe without its perceptual term: no pretrained network can be
downloaded here. Hinge losses; spectral norm on every convolution, so the discriminator stays
Lipschitz without batch statistics (which differ between the real and the fake batch).
The adversarial term is balanced against the reconstruction term by the ratio of their gradients
at the decoder's last layer (`adaptive_weight`), so one `--adversarial` weight means the same on any
decoder and any point in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class DiscriminatorConfig:
    channels: tuple[int, int, int] = (32, 64, 128)   # widths after each stride-2 convolution (32², 16², 8²)

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels needs 3 positive widths, got {self.channels}")


class PatchDiscriminator(nn.Module):
    """frames in the tokenizer's [-1, 1] space (B, 3, H, W) -> one real/fake logit per 8×8 patch (B, 1, P, P)."""

    kind = "discriminator"

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        layers, c_in = [], 3
        for c in config.channels:
            layers += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c
        layers += [spectral_norm(nn.Conv2d(c_in, c_in, 3, padding=1)), nn.LeakyReLU(0.2),
                   spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real patches pushed above +1, fakes below −1."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: raise the discriminator's logit on its frames."""
    return -fake_logits.mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last: torch.Tensor,
                    cap: float = 1e4) -> torch.Tensor:
    """‖∂rec/∂last‖ / ‖∂adv/∂last‖ (detached, at most `cap`): the weight at which the adversarial term
    pulls the decoder's last layer `last` as hard as the reconstruction term does (VQGAN)."""
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(max=cap).detach()


__all__ = ["DiscriminatorConfig", "PatchDiscriminator", "hinge_d_loss", "hinge_g_loss", "adaptive_weight"]
