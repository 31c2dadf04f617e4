"""Building KineticUNet from nnU-Net plans, also where only the plans are at hand (``nnUNetv2_predict``).

nnU-Net rebuilds a trained network with the trainer's static ``build_network_architecture(plans_manager,
configuration_manager, ...)`` and then loads the checkpoint's weights. Everything needed to rebuild the DM
part (its network config, input scaling and the feature options) therefore travels in the plans: the trainer
writes a ``"dkm"`` block into its configuration, and nnU-Net saves those plans next to the model
(``nnUNet_results/.../plans.json``). The DM's weights travel in nnU-Net's own checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_dkm.architecture.kinetic_unet import DEFAULT_MERGE_KERNEL_SIZE, KineticUNet
from nnunet_dkm.architecture.paper_network import PAPER_CHANNELS, PaperKineticNet
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint
from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.features import KineticFeatureExtractor

DKM_PLANS_KEY = "dkm"


class MissingDkmBlockError(RuntimeError):
    """The plans' configuration has no ``"dkm"`` block, so the DM part cannot be rebuilt."""


def make_plans_block(checkpoint: DiffusionCheckpoint, feature_config: KineticFeatureConfig, source: str,
                     merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE) -> dict:
    """The ``"dkm"`` block of a configuration: DM config, input scaling, feature options, the fusion's merge kernel
    (None: the stage's own) and where the DM came from."""
    features = asdict(feature_config)
    features["levels"] = list(feature_config.levels)
    return {
        "dm_config": checkpoint.config.to_dict(),
        "input_scaling": checkpoint.input_scaling.to_dict(),
        "features": features,
        "fusion_merge_kernel_size": merge_kernel_size,
        "dm_checkpoint": source,
        "dm_plans_sha256": checkpoint.plans_identity.get("preprocessing_sha256"),
    }


def plans_block(configuration_manager: ConfigurationManager) -> dict[str, Any]:
    """The configuration's ``"dkm"`` block; ``MissingDkmBlockError`` where there is none."""
    block: dict[str, Any] | None = configuration_manager.configuration.get(DKM_PLANS_KEY)
    if block is None:
        raise MissingDkmBlockError(
            "these plans carry no 'dkm' block, so the DKM network cannot be built from them. nnUNetTrainerDKM "
            "writes it when training starts; predict with the plans.json saved in the model's results folder."
        )
    return block


def read_plans_block(configuration_manager: ConfigurationManager) -> tuple[DiffusionConfig, InputScaling,
                                                                           KineticFeatureConfig]:
    """DM config, input scaling and feature options recorded in the plans."""
    return configs_from_block(plans_block(configuration_manager))


def configs_from_block(block: dict[str, Any]) -> tuple[DiffusionConfig, InputScaling, KineticFeatureConfig]:
    """DM config, input scaling and feature options of a ``"dkm"`` block."""
    return (DiffusionConfig.from_dict(block["dm_config"]), InputScaling.from_dict(block["input_scaling"]),
            KineticFeatureConfig(**block["features"]))


def build_kinetic_unet(configuration_manager: ConfigurationManager, num_input_channels: int,
                       num_output_channels: int, enable_deep_supervision: bool) -> KineticUNet:
    """nnU-Net's planned network (He-initialised by nnU-Net) + kinetic fusions + a DM of the recorded config.

    The DM is built with fresh weights here; the trainer loads the pretrained ones, and prediction gets them from
    nnU-Net's checkpoint.
    """
    if num_input_channels != 1:
        raise ValueError(f"DKM segments from the pre-contrast image alone: expected 1 input channel, got "
                         f"{num_input_channels}")
    block = plans_block(configuration_manager)
    dm_config, input_scaling, feature_config = configs_from_block(block)
    if len(configuration_manager.patch_size) != dm_config.spatial_dims:
        raise ValueError(f"the DM is {dm_config.spatial_dims}D but the configuration is "
                         f"{len(configuration_manager.patch_size)}D; DKM supports 2d configurations")
    planned = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=enable_deep_supervision,
    )
    kinetic = KineticFeatureExtractor(dm_config, input_scaling, feature_config)
    # plans written before the merge kernel was recorded used the stage's own kernel
    return KineticUNet(planned, kinetic, block.get("fusion_merge_kernel_size"))


def build_paper_network(configuration_manager: ConfigurationManager, num_input_channels: int,
                        num_output_channels: int, channels: tuple[int, ...] = PAPER_CHANNELS) -> PaperKineticNet:
    """The paper's segmentation module (4 kinetic blocks, 128-256-512-1024) with a DM of the recorded config."""
    if num_input_channels != 1:
        raise ValueError(f"DKM segments from the pre-contrast image alone: expected 1 input channel, got "
                         f"{num_input_channels}")
    dm_config, input_scaling, feature_config = read_plans_block(configuration_manager)
    return PaperKineticNet(KineticFeatureExtractor(dm_config, input_scaling, feature_config), num_output_channels,
                           channels)
