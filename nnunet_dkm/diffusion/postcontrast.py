"""``nnUNetv2_dkm_synthesize_postcontrast``: DM-synthesised post-contrast images from a pre-contrast image.

The pre-contrast image goes through the dataset's nnU-Net preprocessing (the space the DM was trained
in), every 2D slice is synthesised by DDIM (or the one-step estimate), and the result goes back through
the inverse pipeline to the input's original geometry and intensity scale::

    nnUNetv2_dkm_synthesize_postcontrast -i case_0000.nii.gz -o synthetic/ -d 990 -c 2d
    nnUNetv2_dkm_synthesize_postcontrast -i imagesTs/ -o synthetic/ -d 990 -c 2d -device cuda --ddim-steps 50

Writes ``{case}_{phase:04d}.nii.gz`` (phase 1 = first post-contrast) per input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError, check_plans_identity, load_network
from nnunet_dkm.diffusion.estimates import dm_ddim_estimate, dm_one_step_estimate
from nnunet_dkm.diffusion.locations import dm_checkpoint_path
from nnunet_dkm.diffusion.preprocessed_space import (
    PreprocessedSpaceError,
    find_dataset_folder,
    load_plans,
    preprocess_like_precontrast,
    preprocessed_to_original_space,
)

PRE_SUFFIX = "_0000"


def input_cases(path: Path, file_ending: str) -> list[tuple[str, Path]]:
    """(case id, file) for a single image or every ``*{file_ending}`` in a folder (``_0000`` is dropped)."""
    files = [path] if path.is_file() else sorted(path.glob(f"*{file_ending}")) if path.is_dir() else []
    if not files:
        raise PreprocessedSpaceError(f"{path}: no {file_ending} image there")
    cases = []
    for file in files:
        name = file.name[: -len(file_ending)] if file.name.endswith(file_ending) else file.stem
        cases.append((name[: -len(PRE_SUFFIX)] if name.endswith(PRE_SUFFIX) else name, file))
    return cases


def pad_to_multiple(slices: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (N, 1, H, W) at the end of H and W to multiples of ``divisor``; returns the padded tensor and (H, W)."""
    height, width = slices.shape[2:]
    padded_height, padded_width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    return torch.nn.functional.pad(slices, (0, padded_width - width, 0, padded_height - height)), (height, width)


def synthesize_case(
    pre: np.ndarray, network: torch.nn.Module, checkpoint, method: str, ddim_steps: int, seed: int,
    device: torch.device, batch_size: int = 8,
) -> np.ndarray:
    """DM estimate of the post-contrast phases for every slice of a preprocessed pre-contrast volume.

    Args:
        pre: (z', y', x') nnU-Net-normalised pre-contrast image (2D configuration: slices along axis 0).

    Returns:
        (K, z', y', x') estimated post-contrast phases, normalised like ``pre``.
    """
    slices, (height, width) = pad_to_multiple(torch.from_numpy(pre[:, None].astype(np.float32)),
                                              checkpoint.config.size_divisor)
    out = []
    for start in range(0, len(slices), batch_size):
        batch = slices[start:start + batch_size].to(device)
        if method == "ddim":
            estimate = dm_ddim_estimate(network, checkpoint.config, checkpoint.input_scaling, batch, ddim_steps, seed)
        else:
            estimate = dm_one_step_estimate(network, checkpoint.config, checkpoint.input_scaling, batch, seed=seed)
        out.append(estimate[:, :, :height, :width].float().cpu())
    return torch.cat(out).permute(1, 0, 2, 3).numpy()


def write_image(array: np.ndarray, reference: dict, path: Path) -> None:
    """Write (z, y, x) float32 with the input's geometry (nnU-Net SimpleITKIO properties), atomically."""
    image = sitk.GetImageFromArray(array.astype(np.float32))
    stuff = reference["sitk_stuff"]
    image.SetSpacing(stuff["spacing"])
    image.SetOrigin(stuff["origin"])
    image.SetDirection(stuff["direction"])
    temporary = path.with_name(f".tmp_{path.name}")
    sitk.WriteImage(image, str(temporary), useCompression=True)
    os.replace(temporary, path)


def synthesize_postcontrast(
    inputs: Path,
    output_folder: Path,
    dataset_id: int,
    configuration: str = "2d",
    plans_identifier: str = "nnUNetPlans",
    checkpoint_file: Path | None = None,
    device: str = "cpu",
    method: str = "ddim",
    ddim_steps: int = 20,
    seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Synthesise post-contrast phases for one image or a folder of images; returns the written files."""
    plans_manager, configuration_manager, dataset_json, preprocessed = load_plans(dataset_id, configuration,
                                                                                  plans_identifier)
    if len(configuration_manager.patch_size) != 2:
        raise PreprocessedSpaceError(f"configuration {configuration} is 3D; the DM works on 2D slices: use -c 2d")
    checkpoint_file = checkpoint_file or dm_checkpoint_path(preprocessed, configuration)
    network, checkpoint = load_network(checkpoint_file, map_location=device)
    check_plans_identity(checkpoint.plans_identity, plans_manager.plans, configuration)
    network = network.to(device)
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    cases = input_cases(inputs, file_ending)
    output_folder.mkdir(parents=True, exist_ok=True)
    phases = range(1, checkpoint.config.num_post_phases + 1)
    targets = {case: [output_folder / f"{case}_{p:04d}{file_ending}" for p in phases] for case, _ in cases}
    existing = [str(t) for files in targets.values() for t in files if t.exists()]
    if existing and not overwrite:
        raise PreprocessedSpaceError(f"{existing[0]} exists ({len(existing)} outputs in all); pass --overwrite")
    reader = plans_manager.image_reader_writer_class()
    written = []
    for case, file in tqdm(cases, desc="synthesising post-contrast", unit="case"):
        try:
            data, properties = reader.read_images([str(file)])
        except Exception as error:  # readers raise many types; name the file
            raise PreprocessedSpaceError(f"{file}: cannot read it as an image ({error})") from error
        if "sitk_stuff" not in properties:
            raise PreprocessedSpaceError(f"{file}: writing needs the SimpleITK reader; the plans use {type(reader)}")
        stack, stats, geometry = preprocess_like_precontrast([data], properties["spacing"], plans_manager,
                                                             configuration_manager)
        estimate = synthesize_case(stack[0], network, checkpoint, method, ddim_steps, seed, torch.device(device))
        original = preprocessed_to_original_space(estimate, stats, geometry, plans_manager, configuration_manager)
        for phase_image, target in zip(original, targets[case], strict=True):
            write_image(phase_image, properties, target)
            written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_dkm_synthesize_postcontrast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=Path, required=True, help="a pre-contrast image or a folder of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset whose plans and DM to use")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("-p", "--plans", default="nnUNetPlans")
    parser.add_argument("-chk", "--checkpoint", type=Path, help="DM checkpoint (default: the dataset's dkm folder)")
    parser.add_argument("-device", "--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--method", default="ddim", choices=("ddim", "one_step"),
                        help="DDIM sampling (default) or the one-step estimate from the noised pre-contrast image")
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (same seed, same output)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    try:
        find_dataset_folder("nnUNet_preprocessed", args.dataset)
        written = synthesize_postcontrast(args.input, args.output, args.dataset, args.configuration, args.plans,
                                          args.checkpoint, args.device, args.method, args.ddim_steps, args.seed,
                                          args.overwrite)
    except (PreprocessedSpaceError, DiffusionCheckpointError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {len(written)} post-contrast image(s) to {args.output}")


if __name__ == "__main__":
    main()
