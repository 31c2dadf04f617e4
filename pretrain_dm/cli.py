"""``nnUNetv2_dkm_pretrain``: pretrain the diffusion module of a dataset, in nnU-Net's preprocessed space.

Examples::

    nnUNetv2_dkm_pretrain -d 990 -c 2d                           # small preset, its step-based CPU recipe
    nnUNetv2_dkm_pretrain -d 990 -c 2d --preset paper -device cuda --steps 100000 --ema 0.9999
    nnUNetv2_dkm_pretrain -d 990 -c 2d --continue                # resume where it stopped
    nnUNetv2_dkm_pretrain -d 990 -c 3d_fullres                   # the 2D DM on slices of the 3d_fullres volumes
    torchrun --nproc_per_node 4 -m pretrain_dm -d 990 -c 2d -device cuda --preset paper

The checkpoint goes where ``nnUNetTrainerDKM`` looks for it (``nnunet_dkm.paths.dm_checkpoint_location``):
``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt``, or ``$nnUNet_dkm_checkpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from nnunetv2.configuration import default_num_processes

from nnunet_dkm.cli_types import fraction, non_negative_float, non_negative_int, positive_float, positive_int
from nnunet_dkm.command_line import add_device_argument, add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.diffusion import objectives
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError
from nnunet_dkm.diffusion.config import OBJECTIVES, PREDICTION_TYPES, TARGETS
from nnunet_dkm.diffusion.presets import DM_PRESETS, PRESET_NAMES, dm_preset
from nnunet_dkm.ext_trainer_path import export_hint, ext_trainer_is_set
from nnunet_dkm.paths import (
    DM_CHECKPOINT_ENV,
    DM_CHECKPOINT_NAME,
    DmCheckpointLocation,
    dataset_folder,
    dm_checkpoint_location,
    dm_figure_path,
)
from nnunet_dkm.resources import check_fits_in_memory
from pretrain_dm.settings import PretrainingError, PretrainSettings, RunContext
from pretrain_dm.training import DmPretrainer


def preset_values(field: str) -> str:
    """The presets' recipe values of one field for the help texts, e.g. ``small: 1000, paper: 100000`` for
    ``steps``."""
    def shown(value: object) -> str:
        if value is None:
            return "the configuration's"
        if isinstance(value, tuple):
            return "x".join(map(str, value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{name}: {shown(getattr(preset.recipe, field))}" for name, preset in DM_PRESETS.items())


def preset_targets() -> str:
    """``small: post, paper: post``: the presets' targets, for the help text."""
    return ", ".join(f"{name}: {preset.network.target}" for name, preset in DM_PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_pretrain",
        description="Pretrain the DKM diffusion module (pre-contrast -> post-contrast) on a planned nnU-Net dataset. "
        "Writes nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt (or $" + DM_CHECKPOINT_ENV
        + "), dm_loss_curve.png and dm_samples.png. A preset's recipe is a number of steps: the same command gives "
        "the same DM on any machine.",
    )
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id, e.g. 990")
    parser.add_argument("-c", "--configuration", default="2d",
                        help="nnU-Net configuration (default 2d). The DM is 2D; for a 3D configuration (3d_fullres, "
                             "3d_lowres) it learns from 2D slices of that configuration's preprocessed volumes, the "
                             "slices nnUNetTrainerDKM feeds it inside the 3D patch")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=0,
                        help="3D configurations: axis of nnU-Net's preprocessed (transposed) volumes the 2D slices are "
                             "cut across (default 0: the lowest-resolution axis, which nnU-Net's transpose puts first "
                             "and its 2d configuration slices along; for isotropic data any axis may be chosen). "
                             "Recorded in the checkpoint; nnUNetTrainerDKM slices its 3D patches the same way")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes,
                        help=f"processes that build the DM cache when it is missing (default {default_num_processes}, "
                             f"nnU-Net's nnUNet_def_n_proc; 1 builds in this process; with torchrun the ranks of a "
                             f"node share them and each builds its share of the exams)")
    add_device_argument(parser, "device (with torchrun, each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--preset", default="small", choices=PRESET_NAMES,
                        help="DM and recipe (small: 2-core CPU; paper: the paper's DM, a GPU job)")
    parser.add_argument("--objective", choices=OBJECTIVES, default="kinetic",
                        help="what the DM learns: kinetic (default: conditional diffusion pre -> post, the DKM DM), "
                             "pre-only (diffusion of the pre-contrast image alone: a control without kinetics) or "
                             "regression (the post-contrast image regressed in one forward at t* = 50: a control "
                             "without diffusion). Each objective has its own file: dm_checkpoint.pt, "
                             "dm_checkpoint_pre-only.pt, dm_checkpoint_regression.pt")
    parser.add_argument("--target", choices=TARGETS,
                        help=f"the clean image the kinetic DM generates: the post-contrast image (post) or the "
                             f"enhancement post - pre (enhancement); {preset_targets()}")
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES,
                        help="override the preset's network output (epsilon, v_prediction or sample)")
    parser.add_argument("--channels", type=positive_int, nargs="+", help="override the preset's channels per level")
    parser.add_argument("--steps", type=positive_int, help=f"optimisation steps ({preset_values('steps')})")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"slices per step and rank ({preset_values('batch_size')})")
    parser.add_argument("--lr", type=positive_float, help=f"AdamW learning rate ({preset_values('learning_rate')})")
    parser.add_argument("--weight-decay", type=non_negative_float,
                        help=f"AdamW weight decay ({preset_values('weight_decay')})")
    parser.add_argument("--ema", type=fraction,
                        help=f"EMA decay of the saved weights ({preset_values('ema_decay')}; 0 = no EMA)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--patch-size", type=positive_int, nargs=2,
                        help=f"DM patch size ({preset_values('patch_size')}; for a 3D configuration the in-plane "
                             f"patch size, the configuration's without its slicing axis)")
    parser.add_argument("--foreground-fraction", type=fraction,
                        help=f"share of patches centred on tumour / strong enhancement "
                             f"({preset_values('foreground_fraction')})")
    parser.add_argument("--high-noise-fraction", type=fraction,
                        help=f"share of timesteps drawn from the noisier half of the schedule "
                             f"({preset_values('high_noise_fraction')})")
    parser.add_argument("--enhancement-weight", type=non_negative_float,
                        help=f"weight each pixel's loss by 1 + w * |post - pre| "
                             f"({preset_values('enhancement_weight')}; 0 is the plain DDPM loss)")
    parser.add_argument("--label-free", action="store_true",
                        help="never use a tumour label: foreground patches are centred on the strongest enhancement "
                             "of every exam (for label-efficiency studies; recorded in the checkpoint)")
    parser.add_argument("--input-scale", type=positive_float, default=PretrainSettings.input_scale,
                        help="DM input = scale * (nnU-Net-normalised intensity) + offset")
    parser.add_argument("--no-augmentation", action="store_true", help="switch off nnU-Net-like augmentation")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--validate-every", type=positive_int, default=PretrainSettings.validate_every)
    parser.add_argument("--save-every", type=positive_int, default=PretrainSettings.save_every)
    parser.add_argument("--keep-steps", type=non_negative_int, nargs="+", default=[],
                        help="also keep a copy of the checkpoint at these steps (dm_checkpoint.step<N>.pt; 0 = the "
                             "untrained initial weights), e.g. for a learning curve")
    parser.add_argument("--max-minutes", type=non_negative_float,
                        help="optional cap: stop (and save) after this much training time, before --steps if the "
                             "machine is slow (0 = no cap, the default); the recipe is the step count")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--continue", dest="resume", action="store_true", help="resume the existing checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    add_verbose_argument(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> PretrainSettings:
    """The run's settings; every recipe value not given on the command line comes from the preset."""
    overrides = {}
    if args.prediction_type:
        overrides["prediction_type"] = args.prediction_type
    if args.channels:
        overrides["channels"] = tuple(args.channels)
    return PretrainSettings(
        dataset_id=args.dataset, configuration=args.configuration, plans_identifier=args.plans, preset=args.preset,
        config_overrides=overrides, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, ema_decay=args.ema, seed=args.seed,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        foreground_fraction=args.foreground_fraction, high_noise_fraction=args.high_noise_fraction,
        enhancement_weight=args.enhancement_weight, patch_centring="enhancement" if args.label_free else None,
        input_scale=args.input_scale, augmentation=not args.no_augmentation, device=args.device,
        precision=args.precision, validate_every=args.validate_every, save_every=args.save_every,
        keep_steps=tuple(args.keep_steps), max_minutes=args.max_minutes or None, slice_axis=args.slice_axis,
        objective=args.objective, target=args.target, num_processes=args.num_processes,
    )


# memory of one DM training step (forward and backward) per patch pixel and channel of the DM's first level: 280-310
# bytes measured on CPU (channels 32-64-64-64 and 64-128-128-128, one residual block per level, 64 x 64 patches)
DM_STEP_BYTES_PER_PIXEL_AND_CHANNEL = 280
TRAINER_OF_OBJECTIVE = {"kinetic": "nnUNetTrainerDKM", "pre-only": "nnUNetTrainerDKM_preOnlyDM",
                        "regression": "nnUNetTrainerDKM_regressionDM"}


def check_step_fits(settings: PretrainSettings) -> None:
    """Refuse, before the cache is built, a batch and patch size whose training step cannot fit the device's memory
    (the estimate is a lower bound: only what surely cannot fit is refused)."""
    if settings.patch_size is None:  # the configuration's patch size, which nnU-Net planned for this machine
        return
    channels = settings.config_overrides.get("channels") or dm_preset(settings.preset).network.channels
    height, width = settings.patch_size
    needed = DM_STEP_BYTES_PER_PIXEL_AND_CHANNEL * channels[0] * settings.batch_size * height * width
    check_fits_in_memory(needed, f"one DM training step of {settings.batch_size} patches of {height} x {width} pixels",
                         "choose a smaller --batch-size or --patch-size", device=settings.device)


# the command in checkpoint.remake_dm_command's message where it cannot know the dataset and configuration
REMAKE_PLACEHOLDER = "-d DATASET -c CONFIGURATION"


def check_checkpoint_is_not_a_folder(location: DmCheckpointLocation) -> None:
    """Refuse, before anything is built, a checkpoint path that is a folder (e.g. ``$nnUNet_dkm_checkpoint`` set to
    the folder it should be in): pretraining would run all its steps and then fail to write it."""
    if location.path.is_dir():
        fix = (f"set {DM_CHECKPOINT_ENV} to a file path in it, e.g. {location.path / DM_CHECKPOINT_NAME}, or unset it"
               if location.from_environment else "move that folder away")
        raise PretrainingError(f"the DM checkpoint {location.describe()} is a folder, where the checkpoint file "
                                    f"is to be written: {fix}")


def check_patch_fits_slices(pretrainer: DmPretrainer) -> None:
    """Refuse a ``--patch-size`` larger than every slice of the dataset in some axis (beyond the DM's size divisor and
    the configuration's own patch): the DM would learn from padding, many times slower per step."""
    if pretrainer.settings.patch_size is None or not pretrainer.cache.exams:
        return
    divisor = pretrainer.config.size_divisor
    largest = [max(exam.shape[axis] for exam in pretrainer.cache.exams) for axis in (-2, -1)]
    planned = pretrainer.in_plane_patch_size()
    limits = [max(-(-size // divisor) * divisor, int(plan)) for size, plan in zip(largest, planned, strict=True)]
    if any(patch > limit for patch, limit in zip(pretrainer.patch_size, limits, strict=True)):
        settings = pretrainer.settings
        raise PretrainingError(
            f"--patch-size {' '.join(map(str, pretrainer.patch_size))}: larger than every slice of "
            f"{pretrainer.dataset.name} {settings.configuration} (at most {largest[0]} x {largest[1]} pixels), so the "
            f"DM would train mostly on padding, many times slower per step; choose --patch-size at most "
            f"{limits[0]} {limits[1]} (or leave it out: the configuration's {planned[0]} {planned[1]})")


def check_steps_left(pretrainer: DmPretrainer, resume: bool) -> None:
    """Refuse ``--continue`` where the checkpoint has reached ``--steps`` already: there is nothing to train."""
    steps = pretrainer.settings.steps
    if resume and pretrainer.step >= steps:
        raise PretrainingError(
            f"--continue --steps {steps}: the checkpoint {pretrainer.checkpoint_path} is at step {pretrainer.step} "
            f"already, so there is nothing to do; pass --steps above {pretrainer.step} to train on")


def next_steps(dataset: int, configuration: str, objective: str = "kinetic") -> str:
    """What to run after pretraining, including the nnUNet_extTrainer export when it is missing."""
    trainer = TRAINER_OF_OBJECTIVE[objective]
    lines = ["next:"]
    if not ext_trainer_is_set():
        lines.append(f"  {export_hint()}      # nnU-Net finds {trainer} only through this variable")
    lines.append(f"  nnUNetv2_train {dataset} {configuration} 0 -tr {trainer}")
    return "\n".join(lines)


def run_context(device: str) -> RunContext:
    """Join the torchrun process group where WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return RunContext(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return RunContext(rank=rank, world_size=world_size,
                      device=torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device("cpu"))


@command_line_entry
def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    settings = settings_from_args(args)
    check_step_fits(settings)
    checkpoint = dm_checkpoint_location(dataset_folder("nnUNet_preprocessed", args.dataset), args.configuration,
                                        args.objective)
    check_writable_folder(checkpoint.path.parent, f"the DM checkpoint {checkpoint.describe()}: its folder")
    check_checkpoint_is_not_a_folder(checkpoint)
    context = run_context(args.device)
    try:
        try:
            pretrainer = DmPretrainer(settings, resume=args.resume, overwrite=args.overwrite, context=context)
        except DiffusionCheckpointError as error:  # name this run's dataset and configuration in the command
            if REMAKE_PLACEHOLDER not in str(error):
                raise
            raise DiffusionCheckpointError(str(error).replace(
                REMAKE_PLACEHOLDER, f"-d {args.dataset} -c {args.configuration}")) from error
        check_patch_fits_slices(pretrainer)
        check_steps_left(pretrainer, args.resume)
        path = pretrainer.run()
        if context.is_main:
            print(f"DM checkpoint: {path}\nloss curve:    {dm_figure_path(path, 'loss_curve')}")
            if objectives.synthesises_post_contrast(pretrainer.config):
                print(f"samples:       {dm_figure_path(path, 'samples')}")
            print(next_steps(args.dataset, args.configuration, args.objective))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
