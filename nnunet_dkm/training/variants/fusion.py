"""DKM with another kinetic fusion (the default merges with a 1x1 convolution)."""

from __future__ import annotations

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM


class nnUNetTrainerDKM_merge3x3(nnUNetTrainerDKM):
    """DKM whose fusions merge with the stage's own (3x3) kernel instead of 1x1."""

    fusion_merge_kernel_size = None
