"""What a DM learns, and how its clean image relates to the post-contrast phases (``DiffusionConfig.objective`` and
``DiffusionConfig.target``).

All tensors are in the DM's input range (``InputScaling`` applied); ``x_pre`` is [B, 1, *spatial], ``x_post`` and
clean images are [B, P, *spatial] with P = ``config.num_post_phases``.

| objective | clean image ``x_0`` | condition channel | timesteps |
|---|---|---|---|
| kinetic | ``x_post`` (target "post") or ``x_post - x_pre`` (target "enhancement") | ``x_pre`` | the schedule's |
| pre-only | ``x_pre`` (diffusion of the pre-contrast image: no kinetics) | zeros | the schedule's |
| regression | as kinetic | ``x_pre`` | ``regression_timestep`` only: no diffusion |

The "identity guess" is the clean image a DM would produce if contrast changed nothing: ``x_pre`` for target
"post" and the pre-only objective, zeros for target "enhancement". Feature mode A and the regression objective noise
it at t* (the DM never sees a real post-contrast image at feature or synthesis time).
"""

from __future__ import annotations

import torch

from nnunet_dkm.diffusion.config import DiffusionConfig


def per_phase(config: DiffusionConfig, x_pre: torch.Tensor) -> torch.Tensor:
    """``x_pre`` repeated over the P post-contrast phases: [B, P, *spatial] (a view)."""
    return x_pre.expand(-1, config.num_post_phases, *x_pre.shape[2:])


def condition(config: DiffusionConfig, x_pre: torch.Tensor) -> torch.Tensor:
    """The condition channel fed beside ``x_t``: ``x_pre``, or zeros for the pre-only objective; [B, 1, *spatial]."""
    return torch.zeros_like(x_pre) if config.objective == "pre-only" else x_pre


def clean_image(config: DiffusionConfig, x_pre: torch.Tensor, x_post: torch.Tensor) -> torch.Tensor:
    """The clean image ``x_0`` the DM is trained to generate from a training patch; [B, P, *spatial]."""
    if config.objective == "pre-only":
        return per_phase(config, x_pre)
    if config.target == "enhancement":
        return x_post - x_pre
    return x_post


def identity_guess(config: DiffusionConfig, x_pre: torch.Tensor) -> torch.Tensor:
    """The clean image if contrast changed nothing (see the module docstring); [B, P, *spatial]."""
    if config.target == "enhancement":
        return torch.zeros_like(per_phase(config, x_pre))
    return per_phase(config, x_pre)


def post_contrast(config: DiffusionConfig, x_pre: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The post-contrast phases a clean-image estimate stands for (``x_pre + clean`` for target "enhancement")."""
    return clean + x_pre if config.target == "enhancement" else clean


def synthesises_post_contrast(config: DiffusionConfig) -> bool:
    """Whether the DM's clean image is (or gives) the post-contrast phases: not for the pre-only objective."""
    return config.objective != "pre-only"
