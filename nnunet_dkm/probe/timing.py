"""The cost of a DM setting: the truncated forward time per slice of ``KineticFeatureExtractor`` with exactly that
setting's levels (a batch of slices, best of a few runs after a warm-up)."""

from __future__ import annotations

import time

import torch

from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling
from nnunet_dkm.diffusion.features import KineticFeatureExtractor
from nnunet_dkm.probe.settings import DmSetting


def forward_ms_per_slice(config: DiffusionConfig, input_scaling: InputScaling, network: torch.nn.Module,
                         setting: DmSetting, slice_shape: tuple[int, int], device: torch.device,
                         batch_size: int = 8, repeats: int = 3) -> float:
    """Milliseconds per slice of one extractor call on a [batch_size, 1, H, W] batch (H, W: ``slice_shape``
    padded to the DM's size divisor), the best of ``repeats`` timed calls after one warm-up call."""
    divisor = config.size_divisor
    height, width = (-(-size // divisor) * divisor for size in slice_shape)
    extractor = KineticFeatureExtractor(config, input_scaling, setting.feature_config(), network).to(device)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, 1, height, width), generator=generator).to(device)
    best = float("inf")
    for run in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        extractor(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if run > 0:
            best = min(best, time.perf_counter() - start)
    return 1000.0 * best / batch_size
