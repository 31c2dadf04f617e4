"""The paper's own segmentation module (Lv et al. 2023): 4 kinetic blocks and 4 up blocks.

Kinetic block i (i = 1..4, channels C_i = 128, 256, 512, 1024, resolution H / 2^(i-1)):
``f = concat(ReLU(BN(Conv1x1(f_dm_i))) with C_i channels, f_in)`` where DM level i is selected (else
``f = f_in``), then two conv-BN-ReLU with a residual addition (1x1 projection of ``f``), then max-pooling
for the next block.
Up blocks: bilinear upsampling, concatenation with the block's skip, two conv-BN-ReLU; a 1x1 head.
No deep supervision (the paper has none); ``decoder.deep_supervision`` exists so nnU-Net's switch works.
All norms are BatchNorm (the paper's): SyncBatchNorm under nnU-Net's multi-GPU DDP, untested without GPUs
(``kinetic_unet.py``). The DM runs in chunks of at most ``slice_chunk_pixels`` pixels of the batch.

Shapes: input (B, 1, H, W), H and W divisible by 8; output (B, num_classes, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_dkm.diffusion.features import KineticFeatureExtractor, chunked_kinetic_features

PAPER_CHANNELS = (128, 256, 512, 1024)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class PaperKineticBlock(nn.Module):
    """Fusion (where a DM level is given) + two conv-BN-ReLU with a residual addition."""

    def __init__(self, in_channels: int, out_channels: int, dm_channels: int | None):
        super().__init__()
        self.adapter = None
        if dm_channels is not None:
            self.adapter = nn.Sequential(nn.Conv2d(dm_channels, out_channels, 1, bias=False),
                                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
            in_channels = in_channels + out_channels
        self.convs = nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))
        self.residual = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, dm_features: torch.Tensor | None) -> torch.Tensor:
        if self.adapter is not None:
            x = torch.cat([self.adapter(dm_features), x], dim=1)
        return self.convs(x) + self.residual(x)


class PaperDecoder(nn.Module):
    """4 up blocks (the deepest keeps its resolution) and the 1x1 segmentation head."""

    def __init__(self, channels: tuple[int, ...], num_classes: int):
        super().__init__()
        self.deep_supervision = False
        self.bottleneck = nn.Sequential(conv_bn_relu(channels[-1], channels[-1]), conv_bn_relu(channels[-1],
                                                                                                channels[-1]))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(conv_bn_relu(channels[i + 1] + channels[i], channels[i]), conv_bn_relu(channels[i],
                                                                                                 channels[i]))
            for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.bottleneck(skips[-1])
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class PaperKineticNet(nn.Module):
    """The paper's segmentation module fed by a frozen DM (``kinetic``), input (B, 1, H, W)."""

    def __init__(self, kinetic: KineticFeatureExtractor, num_classes: int, channels: tuple[int, ...] = PAPER_CHANNELS):
        super().__init__()
        self.kinetic = kinetic
        levels = kinetic.level_channels
        in_channels = [1, *channels[:-1]]
        self.blocks = nn.ModuleList(
            PaperKineticBlock(in_channels[i], channels[i], levels.get(i + 1)) for i in range(len(channels))
        )
        self.decoder = PaperDecoder(tuple(channels), num_classes)

    def train(self, mode: bool = True) -> PaperKineticNet:
        super().train(mode)
        self.kinetic.train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dm_features = chunked_kinetic_features(self.kinetic, x[:, :1])
        skips = []
        for index, block in enumerate(self.blocks):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = block(x, dm_features.get(index + 1))
            skips.append(x)
        return self.decoder(skips)
