"""nnUNetTrainerDKM: nnU-Net's trainer with the KineticUNet, a frozen pretrained DM and the DC + CE + SSIM loss.

Used through nnU-Net's own commands::

    nnUNetv2_train 990 2d 0 -tr nnUNetTrainerDKM [-device cpu] [--c] [--val]
    nnUNetv2_predict -i imagesTs -o out -d 990 -c 2d -f 0 -tr nnUNetTrainerDKM
    nnUNetv2_train 990 3d_fullres 0 -tr nnUNetTrainerDKM       # the 2D DM runs slice by slice inside the 3D patch

The DM checkpoint is found without flags (``nnunet_dkm.paths.dm_checkpoint_location``:
``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt``, or ``$nnUNet_dkm_checkpoint``); one made for
other plans is refused. Both checks run before nnU-Net creates the model's output folder, so a refused training
leaves nothing behind. Everything else (logging, validation, checkpoints, ``--c``, DDP, mirroring at prediction) is
nnU-Net's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.file_path_utilities import get_output_folder
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_dkm.architecture.builder import (
    DKM_PLANS_KEY,
    MissingDkmBlockError,
    build_kinetic_unet,
    checkpoint_slice_axis,
    make_plans_block,
    missing_block_message,
)
from nnunet_dkm.architecture.kinetic_unet import DEFAULT_MERGE_KERNEL_SIZE, KineticUNet
from nnunet_dkm.architecture.kinetic_unet_3d import (
    InPlaneSizeError,
    KineticUNet3D,
    check_in_plane_patch,
    stage_for_level_in_plane,
)
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, check_plans_identity, load_checkpoint
from nnunet_dkm.diffusion.config import DiffusionConfig, KineticFeatureConfig
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.loss.dc_ce_ssim import SSIM_WEIGHT, DC_CE_SSIM_loss, SSIMLoss
from nnunet_dkm.paths import (
    DmCheckpointLocation,
    existing_dm_checkpoint,
    nnunet_folder,
    pretrain_command,
    unfinished_dm_message,
)

DEFAULT_DEVICE = torch.device("cuda")  # nnU-Net's default; -device cpu|cuda overrides it


class DkmSetupError(NnunetDkmError, RuntimeError):
    """DKM training cannot start; the message names the command that fixes it."""


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser may change: everything but the frozen DM (which has ``requires_grad`` off)."""
    return [parameter for parameter in network.parameters() if parameter.requires_grad]


def steps_to_cpu(optimizer: torch.optim.Optimizer) -> None:
    """Move the optimiser's ``state["step"]`` tensors to the CPU, where PyTorch keeps them unless the optimiser is
    ``capturable`` or ``fused`` (then they must stay with the parameters)."""
    for group in optimizer.param_groups:
        if group.get("capturable") or group.get("fused"):
            continue
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].cpu()


class nnUNetTrainerDKM(nnUNetTrainer):
    """DKM segmentation: kinetic features of a frozen DM fused into nnU-Net's planned encoder.

    Class attributes that variants override:
        kinetic_features: which DM features (mode A/B/C, t*, levels, decoder/encoder); default
            ``KineticFeatureConfig()``: mode B (pure noise at t = T-1), decoder level f1.
        ssim_weight: weight of ``1 - SSIM`` in the loss (0.5, the paper's).
        use_pretrained_dm: False builds the untrained-DM control (same architecture, random frozen weights).
        dm_objective: the objective the DM must have been pretrained with (``nnUNetv2_dkm_pretrain --objective``):
            "kinetic" (DKM), "pre-only" or "regression" (the controls); its checkpoint file is named after it.
        fusion_merge_kernel_size: kernel of the fusions' merge convolution (1); None: the stage's own (3x3).
    """

    kinetic_features: KineticFeatureConfig = KineticFeatureConfig()
    ssim_weight: float = SSIM_WEIGHT
    use_pretrained_dm: bool = True
    dm_objective: str = "kinetic"
    fusion_merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        # checked before nnU-Net's __init__, which creates the output folder and its log
        self.dm_checkpoint_location, self.dm_checkpoint = self.find_dm_checkpoint(PlansManager(plans), configuration,
                                                                                  fold)
        super().__init__(plans, configuration, fold, dataset_json, device)
        block = make_plans_block(self.dm_checkpoint, self.kinetic_features, str(self.dm_checkpoint_location.path),
                                 self.fusion_merge_kernel_size)
        block["use_pretrained_dm"] = self.use_pretrained_dm
        # nnU-Net saves these plans next to the model; nnUNetv2_predict rebuilds the network from them
        self.plans_manager.plans["configurations"][configuration][DKM_PLANS_KEY] = block
        self.configuration_manager.configuration[DKM_PLANS_KEY] = block

    @classmethod
    def check_configuration(cls, plans_manager: PlansManager, configuration: str, fold: int) -> None:
        """Refuse a configuration this trainer cannot train (``DkmSetupError`` naming the command to use).

        2d and the single-stage 3D configurations (``3d_fullres``, ``3d_lowres``) work; a cascade's second stage
        gets the previous stage's segmentation as extra input channels, and DKM segments from the pre-contrast image
        alone.
        """
        previous_stage = plans_manager.get_configuration(configuration).previous_stage_name
        if previous_stage is not None:
            raise DkmSetupError(
                f"configuration {configuration} is a cascade stage (it also reads the {previous_stage} "
                f"segmentation), but DKM segments from the pre-contrast image alone. Train "
                f"3d_fullres: nnUNetv2_train {plans_manager.dataset_name} 3d_fullres {fold} -tr {cls.__name__}"
            )

    @classmethod
    def find_dm_checkpoint(cls, plans_manager: PlansManager, configuration: str,
                           fold: int) -> tuple[DmCheckpointLocation, DiffusionCheckpoint]:
        """The DM checkpoint of this dataset and configuration, checked against the plans in use."""
        cls.check_configuration(plans_manager, configuration, fold)
        dataset = plans_manager.dataset_name
        location = existing_dm_checkpoint(nnunet_folder("nnUNet_preprocessed") / dataset, dataset, configuration,
                                          plans_manager.plans_name, cls.dm_objective, DkmSetupError)
        checkpoint = load_checkpoint(location.path)
        check_plans_identity(checkpoint.plans_identity, plans_manager.plans, configuration, location.path)
        cls.check_model_folder(plans_manager, configuration, checkpoint, location)
        if checkpoint.config.objective != cls.dm_objective:
            raise DkmSetupError(
                f"{cls.__name__} needs a DM pretrained with the {cls.dm_objective!r} objective, but "
                f"{location.describe()} was pretrained with {checkpoint.config.objective!r}. Pretrain one: "
                f"{pretrain_command(dataset, configuration, plans_manager.plans_name, cls.dm_objective)}")
        configuration_manager = plans_manager.get_configuration(configuration)
        if len(configuration_manager.patch_size) == 3 and checkpoint.config.spatial_dims == 2:
            # the network builder refuses these too; here they are refused before the output folder exists
            slice_axis = checkpoint_slice_axis(checkpoint)
            try:
                check_in_plane_patch(list(configuration_manager.patch_size), slice_axis,
                                     checkpoint.config.size_divisor)
                strides = configuration_manager.network_arch_init_kwargs.get("strides") or []
                for level in cls.kinetic_features.levels if strides else ():
                    stage_for_level_in_plane([list(stride) for stride in strides], level, slice_axis)
            except InPlaneSizeError as error:
                raise DkmSetupError(f"{configuration} with the DM {location.describe()}: {error}") from error
            except ValueError as error:
                command = pretrain_command(plans_manager.dataset_name, configuration, plans_manager.plans_name)
                raise DkmSetupError(
                    f"{configuration} with the DM {location.describe()}, whose slices are cut across axis "
                    f"{slice_axis}: {error}. Pretrain the DM on slices across axis 0 (the default --slice-axis, the "
                    f"lowest-resolution axis, whose in-plane axes nnU-Net pools alike): {command} --overwrite"
                ) from error
        return location, checkpoint

    @classmethod
    def check_model_folder(cls, plans_manager: PlansManager, configuration: str, checkpoint: DiffusionCheckpoint,
                           location: DmCheckpointLocation) -> None:
        """Refuse a DM whose config (architecture, objective, target, input scaling) differs from the one this
        model folder's other folds were trained with: nnU-Net keeps one ``plans.json`` per model folder, and
        prediction rebuilds every fold's DM from it."""
        results = os.environ.get("nnUNet_results")
        if not results:
            return
        saved = Path(get_output_folder(plans_manager.dataset_name, cls.__name__, plans_manager.plans_name,
                                       configuration)) / "plans.json"
        if not saved.is_file():
            return
        block = json.loads(saved.read_text()).get("configurations", {}).get(configuration, {}).get(DKM_PLANS_KEY)
        if not block:
            return
        recorded = DiffusionConfig.from_dict(block["dm_config"]).to_dict()
        current = checkpoint.config.to_dict()
        if recorded != current or block.get("input_scaling") != checkpoint.input_scaling.to_dict():
            changed = sorted(key for key, value in current.items() if recorded.get(key) != value) or ["input scaling"]
            raise DkmSetupError(
                f"{saved.parent} holds folds trained with a DM of another config ({', '.join(changed)} differ from "
                f"{location.describe()}); prediction rebuilds every fold's DM from its one plans.json. Pretrain the "
                f"DM with the settings those folds used, or move {saved.parent} away to train a fresh model")

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """nnU-Net 2.8's builder (called on the class, as nnU-Net calls its static one): KineticUNet (2d) or
        KineticUNet3D (3D configurations) from the plans, whose ``"dkm"`` block names the DM."""
        try:
            return build_kinetic_unet(configuration_manager, num_input_channels, num_output_channels,
                                      enable_deep_supervision)
        except MissingDkmBlockError as error:
            raise MissingDkmBlockError(missing_block_message(plans_manager, configuration_manager,
                                                             cls.__name__)) from error

    def unwrapped_network(self) -> KineticUNet | KineticUNet3D:
        """The network behind DDP / torch.compile wrappers."""
        network = self.network.module if self.is_ddp else self.network
        return getattr(network, "_orig_mod", network)

    def initialize(self) -> None:
        super().initialize()
        if self.use_pretrained_dm:
            self.unwrapped_network().kinetic.network.load_state_dict(self.dm_checkpoint.weights)
        self.print_to_log_file(
            f"DKM: DM from {self.dm_checkpoint_location.describe()} "
            f"({'pretrained' if self.use_pretrained_dm else 'UNTRAINED control'}, {self.dm_checkpoint.config.preset} "
            f"preset, {self.dm_checkpoint.config.objective} objective, {self.dm_checkpoint.config.target} target, "
            f"{self.dm_checkpoint.steps_description()}), features {self.kinetic_features}, SSIM weight "
            f"{self.ssim_weight}"
            + (f", 2D DM slice by slice across axis {checkpoint_slice_axis(self.dm_checkpoint)} of the 3D patch"
               if len(self.configuration_manager.patch_size) == 3 else "")
        )
        if self.use_pretrained_dm and self.dm_checkpoint.stopped_early:
            self.print_to_log_file("DKM: WARNING: " + unfinished_dm_message(
                self.dm_checkpoint_location, self.plans_manager.dataset_name, self.configuration_name,
                self.dm_checkpoint.pretraining_steps(), self.plans_manager.plans_name, self.dm_objective))

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's ``--c`` resume, then every optimiser ``state["step"]`` moved to the CPU: nnU-Net loads the
        checkpoint onto the training device, and Adam (``nnUNetTrainerDKMPaper``) keeps a step tensor where it was
        loaded, so its foreach path would synchronise with the host at every parameter of every step."""
        super().load_checkpoint(filename_or_checkpoint)
        steps_to_cpu(self.optimizer)

    def configure_optimizers(self):
        """nnU-Net's SGD + poly schedule over the trainable parameters only (the frozen DM stays out)."""
        optimizer = torch.optim.SGD(trainable_parameters(self.network), self.initial_lr,
                                    weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
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
