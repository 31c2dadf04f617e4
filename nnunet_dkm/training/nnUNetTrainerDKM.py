"""nnUNetTrainerDKM: nnU-Net's trainer with the KineticUNet, a frozen pretrained DM and the DC + CE + SSIM loss.

Used through nnU-Net's own commands (with ``export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)``)::

    nnUNetv2_train 990 2d 0 -tr nnUNetTrainerDKM [-device cpu] [--c] [--val]
    nnUNetv2_predict -i imagesTs -o out -d 990 -c 2d -f 0 -tr nnUNetTrainerDKM

The DM checkpoint is found without flags in ``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/`` (or at
``$nnUNet_dkm_checkpoint``); one made for other plans is refused. Everything else (logging, validation,
checkpoints, ``--c``, DDP, mirroring at prediction) is nnU-Net's.
"""

from __future__ import annotations

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_dkm.architecture.builder import DKM_PLANS_KEY, build_kinetic_unet, make_plans_block
from nnunet_dkm.architecture.kinetic_unet import DEFAULT_MERGE_KERNEL_SIZE, KineticUNet
from nnunet_dkm.diffusion.checkpoint import (
    DiffusionCheckpoint,
    check_plans_identity,
    load_checkpoint,
    pretrain_command,
)
from nnunet_dkm.diffusion.config import KineticFeatureConfig
from nnunet_dkm.diffusion.locations import dm_checkpoint_path
from nnunet_dkm.loss.dc_ce_ssim import SSIM_WEIGHT, DC_CE_SSIM_loss, SSIMLoss

DEFAULT_DEVICE = torch.device("cuda")  # nnU-Net's default; -device cpu|cuda overrides it


class DkmSetupError(RuntimeError):
    """DKM training cannot start; the message names the command that fixes it."""


class nnUNetTrainerDKM(nnUNetTrainer):
    """DKM segmentation: kinetic features of a frozen DM fused into nnU-Net's planned encoder.

    Class attributes that variants override:
        kinetic_features: which DM features (mode A/B/C, levels, decoder/encoder), default A, f3 + f4, decoder.
        ssim_weight: weight of ``1 - SSIM`` in the loss (0.5, the paper's).
        use_pretrained_dm: False builds the untrained-DM control (same architecture, random frozen weights).
        fusion_merge_kernel_size: kernel of the fusions' merge convolution (1); None: the stage's own (3x3).
    """

    kinetic_features: KineticFeatureConfig = KineticFeatureConfig()
    ssim_weight: float = SSIM_WEIGHT
    use_pretrained_dm: bool = True
    fusion_merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.dm_checkpoint_file, self.dm_checkpoint = self._find_dm_checkpoint()
        block = make_plans_block(self.dm_checkpoint, self.kinetic_features, str(self.dm_checkpoint_file),
                                 self.fusion_merge_kernel_size)
        block["use_pretrained_dm"] = self.use_pretrained_dm
        # nnU-Net saves these plans next to the model; nnUNetv2_predict rebuilds the network from them
        self.plans_manager.plans["configurations"][configuration][DKM_PLANS_KEY] = block
        self.configuration_manager.configuration[DKM_PLANS_KEY] = block

    def _find_dm_checkpoint(self) -> tuple[str, DiffusionCheckpoint]:
        configuration = self.configuration_name
        dataset = self.plans_manager.dataset_name
        command = pretrain_command(dataset, configuration, self.plans_manager.plans_name)
        if len(self.configuration_manager.patch_size) != 2:
            raise DkmSetupError(
                f"configuration {configuration} is 3D, but the DKM diffusion module works on 2D slices. Train the 2d "
                f"configuration: nnUNetv2_train {dataset} 2d {self.fold} -tr {self.__class__.__name__}"
            )
        if self.preprocessed_dataset_folder_base is None:
            raise DkmSetupError("nnUNet_preprocessed is not set: export nnUNet_preprocessed=/path/to/preprocessed")
        path = dm_checkpoint_path(self.preprocessed_dataset_folder_base, configuration)
        if not path.is_file():
            raise DkmSetupError(f"no DM checkpoint at {path}. Pretrain the diffusion module first: {command}")
        checkpoint = load_checkpoint(path)
        check_plans_identity(checkpoint.plans_identity, self.plans_manager.plans, configuration, path)
        return str(path), checkpoint

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """nnU-Net 2.8's static builder: KineticUNet from the plans (their ``"dkm"`` block names the DM)."""
        return build_kinetic_unet(configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision)

    def unwrapped_network(self) -> KineticUNet:
        """The network behind DDP / torch.compile wrappers."""
        network = self.network.module if self.is_ddp else self.network
        return getattr(network, "_orig_mod", network)

    def initialize(self) -> None:
        super().initialize()
        if self.use_pretrained_dm:
            self.unwrapped_network().kinetic.network.load_state_dict(self.dm_checkpoint.weights)
        self.print_to_log_file(
            f"DKM: DM from {self.dm_checkpoint_file} ({'pretrained' if self.use_pretrained_dm else 'UNTRAINED control'}"
            f", {self.dm_checkpoint.config.preset} preset), features {self.kinetic_features}, SSIM weight "
            f"{self.ssim_weight}"
        )

    def configure_optimizers(self):
        """nnU-Net's SGD + poly schedule over the trainable parameters only (the frozen DM stays out)."""
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self) -> nn.Module:
        """nnU-Net's Dice + CE (Dice + BCE for regions) + ``ssim_weight * (1 - SSIM)``, inside deep supervision."""
        loss = super()._build_loss()
        inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        ssim = SSIMLoss(regions=self.label_manager.has_regions, ignore_label=self.label_manager.ignore_label)
        combined = DC_CE_SSIM_loss(inner, ssim, self.ssim_weight)
        if isinstance(loss, DeepSupervisionWrapper):
            loss.loss = combined
            return loss
        return combined
