"""DKM's segmentation loss: nnU-Net's Dice + CE (or Dice + BCE for regions) + weight * (1 - global SSIM).

``L = L_CE + L_Dice + 0.5 * (1 - SSIM(S, G))`` (Lv et al. 2023), where S are the predicted foreground
probabilities (softmax; sigmoid for region training) and G the one-hot ground truth, SSIM averaged over
foreground classes (regions) and samples. nnU-Net's own Dice + CE module is reused unchanged and its
deep-supervision wrapper is applied around this loss by the trainer. The ignore label is respected: ignored
voxels are left out of the SSIM statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_dkm.loss.ssim import global_ssim

SSIM_WEIGHT = 0.5


class SSIMLoss(nn.Module):
    """``1 - mean global SSIM`` of the foreground probability maps.

    Args:
        regions: network outputs are region logits (sigmoid, target already one-hot with an ignore channel last if
            ``ignore_label`` is set) instead of class logits (softmax, target a label map).
        ignore_label: label value to leave out (class training), or anything not None to read the last target
            channel as the ignore mask (region training, nnU-Net's convention).
    """

    def __init__(self, regions: bool = False, ignore_label: int | None = None):
        super().__init__()
        self.regions = regions
        self.ignore_label = ignore_label

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """net_output: (B, C, *spatial) logits; target: (B, 1, *spatial) labels, or (B, R[+1], *spatial) regions."""
        mask = None
        if self.regions:
            if self.ignore_label is not None:
                mask = ~target[:, -1:].bool()
                target = target[:, :-1]
            probabilities = torch.sigmoid(net_output.float())
            one_hot = target.float()
        else:
            labels = target[:, 0].long()
            if self.ignore_label is not None:
                mask = (labels != self.ignore_label)[:, None]
                labels = torch.where(mask[:, 0], labels, torch.zeros_like(labels))
            probabilities = torch.softmax(net_output.float(), dim=1)[:, 1:]
            one_hot = torch.nn.functional.one_hot(labels, net_output.shape[1]).movedim(-1, 1)[:, 1:].float()
        return 1.0 - global_ssim(probabilities, one_hot, mask).mean()


class DC_CE_SSIM_loss(nn.Module):
    """nnU-Net's compound loss plus ``ssim_weight * (1 - SSIM)``; same call signature as nnU-Net's losses."""

    def __init__(self, base_loss: nn.Module, ssim_loss: SSIMLoss, ssim_weight: float = SSIM_WEIGHT):
        super().__init__()
        self.base_loss = base_loss
        self.ssim = ssim_loss
        self.ssim_weight = ssim_weight

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base_loss(net_output, target) + self.ssim_weight * self.ssim(net_output, target)
