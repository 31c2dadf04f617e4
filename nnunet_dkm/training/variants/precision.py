"""DKM with the frozen DM in lower precision (``benchmarks/results_feature_precision.md``)."""

from __future__ import annotations

from dataclasses import replace

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM


class nnUNetTrainerDKM_bf16(nnUNetTrainerDKM):
    """DKM with the frozen DM under bfloat16 autocast (GPUs, CPUs with bf16 support)."""

    kinetic_features = replace(nnUNetTrainerDKM.kinetic_features, autocast=True)
