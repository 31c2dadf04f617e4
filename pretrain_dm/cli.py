"""``nnUNetv2_dkm_pretrain``: pretrain the diffusion module of a dataset, in nnU-Net's preprocessed space.

Examples::

    nnUNetv2_dkm_pretrain -d 990 -c 2d                           # small preset, CPU
    nnUNetv2_dkm_pretrain -d 990 -c 2d --preset paper -device cuda --steps 100000 --ema 0.9999
    nnUNetv2_dkm_pretrain -d 990 -c 2d --continue                # resume where it stopped
    torchrun --nproc_per_node 4 -m pretrain_dm -d 990 -c 2d -device cuda --preset paper
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError
from nnunet_dkm.diffusion.config import PREDICTION_TYPES, PRESET_NAMES, DiffusionConfigError
from nnunet_dkm.diffusion.preprocessed_space import PreprocessedSpaceError
from nnunet_dkm.ext_trainer_path import export_hint, ext_trainer_is_set
from pretrain_dm.training import DmPretrainer, PretrainingError, PretrainSettings, RunContext

# Training defaults per preset. small: for a 2-core CPU, chosen by benchmarks/dm_evidence.py
# (benchmarks/results_dm_evidence.md): 64x64 patches (4x the slices per second of 128x128), half the steps drawn from
# the noisier half of the schedule, 90 % of patches centred on tumour / strong enhancement and the loss weighted by
# 1 + 2 |post - pre| (together: the closest tumour estimate), 10 minutes. paper: the paper's setting (uniform
# timesteps, plain loss, nnU-Net's patch size).
PRESET_DEFAULTS = {
    "small": {"steps": 100000, "batch_size": 16, "patch_size": (64, 64), "high_noise_fraction": 0.5,
              "foreground_fraction": 0.9, "enhancement_weight": 2.0, "max_minutes": 10.0},
    "paper": {"steps": 100000, "batch_size": 8, "patch_size": None, "high_noise_fraction": 0.0,
              "foreground_fraction": 0.5, "enhancement_weight": 0.0, "max_minutes": None},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_pretrain",
        description="Pretrain the DKM diffusion module (pre-contrast -> post-contrast) on a planned nnU-Net dataset. "
        "Writes nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt, dm_loss_curve.png and "
        "dm_samples.png.",
    )
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id, e.g. 990")
    parser.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration (2d)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-device", "--device", default="cpu", choices=("cpu", "cuda"),
                        help="device (with torchrun, each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--preset", default="small", choices=PRESET_NAMES, help="DM size (small: CPU demo; paper)")
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, help="override the preset's training target")
    parser.add_argument("--channels", type=int, nargs="+", help="override the preset's channels per level")
    parser.add_argument("--steps", type=int, help="total optimisation steps (default 100000, or --max-minutes)")
    parser.add_argument("--batch-size", type=int, help="slices per step and rank (small: 16, paper: 8)")
    parser.add_argument("--lr", type=float, default=PretrainSettings.learning_rate, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=PretrainSettings.weight_decay)
    parser.add_argument("--ema", type=float, default=PretrainSettings.ema_decay,
                        help="EMA decay of the saved weights (0 = no EMA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-size", type=int, nargs=2,
                        help="DM patch size (small: 64 64; paper: the configuration's patch size)")
    parser.add_argument("--foreground-fraction", type=float,
                        help="share of patches centred on tumour / strong enhancement (small: 0.9, paper: 0.5)")
    parser.add_argument("--high-noise-fraction", type=float,
                        help="share of timesteps drawn from the noisier half of the schedule (small: 0.5, paper: 0)")
    parser.add_argument("--enhancement-weight", type=float,
                        help="weight each pixel's loss by 1 + w * |post - pre| (small: 2; paper: 0, the plain loss)")
    parser.add_argument("--input-scale", type=float, default=PretrainSettings.input_scale,
                        help="DM input = scale * (nnU-Net-normalised intensity) + offset")
    parser.add_argument("--no-augmentation", action="store_true", help="switch off nnU-Net-like augmentation")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--validate-every", type=int, default=PretrainSettings.validate_every)
    parser.add_argument("--save-every", type=int, default=PretrainSettings.save_every)
    parser.add_argument("--max-minutes", type=float,
                        help="stop (and save) after this much training time (small: 10; 0 = no limit)")
    parser.add_argument("--checkpoint", help="checkpoint file (default: the dataset's dkm folder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--continue", dest="resume", action="store_true", help="resume the existing checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    return parser


def settings_from_args(args: argparse.Namespace) -> PretrainSettings:
    defaults = PRESET_DEFAULTS[args.preset]

    def pick(value, key):
        return defaults[key] if value is None else value

    patch_size = tuple(args.patch_size) if args.patch_size else defaults["patch_size"]
    max_minutes = pick(args.max_minutes, "max_minutes")
    overrides = {}
    if args.prediction_type:
        overrides["prediction_type"] = args.prediction_type
    if args.channels:
        overrides["channels"] = tuple(args.channels)
    return PretrainSettings(
        dataset_id=args.dataset, configuration=args.configuration, plans_identifier=args.plans, preset=args.preset,
        config_overrides=overrides, steps=pick(args.steps, "steps"), batch_size=pick(args.batch_size, "batch_size"),
        learning_rate=args.lr,
        weight_decay=args.weight_decay, ema_decay=args.ema, seed=args.seed,
        patch_size=patch_size,
        foreground_fraction=pick(args.foreground_fraction, "foreground_fraction"),
        high_noise_fraction=pick(args.high_noise_fraction, "high_noise_fraction"),
        enhancement_weight=pick(args.enhancement_weight, "enhancement_weight"),
        input_scale=args.input_scale,
        augmentation=not args.no_augmentation, device=args.device, precision=args.precision,
        validate_every=args.validate_every, save_every=args.save_every, max_minutes=max_minutes or None,
        checkpoint=None if args.checkpoint is None else Path(args.checkpoint),
    )


def next_steps(dataset: int, configuration: str) -> str:
    """What to run after pretraining, including the nnUNet_extTrainer export when it is missing."""
    lines = ["next:"]
    if not ext_trainer_is_set():
        lines.append(f"  {export_hint()}      # nnU-Net finds nnUNetTrainerDKM only through this variable")
    lines.append(f"  nnUNetv2_train {dataset} {configuration} 0 -tr nnUNetTrainerDKM")
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    context = run_context(args.device)
    try:
        pretrainer = DmPretrainer(settings_from_args(args), resume=args.resume, overwrite=args.overwrite,
                                  context=context)
        path = pretrainer.run()
        if context.is_main:
            print(f"DM checkpoint: {path}\nloss curve:    {path.with_name('dm_loss_curve.png')}\n"
                  f"samples:       {path.with_name('dm_samples.png')}")
            print(next_steps(args.dataset, args.configuration))
    except (PretrainingError, PreprocessedSpaceError, DiffusionCheckpointError, DiffusionConfigError) as error:
        sys.exit(f"error: {error}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
