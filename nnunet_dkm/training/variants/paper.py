"""nnUNetTrainerDKMPaper: the paper's segmentation module and optimiser inside nnU-Net's pipeline.

Paper settings: 4 kinetic blocks (128-256-512-1024) and 4 up blocks, Adam with learning rate 2e-5 and weight
decay 1e-6 (constant), no data augmentation (nnU-Net's own ``nnUNetTrainerNoDA`` supplies that part), no deep
supervision. Data loading, patch sampling, validation and prediction stay nnU-Net's.
"""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import nnUNetTrainerNoDA
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_dkm.architecture.builder import build_paper_network
from nnunet_dkm.training.nnUNetTrainerDKM import DEFAULT_DEVICE, nnUNetTrainerDKM, trainable_parameters

PAPER_LEARNING_RATE = 2e-5
PAPER_WEIGHT_DECAY = 1e-6


class nnUNetTrainerDKMPaper(nnUNetTrainerDKM, nnUNetTrainerNoDA):
    """DKM with the paper's segmentation module, Adam 2e-5 / 1e-6, no augmentation, no deep supervision."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.initial_lr = PAPER_LEARNING_RATE
        self.weight_decay = PAPER_WEIGHT_DECAY

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_paper_network(configuration_manager, num_input_channels, num_output_channels)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(trainable_parameters(self.network), lr=self.initial_lr,
                                     weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)  # constant
