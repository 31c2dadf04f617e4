"""Building KineticUNet from nnU-Net plans, also where only the plans are at hand (``nnUNetv2_predict``).

nnU-Net rebuilds a trained network with the trainer's static ``build_network_architecture(plans_manager,
configuration_manager, ...)`` and then loads the checkpoint's weights. Everything needed to rebuild the DM
part (its network config, input scaling and the feature options) therefore travels in the plans: the trainer
writes a ``"dkm"`` block into its configuration, and nnU-Net saves those plans next to the model
(``nnUNet_results/.../plans.json``). The DM's weights travel in nnU-Net's own checkpoint.

2d configurations get ``KineticUNet``; 3D ones (``3d_fullres``, ``3d_lowres``) get ``KineticUNet3D``, which runs the
2D DM slice by slice across the block's ``slice_axis`` (recorded by pretraining; 0 by default).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_dkm.architecture.kinetic_unet import DEFAULT_MERGE_KERNEL_SIZE, KineticUNet
from nnunet_dkm.architecture.kinetic_unet_3d import DEFAULT_SLICE_AXIS, KineticUNet3D, check_in_plane_patch
from nnunet_dkm.architecture.paper_network import PAPER_CHANNELS, PaperKineticNet
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint
from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.features import KineticFeatureExtractor
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.paths import dataset_id

DKM_PLANS_KEY = "dkm"


class MissingDkmBlockError(NnunetDkmError, RuntimeError):
    """The plans' configuration has no ``"dkm"`` block, so the DM part cannot be rebuilt."""


def checkpoint_slice_axis(checkpoint: DiffusionCheckpoint) -> int:
    """The axis a DM's training slices were cut across (recorded by ``nnUNetv2_dkm_pretrain --slice-axis``; 0 for
    checkpoints made before the option existed and for 2d configurations)."""
    return int(checkpoint.metadata.get("slice_axis", DEFAULT_SLICE_AXIS))


def make_plans_block(checkpoint: DiffusionCheckpoint, feature_config: KineticFeatureConfig, source: str,
                     merge_kernel_size: int | None = DEFAULT_MERGE_KERNEL_SIZE) -> dict:
    """The ``"dkm"`` block of a configuration: DM config, input scaling, feature options, the fusion's merge kernel
    (None: the stage's own), the axis the DM's slices are cut across (3D configurations) and where the DM came
    from."""
    features = asdict(feature_config)
    features["levels"] = list(feature_config.levels)
    return {
        "dm_config": checkpoint.config.to_dict(),
        "input_scaling": checkpoint.input_scaling.to_dict(),
        "features": features,
        "fusion_merge_kernel_size": merge_kernel_size,
        "slice_axis": checkpoint_slice_axis(checkpoint),
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


def configuration_name(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> str | None:
    """The name of ``configuration_manager``'s configuration in ``plans_manager`` (None where none matches)."""
    for name in plans_manager.available_configurations:
        try:
            if plans_manager.get_configuration(name).configuration == configuration_manager.configuration:
                return name
        except (KeyError, RuntimeError, ValueError):
            continue
    return None


def missing_block_message(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                          trainer_name: str) -> str:
    """What to do when a DKM model's plans carry no ``"dkm"`` block: the model folder's ``plans.json`` (named) and
    the command that writes it again."""
    plans = plans_manager.plans
    dataset, plans_name = plans.get("dataset_name", "DatasetXXX"), plans.get("plans_name", "nnUNetPlans")
    configuration = configuration_name(plans_manager, configuration_manager) or "CONFIGURATION"
    results = os.environ.get("nnUNet_results") or "$nnUNet_results"
    plans_file = Path(results) / dataset / f"{trainer_name}__{plans_name}__{configuration}" / "plans.json"
    identifier = str(dataset_id(dataset)) if dataset.startswith("Dataset") else dataset
    plans_option = "" if plans_name == "nnUNetPlans" else f" -p {plans_name}"
    return (
        f"the plans of this {trainer_name} model ({configuration}) carry no 'dkm' block, so its network (the DM "
        f"config and how its features are fused) cannot be rebuilt. nnUNetTrainerDKM writes the block when training "
        f"starts; predict with the plans.json saved in the model's results folder ({plans_file}). If that file was "
        f"replaced by plans without the block (e.g. the preprocessed folder's {plans_name}.json), restore it, or "
        f"write it again with the DM checkpoint the model was trained with: nnUNetv2_train {identifier} "
        f"{configuration} FOLD -tr {trainer_name}{plans_option} --c (on a finished fold this only rewrites "
        f"plans.json and reruns the validation)"
    )


def configs_from_block(block: dict[str, Any]) -> tuple[DiffusionConfig, InputScaling, KineticFeatureConfig]:
    """DM config, input scaling and feature options of a ``"dkm"`` block."""
    return (DiffusionConfig.from_dict(block["dm_config"]), InputScaling.from_dict(block["input_scaling"]),
            KineticFeatureConfig(**block["features"]))


def build_kinetic_unet(configuration_manager: ConfigurationManager, num_input_channels: int,
                       num_output_channels: int, enable_deep_supervision: bool) -> KineticUNet | KineticUNet3D:
    """nnU-Net's planned network (He-initialised by nnU-Net) + kinetic fusions + a DM of the recorded config.

    2d configurations get ``KineticUNet``; 3D ones (``3d_fullres``, ``3d_lowres``) with the 2D DM get
    ``KineticUNet3D``, which runs the DM slice by slice across the block's ``slice_axis``. The DM is built with fresh
    weights here; the trainer loads the pretrained ones, and prediction gets them from nnU-Net's checkpoint.
    """
    if num_input_channels != 1:
        raise ValueError(f"DKM segments from the pre-contrast image alone: expected 1 input channel, got "
                         f"{num_input_channels}")
    block = plans_block(configuration_manager)
    dm_config, input_scaling, feature_config = configs_from_block(block)
    patch_size = list(configuration_manager.patch_size)
    slice_wise = len(patch_size) == 3 and dm_config.spatial_dims == 2
    slice_axis = int(block.get("slice_axis", DEFAULT_SLICE_AXIS))
    if slice_wise:
        check_in_plane_patch(patch_size, slice_axis, dm_config.size_divisor)
    elif len(patch_size) != dm_config.spatial_dims:
        raise ValueError(f"the DM is {dm_config.spatial_dims}D but the configuration is "
                         f"{len(patch_size)}D; DKM supports a 2D DM on 2d and 3D configurations")
    planned = get_network_from_plans(configuration_manager.network_arch_class_name,
                                     configuration_manager.network_arch_init_kwargs,
                                     configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                     num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)
    kinetic = KineticFeatureExtractor(dm_config, input_scaling, feature_config)
    # the planned patch's noise map exists before nnU-Net compiles the network: no graph break at its first call
    kinetic.prepare_noise([size for axis, size in enumerate(patch_size) if not (slice_wise and axis == slice_axis)])
    # plans written before the merge kernel was recorded used the stage's own kernel
    if slice_wise:
        return KineticUNet3D(planned, kinetic, block.get("fusion_merge_kernel_size"), slice_axis)
    return KineticUNet(planned, kinetic, block.get("fusion_merge_kernel_size"))


def build_paper_network(configuration_manager: ConfigurationManager, num_input_channels: int,
                        num_output_channels: int, channels: tuple[int, ...] = PAPER_CHANNELS) -> PaperKineticNet:
    """The paper's segmentation module (4 kinetic blocks, 128-256-512-1024) with a DM of the recorded config."""
    if num_input_channels != 1:
        raise ValueError(f"DKM segments from the pre-contrast image alone: expected 1 input channel, got "
                         f"{num_input_channels}")
    if len(configuration_manager.patch_size) != 2:
        raise ValueError(f"the paper's segmentation module is 2D; this configuration's patch is "
                         f"{list(configuration_manager.patch_size)}: use a 2d configuration (or nnUNetTrainerDKM for "
                         f"3D ones)")
    dm_config, input_scaling, feature_config = configs_from_block(plans_block(configuration_manager))
    kinetic = KineticFeatureExtractor(dm_config, input_scaling, feature_config)
    kinetic.prepare_noise(list(configuration_manager.patch_size))
    return PaperKineticNet(kinetic, num_output_channels, channels)
