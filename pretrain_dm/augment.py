"""Augmentation of DM training patches, comparable to what nnU-Net applies to segmentation patches.

At segmentation time the frozen DM sees nnU-Net's augmented pre-contrast patches (rotation,
scaling, mirroring, brightness, contrast, gamma, noise). Its pretraining therefore sees the same
kinds of transforms, with one rule: every transform that changes the pre-contrast image changes the
post-contrast phases **identically** (same geometry, same intensity map), so that the pre -> post
relation, i.e. the kinetics, is preserved. Only Gaussian noise is added to the pre-contrast
condition alone (scanner noise is not a property of the tissue). Probabilities and ranges follow
nnU-Net's 2D defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities (per patch) and ranges of each transform; ``enabled=False`` switches all off."""

    enabled: bool = True
    p_rotation: float = 0.2
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    p_scaling: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)
    p_mirror: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)


def _uniform(generator: torch.Generator, n: int, bounds: tuple[float, float]) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (bounds[1] - bounds[0]) + bounds[0]


def _chosen(generator: torch.Generator, n: int, probability: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) < probability


def augment_patches(patches: torch.Tensor, config: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of patches.

    Args:
        patches: (B, 1 + K, H, W) float32 on CPU: channel 0 pre-contrast, 1..K post-contrast, nnU-Net-normalised.
        config: what to apply.
        generator: CPU generator for every random choice (seeded by the caller; part of the resumable state).

    Returns:
        (B, 1 + K, H, W) augmented patches.
    """
    if not config.enabled:
        return patches
    batch = patches.shape[0]
    out = patches.clone()

    # geometry: one affine per patch, shared by all channels
    angle = torch.where(_chosen(generator, batch, config.p_rotation), _uniform(generator, batch, config.rotation_range),
                        torch.zeros(batch))
    zoom = torch.where(_chosen(generator, batch, config.p_scaling), _uniform(generator, batch, config.scaling_range),
                       torch.ones(batch))
    if bool((angle != 0).any() or (zoom != 1).any()):
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(batch)], 1),
                             torch.stack([sin, cos, torch.zeros(batch)], 1)], 1)
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    for axis in (2, 3):
        flip = _chosen(generator, batch, config.p_mirror)
        if bool(flip.any()):
            out[flip] = out[flip].flip(axis - 1)

    # intensity: the same map for pre and post, so that post - pre stays the enhancement
    brightness = torch.where(_chosen(generator, batch, config.p_brightness),
                             _uniform(generator, batch, config.brightness_range), torch.ones(batch))
    out = out * brightness.view(-1, 1, 1, 1)
    contrast = torch.where(_chosen(generator, batch, config.p_contrast),
                           _uniform(generator, batch, config.contrast_range), torch.ones(batch))
    mean = out[:, :1].mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * contrast.view(-1, 1, 1, 1) + mean
    gamma_chosen = _chosen(generator, batch, config.p_gamma)
    gamma = _uniform(generator, batch, config.gamma_range)
    if bool(gamma_chosen.any()):
        low = out[:, :1].amin(dim=(2, 3), keepdim=True)
        span = (out[:, :1].amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-6)
        mapped = ((out - low) / span).clamp_min(0) ** gamma.view(-1, 1, 1, 1) * span + low
        out = torch.where(gamma_chosen.view(-1, 1, 1, 1), mapped, out)

    # scanner noise on the condition only
    noise_chosen = _chosen(generator, batch, config.p_noise)
    sigma = _uniform(generator, batch, config.noise_variance).sqrt() * noise_chosen
    noise = torch.randn(out[:, :1].shape, generator=generator) * sigma.view(-1, 1, 1, 1)
    out[:, :1] = out[:, :1] + noise
    return out
