"""Shipped DMs: a pretrained DM exported as a small file with a sidecar, and installed where the trainer finds it.

    nnUNetv2_dkm_export_dm -d 990 -c 2d -o benchmarks/dms/demo_phantom_2d.pt       # float16 weights, no optimizer
    nnUNetv2_dkm_export_dm -d 990 -c 2d -o ... --resumable                        # unfinished: keep its training state
    nnUNetv2_dkm_install_dm -i benchmarks/dms/demo_phantom_2d.pt -d 990 -c 2d      # where nnUNetTrainerDKM looks

The exported file is an ordinary DM checkpoint (``checkpoint.py``): float16 weights load into the float32 network
(``load_state_dict`` casts), so every consumer reads it unchanged. Its sidecar ``<file>.json`` states the recipe,
the steps, the plans identity and dataset fingerprint it was pretrained for, the file's sha256, the command that
made it and the one that exported it. Installing refuses a DM made for other plans (``check_plans_identity``) and a
file whose sha256 differs from its sidecar's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.command_line import add_verbose_argument, command_line_entry
from nnunet_dkm.diffusion.checkpoint import (
    DiffusionCheckpoint,
    DiffusionCheckpointError,
    check_plans_identity,
    load_checkpoint,
    save_checkpoint,
)
from nnunet_dkm.diffusion.config import OBJECTIVES
from nnunet_dkm.fingerprints import dataset_fingerprint, file_sha256
from nnunet_dkm.paths import DEFAULT_OBJECTIVE, dataset_folder, dm_checkpoint_location, pretrain_command
from nnunet_dkm.reporting import utc_now

SIDECAR_FORMAT = "nnunet_dkm.shipped_dm"


def sidecar_path(dm_file: Path) -> Path:
    """``<file>.json`` beside a shipped DM (``demo.pt`` -> ``demo.pt.json``)."""
    return dm_file.with_name(dm_file.name + ".json")


def made_by(checkpoint: DiffusionCheckpoint) -> str:
    """The pretraining command of a checkpoint, rebuilt from what it records."""
    metadata = checkpoint.metadata
    identity = checkpoint.plans_identity
    command = pretrain_command(identity["dataset_name"], identity["configuration"], identity["plans_name"],
                               metadata.get("objective", DEFAULT_OBJECTIVE))
    command += f" --preset {metadata.get('preset', '?')}"
    if metadata.get("label_free"):
        command += " --label-free"
    steps = checkpoint.pretraining_steps()
    if steps and steps[1] != (metadata.get("recipe") or {}).get("steps"):
        command += f" --steps {steps[1]}"
    return command


def export_dm(source: Path, target: Path, raw: Path, preprocessed: Path, resumable: bool, command: str) -> Path:
    """Write ``source``'s DM to ``target`` (float16 weights without training state, or with ``resumable`` the whole
    checkpoint in float32) and its sidecar; returns the sidecar's path."""
    checkpoint = load_checkpoint(source)
    if checkpoint.stopped_early and not resumable:
        steps = checkpoint.pretraining_steps()
        raise DiffusionCheckpointError(f"{source} stopped at step {steps[0]} of its recipe's {steps[1]}: finish it "
                                       f"first, or pass --resumable to ship it with its training state")
    if resumable:
        if not checkpoint.training_state:
            raise DiffusionCheckpointError(f"{source} holds no training state: --resumable needs a checkpoint "
                                           f"written by nnUNetv2_dkm_pretrain")
        shipped = checkpoint
    else:
        weights = {key: value.half() if value.is_floating_point() else value
                   for key, value in checkpoint.weights.items()}
        shipped = replace(checkpoint, weights=weights, training_state=None)
    save_checkpoint(shipped, target)
    steps = checkpoint.pretraining_steps()
    sidecar = {
        "format": SIDECAR_FORMAT, "file": target.name, "sha256": file_sha256(target), "bytes": target.stat().st_size,
        "weights_dtype": "float32" if resumable else "float16", "resumable": resumable,
        "steps": steps[0] if steps else checkpoint.metadata.get("steps"), "recipe_steps": steps[1] if steps else None,
        "preset": checkpoint.metadata.get("preset"), "objective": checkpoint.config.objective,
        "target": checkpoint.config.target, "label_free": bool(checkpoint.metadata.get("label_free")),
        "recipe": checkpoint.metadata.get("recipe"),
        "plans_identity": {key: checkpoint.plans_identity.get(key) for key in
                           ("dataset_name", "plans_name", "configuration", "preprocessing_sha256")},
        "dataset_fingerprint": dataset_fingerprint(raw, preprocessed),
        "train_exams": len(checkpoint.metadata.get("train_exams", [])),
        "training_seconds": checkpoint.metadata.get("training_seconds"),
        "made_by": made_by(checkpoint), "exported_by": command, "exported": utc_now(),
    }
    path = sidecar_path(target)
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(sidecar, indent=1) + "\n"))
    return path


def read_sidecar(dm_file: Path) -> dict[str, Any] | None:
    """A shipped DM's sidecar; None where there is none."""
    path = sidecar_path(dm_file)
    if not path.is_file():
        return None
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DiffusionCheckpointError(f"{path}: unreadable sidecar of {dm_file.name} ({error})") from error
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise DiffusionCheckpointError(f"{path}: not the sidecar of a shipped DM (no format {SIDECAR_FORMAT!r})")
    return sidecar


def install_dm(source: Path, raw: Path, preprocessed: Path, configuration: str, plans_name: str, objective: str,
               overwrite: bool) -> tuple[Path, list[str]]:
    """Copy a shipped DM to where the trainer of ``objective`` finds it, after checking that it was made for these
    plans (``DiffusionCheckpointError`` otherwise) and that it is the file its sidecar describes. Returns (the installed
    path, notes for the user)."""
    if not source.is_file():
        raise DiffusionCheckpointError(f"-i {source}: no such file")
    sidecar = read_sidecar(source)
    digest = file_sha256(source)
    if sidecar is not None and sidecar.get("sha256") != digest:
        raise DiffusionCheckpointError(f"{source}: sha256 {digest[:12]}... differs from its sidecar's "
                                       f"{str(sidecar.get('sha256'))[:12]}...: the file is damaged or was replaced; "
                                       f"restore it (git checkout -- {source}) or export it again")
    checkpoint = load_checkpoint(source)
    if checkpoint.config.objective != objective:
        raise DiffusionCheckpointError(f"{source} is a {checkpoint.config.objective} DM, not {objective}: pass "
                                       f"--objective {checkpoint.config.objective}")
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    check_plans_identity(checkpoint.plans_identity, plans, configuration, source)
    notes = [f"{checkpoint.steps_description()}, {checkpoint.metadata.get('preset', '?')} preset"]
    if sidecar is not None and sidecar.get("dataset_fingerprint") != dataset_fingerprint(raw, preprocessed):
        notes.append(f"the DM was pretrained on other data with the same plans (dataset fingerprint "
                     f"{sidecar.get('dataset_fingerprint')} in its sidecar, this dataset's is "
                     f"{dataset_fingerprint(raw, preprocessed)})")
    location = dm_checkpoint_location(preprocessed, configuration, objective)
    target = location.path
    if target.is_file():
        if file_sha256(target) == digest:
            return target, [*notes, "already installed (same sha256)"]
        if not overwrite:
            raise DiffusionCheckpointError(f"a different DM checkpoint is already at {location.describe()}; pass "
                                           f"--overwrite to replace it with {source}")
    if target.is_dir():
        raise DiffusionCheckpointError(f"{location.describe()} is a folder where the DM checkpoint file goes")
    write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))
    if checkpoint.stopped_early:
        notes.append(f"unfinished: resume it with {made_by(checkpoint).split(' --preset')[0]} --continue")
    return target, notes


def dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id, e.g. 990")
    parser.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration (default 2d)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                        help="which of the dataset's DMs (default kinetic)")
    add_verbose_argument(parser)


@command_line_entry
def export_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_export_dm",
        description="Export a dataset's pretrained DM as a small file to ship (float16 weights, no optimizer state) "
                    "with a sidecar <file>.json stating its recipe, steps, plans, dataset fingerprint and sha256.")
    dataset_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the file to write, e.g. demo_dm.pt")
    parser.add_argument("--resumable", action="store_true",
                        help="keep the training state (float32 weights and optimizer: about 3x larger), for a DM "
                             "whose pretraining is to be continued elsewhere with --continue")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    raw, preprocessed = dataset_folder("nnUNet_raw", args.dataset), dataset_folder("nnUNet_preprocessed", args.dataset)
    source = dm_checkpoint_location(preprocessed, args.configuration, args.objective).path
    if args.output.exists() and not args.overwrite:
        sys.exit(f"error: -o {args.output} exists; pass --overwrite to replace it")
    command = shlex.join(["nnUNetv2_dkm_export_dm", *argv])
    sidecar = export_dm(source, args.output, raw, preprocessed, args.resumable, command)
    size = args.output.stat().st_size / 2**20
    print(f"exported {source} to {args.output} ({size:.1f} MiB); sidecar {sidecar}")


@command_line_entry
def install_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_install_dm",
        description="Install a shipped DM (nnUNetv2_dkm_export_dm) where nnUNetTrainerDKM finds it: "
                    "nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt (or $nnUNet_dkm_checkpoint). "
                    "Refuses a DM made for other plans, and a file that differs from its sidecar.")
    parser.add_argument("-i", "--input", type=Path, required=True, help="the shipped DM file")
    dataset_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a different DM already installed there")
    args = parser.parse_args(argv)
    raw, preprocessed = dataset_folder("nnUNet_raw", args.dataset), dataset_folder("nnUNet_preprocessed", args.dataset)
    target, notes = install_dm(args.input, raw, preprocessed, args.configuration, args.plans, args.objective,
                               args.overwrite)
    print(f"installed {args.input} as {target}: " + "; ".join(notes))
