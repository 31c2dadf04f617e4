"""KineticUNet: nnU-Net's planned U-Net with kinetic blocks fed by a frozen diffusion module.

The encoder and decoder are exactly the ones nnU-Net plans (built by nnU-Net's own
``get_network_from_plans`` from whatever architecture class the plans name: ``PlainConvUNet``,
``ResidualEncoderUNet``, ...). At every encoder stage whose output resolution matches a selected DM
feature level, a kinetic fusion merges the DM features into the stage output::

    f_stage <- merge(concat(ReLU(BN(Conv1x1(f_dm))), f_stage))

``merge`` is one convolution of the stage's own kind (norm, nonlinearity) back to the stage's channel
count, so skip connections and nnU-Net's ``UNetDecoder`` (with its deep-supervision switch) stay as planned.
Its kernel is 1x1 by default; ``merge_kernel_size=None`` uses the stage's own kernel (3x3).

The frozen DM (``KineticFeatureExtractor``) is a submodule: always in eval mode, no gradients, its weights
saved in every checkpoint.

The adapters' BatchNorm is the design's (and the paper's). Under ``nnUNetv2_train -num_gpus N`` nnU-Net's DDP path
turns it into SyncBatchNorm inside the network it compiles on CUDA, a combination vanilla nnU-Net (InstanceNorm)
never meets and CPU tests cannot run (SyncBatchNorm refuses CPU input): untested until a multi-GPU run. The planned
``norm_op`` would avoid it but changes the network, so it waits for the demo benchmark's run-level intervals.

Shapes (2D): input (B, 1, H, W) pre-contrast; DM level l gives (B, C_l, H / 2^(l-1), W / 2^(l-1)); output
(B, num_classes, H, W), or a list over decoder resolutions with deep supervision.
"""

from __future__ import annotations

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_dkm.diffusion.features import KineticFeatureExtractor, chunked_kinetic_features


class KineticFusion(nn.Module):
    """``merge(concat(ReLU(BN(Conv1x1(f_dm))), f_sm))`` with the output channels of ``f_sm``."""

    def __init__(self, dm_channels: int, stage_channels: int, conv_op: type[nn.Module], conv_bias: bool,
                 norm_op: type[nn.Module] | None, norm_op_kwargs: dict | None, nonlin: type[nn.Module] | None,
                 nonlin_kwargs: dict | None, kernel_size: int | list[int]):
        super().__init__()
        batch_norm = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}[conv_op]
        self.adapter = nn.Sequential(conv_op(dm_channels, stage_channels, kernel_size=1, bias=False),
                                     batch_norm(stage_channels), nn.ReLU(inplace=True))
        self.merge = ConvDropoutNormReLU(conv_op, 2 * stage_channels, stage_channels, kernel_size, 1, conv_bias,
                                         norm_op, norm_op_kwargs, None, None, nonlin, nonlin_kwargs)

    def forward(self, stage_features: torch.Tensor, dm_features: torch.Tensor) -> torch.Tensor:
        """stage_features: (B, C_s, h, w); dm_features: (B, C_l, h, w) -> (B, C_s, h, w)."""
        return self.merge(torch.cat([self.adapter(dm_features), stage_features], dim=1))


DEFAULT_MERGE_KERNEL_SIZE = 1


def stage_kernel(kernel_sizes: int | list, stage: int) -> int | list[int]:
    """The planned convolution kernel of one encoder stage."""
    return kernel_sizes[stage] if isinstance(kernel_sizes, (list, tuple)) else kernel_sizes


def stage_for_level(strides: list, level: int) -> int:
    """Index of the encoder stage whose output is 2^(level-1) times smaller than the input along every axis."""
    total = np.ones(len(strides[0]), dtype=int)
    for stage, stride in enumerate(strides):
        total = total * np.asarray(stride, dtype=int)
        if np.all(total == 2 ** (level - 1)):
            return stage
    raise ValueError(
        f"no encoder stage works at 1/{2 ** (level - 1)} of the patch size along every axis (strides {strides}); "
        f"DM feature level {level} cannot be fused into this architecture"
    )


class KineticUNet(nn.Module):
    """Planned encoder/decoder + kinetic fusions + frozen DM. ``decoder.deep_supervision`` behaves as in nnU-Net."""

    def __init__(self, planned_unet: nn.Module, kinetic: KineticFeatureExtractor,
                 merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE):
        """
        Args:
            planned_unet: nnU-Net's network built from the plans (its encoder and decoder are reused).
            kinetic: the frozen DM feature extractor.
            merge_kernel_size: kernel of each fusion's merge convolution; None: the stage's own kernel.
        """
        super().__init__()
        self.encoder = planned_unet.encoder
        self.decoder = planned_unet.decoder
        self.kinetic = kinetic
        encoder = self.encoder
        kernel_sizes = encoder.kernel_sizes
        self.level_of_stage: dict[int, int] = {}
        fusions = {}
        for level, dm_channels in kinetic.level_channels.items():
            stage = self.stage_of_level(self.encoder_strides(), level)
            self.level_of_stage[stage] = level
            fusions[str(stage)] = KineticFusion(
                dm_channels, encoder.output_channels[stage], encoder.conv_op, encoder.conv_bias, encoder.norm_op,
                encoder.norm_op_kwargs, encoder.nonlin, encoder.nonlin_kwargs,
                merge_kernel_size if merge_kernel_size is not None else stage_kernel(kernel_sizes, stage),
            )
        self.fusions = nn.ModuleDict(fusions)
        self.fusions.apply(InitWeights_He(1e-2))

    def train(self, mode: bool = True) -> KineticUNet:
        """Train the segmentation parts; the DM stays in eval mode (its ``train`` is pinned)."""
        super().train(mode)
        self.kinetic.train(False)
        return self

    def encoder_strides(self) -> list[list[int]]:
        """The planned encoder's stride of every stage, one entry per spatial axis."""
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[self.encoder.conv_op]
        return [list(s) if isinstance(s, (list, tuple)) else [s] * dims for s in self.encoder.strides]

    def stage_of_level(self, strides: list[list[int]], level: int) -> int:
        """The encoder stage that receives DM level ``level`` (2D: the one at 1 / 2^(level-1) along every axis)."""
        return stage_for_level(strides, level)

    def kinetic_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The frozen DM's features of pre-contrast patches x (B, 1, H, W): {level: (B, C_l, H_l, W_l)}, in chunks of
        at most ``slice_chunk_pixels`` pixels (the 3D path's memory bound; a planned batch within it is one call)."""
        return chunked_kinetic_features(self.kinetic, x)

    def fit_to_stage(self, features: torch.Tensor, stage_output: torch.Tensor) -> torch.Tensor:
        """DM features as the stage's fusion takes them (2D: unchanged, they have the stage's size)."""
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """x: (B, 1, *spatial) nnU-Net-normalised pre-contrast patches."""
        dm_features = self.kinetic_features(x[:, :1])
        stem = getattr(self.encoder, "stem", None)
        hidden = stem(x) if stem is not None else x
        skips = []
        for index, stage in enumerate(self.encoder.stages):
            hidden = stage(hidden)
            if index in self.level_of_stage:
                features = self.fit_to_stage(dm_features[self.level_of_stage[index]], hidden)
                hidden = self.fusions[str(index)](hidden, features)
            skips.append(hidden)
        return self.decoder(skips)
