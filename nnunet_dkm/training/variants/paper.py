"""nnUNetTrainerDKMPaper: the paper's segmentation module and optimiser inside nnU-Net's pipeline.

Paper settings: 4 kinetic blocks (128-256-512-1024) and 4 up blocks, Adam with learning rate 2e-5 and weight
decay 1e-6 (constant), no data augmentation (nnU-Net's own ``nnUNetTrainerNoDA`` supplies that part), no deep
supervision. Data loading, patch sampling, validation and prediction stay nnU-Net's. The paper's module is 2D: 3D
configurations are refused (before nnU-Net creates the output folder); ``nnUNetTrainerDKM`` trains them.
"""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import nnUNetTrainerNoDA
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_dkm.architecture.builder import MissingDkmBlockError, build_paper_network, missing_block_message
from nnunet_dkm.diffusion.config import KineticFeatureConfig
from nnunet_dkm.training.nnUNetTrainerDKM import DEFAULT_DEVICE, DkmSetupError, nnUNetTrainerDKM, trainable_parameters

PAPER_LEARNING_RATE = 2e-5
# the paper's features: noised pre-contrast at t* = 250, decoder levels f3 + f4 (its Table 2's best)
PAPER_FEATURES = KineticFeatureConfig(mode="A", levels=(3, 4), source="decoder", timestep=250)
PAPER_WEIGHT_DECAY = 1e-6


class nnUNetTrainerDKMPaper(nnUNetTrainerDKM, nnUNetTrainerNoDA):
    """DKM with the paper's segmentation module and features, Adam 2e-5 / 1e-6, no augmentation, no deep
    supervision."""

    kinetic_features = PAPER_FEATURES

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.initial_lr = PAPER_LEARNING_RATE
        self.weight_decay = PAPER_WEIGHT_DECAY

    @classmethod
    def check_configuration(cls, plans_manager: PlansManager, configuration: str, fold: int) -> None:
        """The paper's module is 2D: refuse 3D configurations, naming the 2d command and the 3D alternative."""
        if len(plans_manager.get_configuration(configuration).patch_size) != 2:
            dataset = plans_manager.dataset_name
            raise DkmSetupError(
                f"configuration {configuration} is 3D, but {cls.__name__} is the paper's 2D segmentation module. "
                f"Train it on the 2d configuration: nnUNetv2_train {dataset} 2d {fold} -tr {cls.__name__} "
                f"(or DKM in 3D with nnU-Net's planned network: nnUNetv2_train {dataset} {configuration} {fold} "
                f"-tr {cls.__name__.replace('nnUNetTrainerDKMPaper', 'nnUNetTrainerDKM')})"
            )
        super().check_configuration(plans_manager, configuration, fold)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        try:
            return build_paper_network(configuration_manager, num_input_channels, num_output_channels)
        except MissingDkmBlockError as error:
            raise MissingDkmBlockError(missing_block_message(plans_manager, configuration_manager,
                                                             cls.__name__)) from error

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(trainable_parameters(self.network), lr=self.initial_lr,
                                     weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)  # constant
