"""The DM network and its noise schedules, built from a ``DiffusionConfig`` with MONAI's classes.

Shapes (2D; 3D adds a depth axis after the channels):
    network input   ``cat[x_t, x_pre]``: [B, num_post_phases + 1, H, W]
    network output  noise / velocity / clean image, per ``prediction_type``: [B, num_post_phases, H, W]
    timesteps       [B] integers in [0, T)
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from nnunet_dkm.diffusion import objectives
from nnunet_dkm.diffusion.config import DiffusionConfig


def build_network(config: DiffusionConfig) -> DiffusionModelUNet:
    """A freshly initialised MONAI ``DiffusionModelUNet`` with the config's architecture (no cross-attention)."""
    return DiffusionModelUNet(spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                              out_channels=config.out_channels, num_res_blocks=config.num_res_blocks,
                              channels=config.channels, attention_levels=config.attention_levels,
                              norm_num_groups=config.norm_num_groups, norm_eps=config.norm_eps,
                              resblock_updown=config.resblock_updown, num_head_channels=config.num_head_channels)


def _schedule(config: DiffusionConfig) -> dict:
    """The schedule arguments MONAI's DDPM and DDIM schedulers share."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "schedule": config.schedule,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "clip_sample": config.clip_sample,
        "prediction_type": config.prediction_type,
    }


def make_ddpm_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """MONAI DDPM scheduler of the config's schedule: ``add_noise``, ``get_velocity`` and ancestral sampling."""
    return DDPMScheduler(**_schedule(config))


def make_ddim_scheduler(config: DiffusionConfig) -> DDIMScheduler:
    """MONAI DDIM scheduler of the config's schedule, for deterministic few-step sampling (eta = 0)."""
    return DDIMScheduler(**_schedule(config))


def training_target(config: DiffusionConfig, scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output for ``x_t = add_noise(clean, noise, timesteps)``.

    Args:
        clean: post-contrast phases in the DM's input range, [B, P, *spatial].
        noise: the noise added, same shape.
        timesteps: [B] diffusion steps.

    Returns:
        ``noise`` (epsilon), ``clean`` (sample) or the velocity ``sqrt(abar) noise - sqrt(1-abar) clean``
        (v_prediction), [B, P, *spatial].
    """
    if config.prediction_type == "epsilon":
        return noise
    if config.prediction_type == "sample":
        return clean
    return scheduler.get_velocity(clean, noise, timesteps)


def ddim_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """The K DDIM timesteps, ``T-1, T-1-s, ..., T-1-(K-1)s`` with stride ``s = T // K``.

    MONAI 1.6's ``DDIMScheduler.set_timesteps`` spaces timesteps with ``linspace`` while ``step`` assumes the
    previous timestep is ``t - T // K``; for K not dividing T - 1 the two disagree (e.g. K = 5: steps at
    999, 749, ... but each update lands on 799, 549, ...). These trailing timesteps follow the stride that ``step``
    uses, so every update lands exactly on the next timestep. Where K does not divide T the last update lands on
    t = (T-1) mod s, not on the clean image; ``ddim_sample`` therefore returns the last step's
    clean-image estimate.
    """
    stride = num_train_timesteps // num_steps
    return [num_train_timesteps - 1 - k * stride for k in range(num_steps)]


@torch.no_grad()
def ddim_sample(network: DiffusionModelUNet, config: DiffusionConfig, x_pre: torch.Tensor, initial_noise: torch.Tensor,
                num_steps: int, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM sampling of the DM's clean image (``objectives.clean_image``) given the pre-contrast image.

    Args:
        network: the DM.
        config: its config (schedule, prediction type, objective).
        x_pre: pre-contrast image in the DM's input range, [B, 1, *spatial].
        initial_noise: x_T, [B, P, *spatial] with P = ``config.num_post_phases``.
        num_steps: K, the number of network evaluations.
        eta: DDIM's noise weight (0: deterministic DDIM; 1: DDPM-like ancestral steps).
        generator: draws the noise of eta > 0, on the sample's device (the same state gives the same sample).

    Returns:
        The clean image in the DM's input range, [B, P, *spatial], float32: the clean-image estimate of the last step
        (with eta = 0 this is exactly the DDIM sample where the last step reaches t = -1).
    """
    scheduler = make_ddim_scheduler(config)
    scheduler.set_timesteps(num_steps)
    timesteps = ddim_timesteps(config.num_train_timesteps, num_steps)
    scheduler.timesteps = torch.tensor(timesteps, dtype=torch.long)
    sample = initial_noise.float()
    condition = objectives.condition(config, x_pre).to(sample.dtype)
    predicted_clean = sample
    for timestep in timesteps:
        t_batch = torch.full((sample.shape[0],), timestep, device=sample.device, dtype=torch.long)
        model_output = network(torch.cat([sample, condition], dim=1), t_batch)
        sample, predicted_clean = scheduler.step(model_output.float(), timestep, sample, eta=eta, generator=generator)
    return predicted_clean
