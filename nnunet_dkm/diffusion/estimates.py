"""The DM's estimate of the post-contrast phases from the pre-contrast image alone.

- one-step: the clean-image estimate of one forward at t*, whose input is the noised pre-contrast image
  (exactly what kinetic feature extraction mode A feeds the DM);
- DDIM: a deterministic K-step sample from fixed noise, conditioned on the pre-contrast image.

Inputs and outputs are nnU-Net-normalised (pre-contrast z-score); the DM's input scaling is applied inside.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet

from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling
from nnunet_dkm.diffusion.network import make_ddpm_scheduler, synthesise_post_contrast


def fixed_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise drawn on the CPU from a fresh generator: the same for the same shape and seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def dm_one_step_estimate(
    network: DiffusionModelUNet, config: DiffusionConfig, scaling: InputScaling, pre: torch.Tensor,
    timestep: int = 250, seed: int = 0,
) -> torch.Tensor:
    """Clean-image estimate of the post-contrast phases from the noised pre-contrast image at ``timestep``.

    Args:
        pre: (B, 1, H, W) nnU-Net-normalised pre-contrast slices.

    Returns:
        (B, K, H, W) estimated post-contrast phases, nnU-Net-normalised.
    """
    scheduler = make_ddpm_scheduler(config)
    x_pre = scaling.scale * pre + scaling.offset
    noise = fixed_noise((1, config.num_post_phases, *pre.shape[2:]), seed).expand(pre.shape[0], -1, -1, -1)
    t = torch.full((pre.shape[0],), timestep, dtype=torch.long)
    x_t = scheduler.add_noise(x_pre.expand(-1, config.num_post_phases, -1, -1), noise, t)
    output = network(torch.cat([x_t, x_pre], dim=1), t)
    alpha_bar = scheduler.alphas_cumprod[timestep]
    if config.prediction_type == "epsilon":
        clean = (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    elif config.prediction_type == "sample":
        clean = output
    else:
        clean = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output
    return (clean - scaling.offset) / scaling.scale


@torch.no_grad()
def dm_ddim_estimate(
    network: DiffusionModelUNet, config: DiffusionConfig, scaling: InputScaling, pre: torch.Tensor,
    steps: int = 20, seed: int = 0,
) -> torch.Tensor:
    """DDIM sample (``steps`` network evaluations) of the post-contrast phases; shapes as ``dm_one_step_estimate``."""
    x_pre = scaling.scale * pre + scaling.offset
    noise = fixed_noise((1, config.num_post_phases, *pre.shape[2:]), seed).expand(pre.shape[0], -1, -1, -1)
    clean = synthesise_post_contrast(network, config, x_pre, noise.contiguous(), steps)
    return (clean - scaling.offset) / scaling.scale
