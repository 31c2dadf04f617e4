"""The DM's estimate of the post-contrast phases from the pre-contrast image alone.

- one-step: the clean-image estimate of one forward at t*, whose input is the noised identity guess
  (``objectives.identity_guess``: exactly what kinetic feature extraction mode A feeds the DM);
- DDIM: a K-step sample from fixed noise, conditioned on the pre-contrast image (eta 0: deterministic).

A regression DM is one forward at its ``regression_timestep`` whatever the method. A pre-only DM generates
pre-contrast images, not post-contrast ones, and is refused.

``dm_*_estimate`` take and return nnU-Net-normalised intensities (pre-contrast z-score); the DM's input scaling is
applied inside.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet

from nnunet_dkm.diffusion import objectives
from nnunet_dkm.diffusion.config import DiffusionConfig, DiffusionConfigError, InputScaling
from nnunet_dkm.diffusion.network import ddim_sample, make_ddpm_scheduler


def fixed_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise drawn on the CPU from a fresh generator: the same for the same shape and seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def clean_from_output(config: DiffusionConfig, output: torch.Tensor, x_t: torch.Tensor,
                      alpha_bar: torch.Tensor) -> torch.Tensor:
    """The clean-image estimate of a network output at a timestep with cumulative alpha ``alpha_bar``."""
    if config.prediction_type == "epsilon":
        return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    if config.prediction_type == "sample":
        return output
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output


def _require_post_contrast(config: DiffusionConfig) -> None:
    if not objectives.synthesises_post_contrast(config):
        raise DiffusionConfigError(f"a DM with the {config.objective!r} objective generates pre-contrast images; it "
                                   f"has no post-contrast estimate (use a DM pretrained with --objective kinetic)")


@torch.no_grad()
def one_step_post_contrast(network: DiffusionModelUNet, config: DiffusionConfig, x_pre: torch.Tensor,
                           noise: torch.Tensor, timestep: int) -> torch.Tensor:
    """Post-contrast phases in the DM's range from one forward at ``timestep`` on the noised identity guess.

    Args:
        x_pre: [B, 1, *spatial] in the DM's range; noise: [B, P, *spatial].
    """
    _require_post_contrast(config)
    scheduler = make_ddpm_scheduler(config)
    t = torch.full((x_pre.shape[0],), timestep, dtype=torch.long, device=x_pre.device)
    x_t = scheduler.add_noise(objectives.identity_guess(config, x_pre), noise, t)
    output = network(torch.cat([x_t, objectives.condition(config, x_pre)], dim=1), t)
    clean = clean_from_output(config, output.float(), x_t, scheduler.alphas_cumprod[timestep].to(x_pre.device))
    return objectives.post_contrast(config, x_pre, clean)


@torch.no_grad()
def synthesise_post_contrast(network: DiffusionModelUNet, config: DiffusionConfig, x_pre: torch.Tensor,
                             initial_noise: torch.Tensor, num_steps: int, eta: float = 0.0,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """The DM's synthetic post-contrast phases in its input range, [B, P, *spatial]: a DDIM sample
    (``network.ddim_sample``), or for a regression DM its one forward at ``regression_timestep``."""
    _require_post_contrast(config)
    if config.objective == "regression":
        return one_step_post_contrast(network, config, x_pre, initial_noise, config.regression_timestep)
    clean = ddim_sample(network, config, x_pre, initial_noise, num_steps, eta, generator)
    return objectives.post_contrast(config, x_pre, clean)


def _noise_like(config: DiffusionConfig, pre: torch.Tensor, seed: int) -> torch.Tensor:
    """[B, P, *spatial] noise, one map broadcast over the batch (a slice's estimate does not depend on its batch)."""
    noise = fixed_noise((1, config.num_post_phases, *pre.shape[2:]), seed)
    return noise.expand(pre.shape[0], *noise.shape[1:]).contiguous().to(pre.device)


@torch.no_grad()
def dm_one_step_estimate(network: DiffusionModelUNet, config: DiffusionConfig, scaling: InputScaling, pre: torch.Tensor,
                         timestep: int = 250, seed: int = 0) -> torch.Tensor:
    """One-step estimate of the post-contrast phases (a regression DM: at its own timestep).

    Args:
        pre: (B, 1, H, W) nnU-Net-normalised pre-contrast slices.

    Returns:
        (B, P, H, W) estimated post-contrast phases, nnU-Net-normalised.
    """
    x_pre = scaling.scale * pre + scaling.offset
    if config.objective == "regression":
        timestep = config.regression_timestep
    post = one_step_post_contrast(network, config, x_pre, _noise_like(config, pre, seed), timestep)
    return (post - scaling.offset) / scaling.scale


@torch.no_grad()
def dm_ddim_estimate(network: DiffusionModelUNet, config: DiffusionConfig, scaling: InputScaling, pre: torch.Tensor,
                     steps: int = 20, seed: int = 0, eta: float = 0.0) -> torch.Tensor:
    """DDIM sample (``steps`` network evaluations; eta > 0 draws its step noise from ``seed`` too) of the
    post-contrast phases; shapes as ``dm_one_step_estimate``."""
    x_pre = scaling.scale * pre + scaling.offset
    generator = torch.Generator(device=pre.device).manual_seed(seed + 1) if eta > 0 else None
    post = synthesise_post_contrast(network, config, x_pre, _noise_like(config, pre, seed), steps, eta, generator)
    return (post - scaling.offset) / scaling.scale
