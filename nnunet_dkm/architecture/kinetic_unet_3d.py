"""KineticUNet3D: nnU-Net's planned 3D U-Net (e.g. ``3d_fullres``) with kinetic blocks fed slice by slice by a 2D DM.

The frozen 2D DM (``KineticFeatureExtractor``, the same truncated walk, modes A/B/C and levels as in 2D) runs on the
B * S 2D slices of the 3D patch [B, 1, S0, S1, S2], cut across ``slice_axis`` (default 0: the first axis of nnU-Net's
preprocessed arrays, which its ``transpose_forward`` makes the lowest-resolution one; the axis its ``2d``
configuration slices along). The other two axes are the DM's 2D (in-plane) axes. The slices go through the DM in
chunks of at most ``KineticFeatureConfig.slice_chunk_pixels`` pixels, and level l's features are stacked back into
[B, C_l, S0, S1 / 2^(l-1), S2 / 2^(l-1)] (for ``slice_axis`` 0).

Stage matching: level l goes to the first encoder stage whose cumulative stride along both in-plane axes is
2^(l-1) (``stage_for_level_in_plane``); its stride along the slice axis is free (nnU-Net's 3d_fullres strides are
often anisotropic, e.g. (1, 2, 2) before (2, 2, 2)). The features' slice axis is brought to the stage's size by
average pooling (1 slice per stage voxel where the stage keeps the slices, pairs where it halves them, ...), then
fused as in 2D with 3D convolutions::

    f_stage <- merge(concat(ReLU(BN(Conv1x1x1(pool(f_dm)))), f_stage))

The frozen DM is the submodule ``kinetic`` (the same class and state-dict keys as in the 2D network): eval mode
always, no gradients, saved in nnU-Net's checkpoint. Output: (B, num_classes, S0, S1, S2), or nnU-Net's list over
decoder resolutions with deep supervision.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_dkm.architecture.kinetic_unet import DEFAULT_MERGE_KERNEL_SIZE, KineticUNet
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, slicewise_kinetic_features
from nnunet_dkm.errors import NnunetDkmError

DEFAULT_SLICE_AXIS = 0


class InPlaneSizeError(NnunetDkmError, ValueError):
    """A 3D patch whose in-plane size the 2D DM cannot take; the message names the patch size and the divisor."""


def in_plane_axes(slice_axis: int) -> tuple[int, int]:
    """The two spatial axes the DM sees as its 2D axes, in the patch's order."""
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    return tuple(axis for axis in range(3) if axis != slice_axis)  # type: ignore[return-value]


def check_in_plane_patch(patch_size: tuple[int, ...] | list[int], slice_axis: int, divisor: int) -> None:
    """Refuse a 3D patch whose in-plane sizes are not multiples of the DM's ``divisor`` (``InPlaneSizeError``)."""
    in_plane = [int(patch_size[axis]) for axis in in_plane_axes(slice_axis)]
    if any(size % divisor for size in in_plane):
        raise InPlaneSizeError(
            f"the 3D patch size {list(patch_size)} has in-plane size {in_plane} (axes {list(in_plane_axes(slice_axis))}"
            f", slices across axis {slice_axis}), which is not divisible by {divisor}, the size divisor of the 2D DM "
            f"(2^(levels-1)). Plan a patch size whose in-plane sizes are multiples of {divisor} (edit patch_size in "
            f"the plans, or plan with nnU-Net's defaults), or pretrain a DM with fewer levels (--channels)"
        )


def stage_for_level_in_plane(strides: list, level: int, slice_axis: int = DEFAULT_SLICE_AXIS) -> tuple[int, int]:
    """(stage, cumulative stride along the slice axis) of the first encoder stage that works at 1 / 2^(level-1) of
    the patch along both in-plane axes."""
    total = np.ones(3, dtype=int)
    axes = list(in_plane_axes(slice_axis))
    for stage, stride in enumerate(strides):
        total = total * np.asarray(stride, dtype=int)
        if np.all(total[axes] == 2 ** (level - 1)):
            return stage, int(total[slice_axis])
    raise ValueError(
        f"no encoder stage works at 1/{2 ** (level - 1)} of the patch size along both in-plane axes {axes} (strides "
        f"{strides}); DM feature level {level} cannot be fused into this architecture"
    )


class KineticUNet3D(KineticUNet):
    """Planned 3D encoder/decoder + kinetic fusions + a frozen 2D DM run slice by slice (``KineticUNet`` with
    slice-wise features, in-plane stage matching and depth pooling). ``decoder.deep_supervision`` behaves as in
    nnU-Net."""

    def __init__(self, planned_unet: nn.Module, kinetic: KineticFeatureExtractor,
                 merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE, slice_axis: int = DEFAULT_SLICE_AXIS):
        """
        Args:
            planned_unet: nnU-Net's 3D network built from the plans (its encoder and decoder are reused).
            kinetic: the frozen 2D DM feature extractor.
            merge_kernel_size: kernel of each fusion's merge convolution; None: the stage's own kernel.
            slice_axis: spatial axis of the patch the DM's slices are cut across (0, 1 or 2).
        """
        if kinetic.diffusion_config.spatial_dims != 2:
            raise ValueError("KineticUNet3D runs a 2D DM slice by slice; this DM is "
                             f"{kinetic.diffusion_config.spatial_dims}D")
        if planned_unet.encoder.conv_op is not nn.Conv3d:
            raise ValueError(f"KineticUNet3D needs a 3D planned network, got {planned_unet.encoder.conv_op.__name__}")
        in_plane_axes(slice_axis)  # refuses an axis other than 0, 1, 2
        self.slice_axis = slice_axis  # read by stage_of_level while KineticUNet builds the fusions
        super().__init__(planned_unet, kinetic, merge_kernel_size)
        strides = self.encoder_strides()
        self.slice_stride_of_stage: dict[int, int] = {
            stage: stage_for_level_in_plane(strides, level, slice_axis)[1]
            for stage, level in self.level_of_stage.items()
        }

    def stage_of_level(self, strides: list[list[int]], level: int) -> int:
        """The first stage at 1 / 2^(level-1) along both in-plane axes (any stride along the slice axis)."""
        return stage_for_level_in_plane(strides, level, self.slice_axis)[0]

    def kinetic_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The DM's features of (B, 1, S0, S1, S2) patches, stacked per level (``slicewise_kinetic_features``)."""
        return slicewise_kinetic_features(self.kinetic, x, self.slice_axis)

    @staticmethod
    def fit_to_stage(features: torch.Tensor, stage_output: torch.Tensor) -> torch.Tensor:
        """Stacked features [B, C, *spatial] average-pooled along the slice axis to the stage's spatial size (plain
        average pooling over 1, 2, 4 ... slices where the sizes divide, as nnU-Net plans them)."""
        return F.adaptive_avg_pool3d(features, stage_output.shape[2:])
