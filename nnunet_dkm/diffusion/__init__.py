"""Diffusion module (DM): MONAI network and schedules, presets, checkpoint I/O, kinetic feature extraction."""

from nnunet_dkm.diffusion.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    DiffusionCheckpoint,
    DiffusionCheckpointError,
    PlansMismatchError,
    check_plans_identity,
    load_checkpoint,
    load_network,
    plans_identity,
    save_checkpoint,
)
from nnunet_dkm.diffusion.config import (
    PREDICTION_TYPES,
    DiffusionConfig,
    DiffusionConfigError,
    InputScaling,
    KineticFeatureConfig,
)
from nnunet_dkm.diffusion.estimates import synthesise_post_contrast
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, UNetWalk, walk_unet
from nnunet_dkm.diffusion.network import (
    build_network,
    ddim_sample,
    ddim_timesteps,
    make_ddim_scheduler,
    make_ddpm_scheduler,
    training_target,
)
from nnunet_dkm.diffusion.presets import (
    DM_PRESETS,
    PRESET_NAMES,
    DmPreset,
    PretrainingRecipe,
    dm_preset,
    preset_network,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "DM_PRESETS",
    "PREDICTION_TYPES",
    "PRESET_NAMES",
    "DiffusionCheckpoint",
    "DiffusionCheckpointError",
    "DiffusionConfig",
    "DiffusionConfigError",
    "DmPreset",
    "InputScaling",
    "KineticFeatureConfig",
    "KineticFeatureExtractor",
    "PlansMismatchError",
    "PretrainingRecipe",
    "UNetWalk",
    "build_network",
    "check_plans_identity",
    "ddim_sample",
    "ddim_timesteps",
    "dm_preset",
    "load_checkpoint",
    "load_network",
    "make_ddim_scheduler",
    "make_ddpm_scheduler",
    "plans_identity",
    "preset_network",
    "save_checkpoint",
    "synthesise_post_contrast",
    "training_target",
    "walk_unet",
]
