"""``nnUNetv2_dkm_synthesize_postcontrast``: DM-synthesised post-contrast images from a pre-contrast image.

The pre-contrast image goes through the dataset's nnU-Net preprocessing (the space the DM was trained
in), every 2D slice is synthesised by DDIM (or the one-step estimate), and the result goes back through
the inverse pipeline to the input's original geometry and intensity scale. For a 3D configuration (``-c 3d_fullres``)
the slices are cut across the axis the DM was pretrained on (its checkpoint's ``slice_axis``, default 0)::

    nnUNetv2_dkm_synthesize_postcontrast -i case_0000.nii.gz -o synthetic/ -d 990 -c 2d
    nnUNetv2_dkm_synthesize_postcontrast -i imagesTs/ -o synthetic/ -d 990 -c 2d -device cuda --ddim-steps 50

From a folder only the pre-contrast images (``*_0000``) are read, so a folder that also holds post-contrast phases
(``kineticsTs`` layout) works. Writes ``{case}_{phase:04d}`` (phase 1 = first post-contrast) per input: the
``kinetics{Tr,Ts}`` layout. nnU-Net would read those names as extra input channels, so the output folder must not
be the input folder or any folder of pre-contrast images that nnU-Net predicts from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import DivisiblePad
from tqdm import tqdm

from nnunet_dkm.atomic import remove_stale_temporaries, report_removed, write_atomically
from nnunet_dkm.cli_types import fraction, non_negative_int, positive_int
from nnunet_dkm.command_line import add_device_argument, add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.diffusion.checkpoint import check_plans_identity, load_checkpoint
from nnunet_dkm.diffusion.estimates import dm_ddim_estimate, dm_one_step_estimate
from nnunet_dkm.diffusion.objectives import synthesises_post_contrast
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.image_integrity import (
    check_finite_voxels,
    check_image_dimension,
    check_image_file,
    write_checked_image,
)
from nnunet_dkm.paths import DmCheckpointLocation, missing_dm_message
from nnunet_dkm.preprocessing import (
    PlannedDataset,
    preprocess_like_precontrast,
    preprocessed_to_original_space,
)

PRE_SUFFIX = "_0000"
# the sampler of the synthetic images (``--ddim-steps``, ``--eta``), chosen on training cases:
# benchmarks/results_dm_recipe.md
DEFAULT_DDIM_STEPS = 5
DEFAULT_ETA = 0.0


class SynthesisError(NnunetDkmError):
    """Bad input or output for synthesis; the message names the file or folder and what to do."""


def input_cases(path: Path | Sequence[Path], file_ending: str) -> list[tuple[str, Path]]:
    """(case id, file) for a single image, a list of images, or every pre-contrast image ``*_0000{file_ending}`` of a
    folder.

    The case id is the file name without ``_0000`` and the ending.
    """
    if not isinstance(path, Path):
        return [case for file in path for case in input_cases(Path(file), file_ending)]
    if path.is_dir():
        files = sorted(path.glob(f"*{PRE_SUFFIX}{file_ending}"))
        if not files:
            others = sorted(p.name for p in path.glob(f"*{file_ending}"))[:3]
            hint = f" (it holds {', '.join(others)}, ...: rename pre-contrast images to <case>_0000{file_ending})" \
                if others else ""
            raise SynthesisError(f"{path}: no pre-contrast image *{PRE_SUFFIX}{file_ending} there{hint}")
    elif path.is_file():
        files = [path]
    else:
        raise SynthesisError(f"{path}: no such file or folder")
    cases = []
    for file in files:
        name = file.name[: -len(file_ending)] if file.name.endswith(file_ending) else file.stem
        cases.append((name.removesuffix(PRE_SUFFIX), file))
    return cases


def check_output_folder(inputs: Path | Sequence[Path], output_folder: Path, file_ending: str) -> None:
    """Refuse to write phase files where nnU-Net would take them for input channels."""
    sources = [inputs] if isinstance(inputs, Path) else [Path(p) for p in inputs]
    input_folders = {(p if p.is_dir() else p.parent).resolve() for p in sources}
    if output_folder.resolve() in input_folders:
        raise SynthesisError(
            f"-o {output_folder} is the input folder: the outputs ({{case}}_0001{file_ending}, ...) would sit beside "
            f"the pre-contrast images and nnU-Net would read them as extra input channels. Choose another -o"
        )
    if output_folder.is_dir() and any(output_folder.glob(f"*{PRE_SUFFIX}{file_ending}")):
        raise SynthesisError(
            f"-o {output_folder} holds pre-contrast images (*{PRE_SUFFIX}{file_ending}): nnU-Net would read the "
            f"synthetic phases written there as extra input channels. Choose an empty or separate -o"
        )


def synthesize_case(pre: np.ndarray, network: torch.nn.Module, checkpoint, method: str, ddim_steps: int, seed: int,
                    device: torch.device, batch_size: int = 8, slice_axis: int = 0, eta: float = 0.0) -> np.ndarray:
    """DM estimate of the post-contrast phases for every slice of a preprocessed pre-contrast volume.

    Args:
        pre: (z', y', x') nnU-Net-normalised pre-contrast image.
        slice_axis: the axis the 2D slices are cut across (2d configurations: 0; 3D ones: the DM's ``slice_axis``).

    Returns:
        (K, z', y', x') estimated post-contrast phases, normalised like ``pre``.
    """
    if slice_axis:
        moved = synthesize_case(np.moveaxis(pre, slice_axis, 0), network, checkpoint, method, ddim_steps, seed,
                                device, batch_size, eta=eta)
        return np.ascontiguousarray(np.moveaxis(moved, 1, 1 + slice_axis))
    height, width = pre.shape[1:]
    slices = DivisiblePad(checkpoint.config.size_divisor, method="end")(pre.astype(np.float32)).as_tensor()[:, None]
    out = []
    for start in range(0, len(slices), batch_size):
        batch = slices[start:start + batch_size].to(device)
        if method == "ddim":
            estimate = dm_ddim_estimate(network, checkpoint.config, checkpoint.input_scaling, batch, ddim_steps, seed,
                                        eta)
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
    write_atomically(path, lambda temporary: write_checked_image(image, temporary, shown_as=path))


def dm_checkpoint_for(dataset: PlannedDataset, checkpoint_file: Path | None,
                      objective: str = "kinetic") -> DmCheckpointLocation:
    """``-chk`` where given, else the dataset's DM of ``objective`` (``$nnUNet_dkm_checkpoint`` or its dkm folder); it
    must exist."""
    if checkpoint_file is None:
        return dataset.existing_dm_checkpoint(SynthesisError, objective)
    location = DmCheckpointLocation(checkpoint_file, False)
    if not checkpoint_file.is_file():
        raise SynthesisError(f"-chk {checkpoint_file}: no such file. " + missing_dm_message(
            location, dataset.name, dataset.configuration, dataset.plans_identifier, objective))
    return location


def synthesize_postcontrast(inputs: Path | Sequence[Path], output_folder: Path, dataset_id: int,
                            configuration: str = "2d", plans_identifier: str = "nnUNetPlans",
                            checkpoint_file: Path | None = None, device: str = "cpu", method: str = "ddim",
                            ddim_steps: int = DEFAULT_DDIM_STEPS, seed: int = 0, overwrite: bool = False,
                            eta: float = DEFAULT_ETA, objective: str = "kinetic") -> list[Path]:
    """Synthesise post-contrast phases for one image, a list of images or a folder of pre-contrast images; returns
    the written files. ``objective`` chooses the dataset's DM where no ``checkpoint_file`` is given."""
    check_writable_folder(output_folder, "-o")
    dataset = PlannedDataset.load(dataset_id, configuration, plans_identifier)
    file_ending = dataset.file_ending
    cases = input_cases(inputs, file_ending)
    check_output_folder(inputs, output_folder, file_ending)
    location = dm_checkpoint_for(dataset, checkpoint_file, objective)
    checkpoint = load_checkpoint(location.path, map_location=device)
    if not synthesises_post_contrast(checkpoint.config):
        raise SynthesisError(f"{location.path}: a DM with the {checkpoint.config.objective!r} objective generates "
                             f"pre-contrast images, not post-contrast ones (a control for the benchmark); use the "
                             f"kinetic DM")
    check_plans_identity(checkpoint.plans_identity, dataset.plans_manager.plans, configuration, location.path)
    schedule_length = checkpoint.config.num_train_timesteps
    if method == "ddim" and ddim_steps > schedule_length:
        raise SynthesisError(f"--ddim-steps {ddim_steps}: the DM's schedule has T = {schedule_length} timesteps "
                             f"({location.path}); choose at most {schedule_length} steps "
                             f"(default {DEFAULT_DDIM_STEPS})")
    for _, file in cases:  # every input before anything is written
        check_image_file(file)
        check_image_dimension(file, (2, 3), f"give one pre-contrast volume per file, {{case}}{PRE_SUFFIX}{file_ending}")
    network = checkpoint.build_network(source=location.path).to(device)
    if checkpoint.config.spatial_dims != 2:
        raise SynthesisError(f"{location.path}: the DM is {checkpoint.config.spatial_dims}D; synthesis runs a 2D DM "
                             f"slice by slice")
    slice_axis = int(checkpoint.metadata.get("slice_axis", 0)) if dataset.spatial_dims == 3 else 0
    phases = range(1, checkpoint.config.num_post_phases + 1)
    targets = {case: [output_folder / f"{case}_{p:04d}{file_ending}" for p in phases] for case, _ in cases}
    existing = [str(t) for files in targets.values() for t in files if t.exists()]
    if existing and not overwrite:
        raise SynthesisError(f"{existing[0]} exists ({len(existing)} outputs in all); pass --overwrite to replace")
    output_folder.mkdir(parents=True, exist_ok=True)
    report_removed(remove_stale_temporaries(output_folder), "partly written image")
    plans_manager, configuration_manager = dataset.plans_manager, dataset.configuration_manager
    reader = plans_manager.image_reader_writer_class()
    written = []
    for case, file in tqdm(cases, desc="synthesising post-contrast", unit="case"):
        try:
            data, properties = reader.read_images([str(file)])
        except Exception as error:  # readers raise many types; name the file
            raise SynthesisError(f"{file}: cannot read it as an image ({error})") from error
        check_finite_voxels(data, file)
        if "sitk_stuff" not in properties:
            raise SynthesisError(f"{file}: writing needs the SimpleITK reader; the plans use {type(reader)}")
        stack, stats, geometry = preprocess_like_precontrast([data], properties["spacing"], plans_manager,
                                                             configuration_manager)
        estimate = synthesize_case(stack[0], network, checkpoint, method, ddim_steps, seed, torch.device(device),
                                   slice_axis=slice_axis, eta=eta)
        original = preprocessed_to_original_space(estimate, stats, geometry, plans_manager, configuration_manager)
        for phase_image, target in zip(original, targets[case], strict=True):
            write_image(phase_image, properties, target)
            written.append(target)
    return written


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_dkm_synthesize_postcontrast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=Path, required=True,
                        help="a pre-contrast image, or a folder: then only its *_0000 files (pre-contrast) are read")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder for {case}_{phase:04d} files; not the input folder")
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset whose plans and DM to use")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("-p", "--plans", default="nnUNetPlans")
    parser.add_argument("-chk", "--checkpoint", type=Path,
                        help="DM checkpoint (default: $nnUNet_dkm_checkpoint, else the dataset's dkm folder)")
    add_device_argument(parser, "where the DM samples")
    parser.add_argument("--method", default="ddim", choices=("ddim", "one_step"),
                        help="DDIM sampling (default) or the one-step estimate from the noised pre-contrast image")
    parser.add_argument("--ddim-steps", type=positive_int, default=DEFAULT_DDIM_STEPS,
                        help=f"DDIM steps (network evaluations; default {DEFAULT_DDIM_STEPS})")
    parser.add_argument("--eta", type=fraction, default=DEFAULT_ETA,
                        help="DDIM noise weight: 0 (default) deterministic DDIM, 1 ancestral (DDPM-like) steps")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the initial noise (same seed, same output)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    written = synthesize_postcontrast(args.input, args.output, args.dataset, args.configuration, args.plans,
                                      args.checkpoint, args.device, args.method, args.ddim_steps, args.seed,
                                      args.overwrite, args.eta)
    print(f"wrote {len(written)} post-contrast image(s) to {args.output} as {{case}}_{{phase:04d}} (the kinetics "
          f"folder layout; not an nnU-Net input folder: nnU-Net would read these names as extra input channels)")


if __name__ == "__main__":
    main()
