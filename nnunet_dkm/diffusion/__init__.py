"""Diffusion module (DM): MONAI network and schedules, checkpoint I/O, kinetic feature extraction."""

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
    pretrain_command,
    save_checkpoint,
)
from nnunet_dkm.diffusion.config import (
    PREDICTION_TYPES,
    PRESET_NAMES,
    SMALL_PRESET_PREDICTION_TYPE,
    DiffusionConfig,
    DiffusionConfigError,
    InputScaling,
    KineticFeatureConfig,
)
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, UNetWalk, walk_unet
from nnunet_dkm.diffusion.network import (
    build_network,
    ddim_timesteps,
    make_ddim_scheduler,
    make_ddpm_scheduler,
    synthesise_post_contrast,
    training_target,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "PREDICTION_TYPES",
    "PRESET_NAMES",
    "SMALL_PRESET_PREDICTION_TYPE",
    "DiffusionCheckpoint",
    "DiffusionCheckpointError",
    "DiffusionConfig",
    "DiffusionConfigError",
    "InputScaling",
    "KineticFeatureConfig",
    "KineticFeatureExtractor",
    "PlansMismatchError",
    "UNetWalk",
    "build_network",
    "check_plans_identity",
    "ddim_timesteps",
    "load_checkpoint",
    "load_network",
    "make_ddim_scheduler",
    "make_ddpm_scheduler",
    "plans_identity",
    "pretrain_command",
    "save_checkpoint",
    "synthesise_post_contrast",
    "training_target",
    "walk_unet",
]
