"""DKM with the frozen DM in lower precision (``benchmarks/results_feature_precision.md``)."""

from __future__ import annotations

from dataclasses import replace

import torch

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: CUDA compute capability 8.0 or above
    (``torch.cuda.is_bf16_supported(including_emulation=False)``), or a CPU with oneDNN bf16 kernels (AVX-512 or
    ARM bf16)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


class nnUNetTrainerDKM_bf16(nnUNetTrainerDKM):
    """DKM with the frozen DM under bfloat16 autocast (GPUs, CPUs with bf16 support). The choice is the user's; the
    log says whether the device runs bf16 natively (emulated bf16 was 8x slower than fp32 on an AMD EPYC CPU, issue
    33)."""

    kinetic_features = replace(nnUNetTrainerDKM.kinetic_features, autocast=True)

    def initialize(self) -> None:
        super().initialize()
        if native_bf16(self.device):
            self.print_to_log_file(f"DKM: the DM runs in bf16 autocast; {self.device} runs bf16 natively")
        else:
            self.print_to_log_file(f"DKM: WARNING: the DM runs in bf16 autocast, but {self.device} has no native bf16 "
                                   f"(emulated bf16 is slower than fp32): nnUNetTrainerDKM runs the DM in fp32")
