"""The pretraining objective and its randomness: per-step generators, the enhancement-weighted MSE and autocast."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def step_generators(seed: int, rank: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of one training step on one rank (see the module docstring)."""
    sequence = np.random.SeedSequence([seed, rank, step])
    torch_generator = torch.Generator().manual_seed(int(sequence.generate_state(1, dtype=np.uint64)[0] >> 1))
    return np.random.default_rng(sequence), torch_generator


def enhancement_weights(x_pre: torch.Tensor, x_post: torch.Tensor, weight: float) -> torch.Tensor | None:
    """Per-pixel loss weights (B, 1, H, W) = 1 + weight * mean_k |x_post_k - x_pre|, or None for weight 0.

    Strongly enhancing pixels (tumour) are a few percent of a slice, so the plain loss barely rewards predicting
    their enhancement; weighting biases the DM towards it (it is then no longer the unweighted DDPM objective).
    x_pre: (B, 1, H, W); x_post: (B, K, H, W), both in the DM's input range.
    """
    if weight == 0:
        return None
    return 1.0 + weight * (x_post - x_pre).abs().mean(dim=1, keepdim=True)


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error, each pixel weighted by ``weights`` (broadcast over channels) normalised to mean 1."""
    if weights is None:
        return torch.nn.functional.mse_loss(prediction, target)
    return (weights * (prediction - target).square()).mean() / weights.mean()


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for the requested precision; ``auto`` means bf16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
