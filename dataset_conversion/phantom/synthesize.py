"""``nnUNetv2_dkm_synthesize``: the embedded default dataset, a physics-based breast DCE-MRI phantom.

Writes an nnU-Net raw dataset (through :class:`~dataset_conversion.raw_dataset.RawDatasetWriter`)
of synthetic fat-suppressed sagittal DCE exams: pre-contrast images in ``imagesTr``/``imagesTs``,
post-contrast phases in ``kineticsTr``/``kineticsTs``, unlabelled exams in ``unlabelledTr`` and the
TCIA functional-tumour-volume label (PE1 >= 70 % in the tumour, >= 4 of 26 neighbours) in
``labelsTr``/``labelsTs``. Nothing is downloaded. Examples::

    nnUNetv2_dkm_synthesize -d 990                      # demo preset: 32 train, 12 test, 48 unlabelled
    nnUNetv2_dkm_synthesize -d 993 --preset nact --num-train 100 --seed 1
    nnUNetv2_dkm_synthesize -d 990 --phase-times -230 90 300 600 --pre-contrast-cue 0.5 --overwrite

The same ``--seed`` gives the same dataset; an exam depends only on (seed, split, index), not on the
counts. ``dataset.json``'s ``dkm`` block records the preset, seed and every phantom parameter.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from dataset_conversion.phantom.case import generate_case, to_image
from dataset_conversion.phantom.parameters import PRESETS, preset_parameters
from dataset_conversion.raw_dataset import (
    ConversionSummary,
    DatasetConversionError,
    RawDatasetWriter,
    nnunet_raw_folder,
)
from nnunet_dkm.cli_types import finite_float, non_negative_int, positive_int
from nnunet_dkm.command_line import add_verbose_argument, command_line_entry
from nnunet_dkm.resources import check_fits_in_memory, check_fits_on_disk

# peak numpy memory of one exam (generate_case + to_image), measured with tracemalloc: 160 bytes per voxel for the
# demo and nact presets, 3 to 5 phases
PHANTOM_BYTES_PER_VOXEL = 160
# gzipped NIfTI on disk per voxel of each written image: 1.5 bytes measured on the demo phantom (float32 with Rician
# noise; 2 on the nact preset): the lower one, so that only what surely cannot fit is refused
PHANTOM_DISK_BYTES_PER_IMAGE_VOXEL = 1.5
LABEL_SOURCE = "synthetic: PE1>=70% within tumour, >=4/26 neighbours (TCIA FTV rule)"
#: bump when a code change alters the exams a (preset, seed) produces
PHANTOM_GENERATOR = "nnunet-dkm breast DCE phantom v1"
REFERENCE = (
    "nnunet-dkm synthetic phantom; contrast physics by dcmri (Parker AIF, extended Tofts, spoiled gradient echo); "
    "calibrated to TCIA Breast-MRI-NACT-Pilot (Newitt & Hylton 2016, DOI 10.7937/K9/TCIA.2016.QHSYHJKY)"
)


def check_phantom_fits(shape_xyz: Sequence[int], num_phases: int, counts: dict[str, int], raw: Path) -> None:
    """Refuse, before anything is allocated or written, a phantom whose exam cannot fit in this machine's memory or
    whose dataset cannot fit on the raw folder's disk."""
    voxels = math.prod(int(n) for n in shape_xyz)
    grid = " x ".join(str(n) for n in shape_xyz)
    check_fits_in_memory(voxels * PHANTOM_BYTES_PER_VOXEL, f"one phantom exam of {grid} voxels",
                         "choose a smaller --shape")
    exams = sum(counts.values())
    images = exams * num_phases + counts["Tr"] + counts["Ts"]  # every phase, and the labels
    check_fits_on_disk(voxels * images * PHANTOM_DISK_BYTES_PER_IMAGE_VOXEL, raw, f"{exams} phantom exams of {grid} "
                       f"voxels", "choose fewer exams (--num-train, --num-test, --num-unlabelled), a smaller --shape "
                       "or a --raw-folder on another disk")


def _count(value: int | None, default: int, what: str, minimum: int) -> int:
    count = default if value is None else int(value)
    if count < minimum:
        raise DatasetConversionError(f"{what} must be at least {minimum}, got {count}")
    return count


def synthesize_dataset(dataset_id: int, preset: str = "demo", raw_folder: str | os.PathLike | None = None,
                       overwrite: bool = False, seed: int = 0, num_train: int | None = None,
                       num_test: int | None = None, num_unlabelled: int | None = None,
                       shape: Sequence[int] | None = None, phase_times: Sequence[float] | None = None,
                       pre_contrast_cue: float | None = None, name: str = "DKMPhantom", vessels: bool | None = None,
                       verbose: bool = True) -> Path:
    """Generate the phantom dataset ``Dataset{dataset_id:03d}_{name}`` in the nnU-Net raw folder.

    Args:
        dataset_id: nnU-Net dataset id (1-999).
        preset: ``"demo"`` (128 x 128 x 12, sized for a 2-core CPU) or ``"nact"`` (256 x 256 x 60,
            the real protocol's grid).
        raw_folder: destination; ``None`` uses ``$nnUNet_raw``.
        overwrite: replace an existing dataset with the same id (otherwise it is an error).
        seed: non-negative integer; the same seed gives the same exams.
        num_train, num_test, num_unlabelled: exam counts (``None``: the preset's).
        shape: grid (x, y, z) in voxels (``None``: the preset's); the field of view stays the same.
        phase_times: k-space-centre times (s, injection at 0): one pre-contrast time <= 0, then
            >= 2 increasing post-contrast times (``None``: -230, 177, 531 like the real case).
        pre_contrast_cue: tumour-minus-fibroglandular pre-contrast contrast in noise sigmas
            (``None``: 0.5); 0 makes the tumour invisible before contrast apart from its shape.
        name: dataset name after the id.
        vessels: ``False`` leaves out the enhancing vessels (``None``: the preset's).
        verbose: show a progress bar and print a summary.

    Returns:
        The dataset folder. Raises :class:`DatasetConversionError` for bad arguments or an
        existing dataset without ``overwrite``.
    """
    if preset not in PRESETS:
        raise DatasetConversionError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    if int(seed) < 0:
        raise DatasetConversionError(f"seed must be a non-negative integer, got {seed}")
    try:
        params = preset_parameters(preset, shape, phase_times, pre_contrast_cue, vessels)
    except ValueError as error:
        raise DatasetConversionError(f"invalid phantom settings: {error}") from None
    recipe = PRESETS[preset]
    counts = {
        "Tr": _count(num_train, recipe.num_train, "number of training exams", 1),
        "Ts": _count(num_test, recipe.num_test, "number of test exams", 0),
        "unlabelled": _count(num_unlabelled, recipe.num_unlabelled, "number of unlabelled exams", 0),
    }
    raw = nnunet_raw_folder(raw_folder)
    check_phantom_fits(params.shape_xyz, len(params.phase_times_s), counts, raw)
    plan = ((split, index) for split, count in counts.items() for index in range(count))  # lazy: counts may be large
    start = time.perf_counter()
    with RawDatasetWriter(raw, dataset_id, name, overwrite=overwrite) as writer:
        cases: dict[str, dict] = {}
        with tqdm(total=sum(counts.values()), desc=f"phantom {preset}", unit="exam", disable=not verbose) as progress:
            for split, index in plan:
                case = generate_case(params, int(seed), split, index)
                images = [to_image(phase, params) for phase in case.phases]
                if split == "unlabelled":
                    writer.add_unlabelled(case.case_id, images[0], images[1:])
                else:
                    writer.add_case(case.case_id, images[0], images[1:], to_image(case.label, params), split=split)
                cases[case.case_id] = {
                    "split": split,
                    "index": index,
                    "attempt": case.attempt,
                    "noise_sigma": round(case.noise_sigma, 4),
                }
                progress.update()
        folder = writer.finish(
            dkm={
                "label_source": LABEL_SOURCE,
                "acquisition_times_s": list(params.phase_times_s),
                "preset": preset,
                "seed": int(seed),
                "phantom_generator": PHANTOM_GENERATOR,
                "phantom_parameters": params.to_dict(),
                "phantom_cases": cases,
            },
            description=(
                f"Synthetic fat-suppressed sagittal breast DCE-MRI (preset {preset}, seed {seed}): pre-contrast "
                f"input, {len(params.phase_times_s) - 1} post-contrast phases in kinetics folders, FTV label"
            ),
            reference=REFERENCE,
            license="synthetic data generated by nnunet-dkm (Apache-2.0); no patient data",
        )
        summary = ConversionSummary(written=dict(writer.cases))
    if verbose:
        print(summary.table())
        x, y, z = params.shape_xyz
        sx, sy, sz = params.spacing_xyz
        print(f"  grid                     : {x} x {y} x {z} voxels of {sx:.3f} x {sy:.3f} x {sz:.3f} mm")
        print(f"  phase times (s)          : {', '.join(f'{t:g}' for t in params.phase_times_s)}")
        print(f"  time                     : {time.perf_counter() - start:.1f} s")
        print(f"  written to               : {folder}")
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_synthesize",
        description="Write the synthetic breast DCE-MRI phantom (pre-contrast images, post-contrast phases, "
        "unlabelled exams, FTV labels) as an nnU-Net raw dataset. Nothing is downloaded.",
    )
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id, e.g. 990")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="demo: 128x128x12 for a 2-core CPU; scarce: make demo's 64x64x12 grid with few labels "
                             "(32 train, 24 test) and many unlabelled exams (240); nact: 256x256x60 like the real "
                             "protocol")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--num-train", type=positive_int, default=None, help="labelled training exams")
    parser.add_argument("--num-test", type=non_negative_int, default=None, help="labelled test exams (imagesTs)")
    parser.add_argument("--num-unlabelled", type=non_negative_int, default=None,
                        help="exams without label (unlabelledTr)")
    parser.add_argument("--shape", type=positive_int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="grid in voxels (same field of view)")
    parser.add_argument("--phase-times", type=finite_float, nargs="+", metavar="T", default=None,
                        help="k-space-centre times in s after injection: pre-contrast (<= 0) then >= 2 post-contrast")
    parser.add_argument("--pre-contrast-cue", type=finite_float, default=None,
                        help="tumour-minus-fibroglandular contrast on the pre-contrast image, in noise sigmas")
    parser.add_argument("--no-vessels", action="store_true", help="leave out enhancing vessels")
    parser.add_argument("--name", default="DKMPhantom", help="dataset name (default DKMPhantom)")
    parser.add_argument("--raw-folder", default=None, help="nnU-Net raw folder (default $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    add_verbose_argument(parser)
    return parser


@command_line_entry
def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    synthesize_dataset(args.dataset_id, preset=args.preset, raw_folder=args.raw_folder, overwrite=args.overwrite,
                       seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                       num_unlabelled=args.num_unlabelled, shape=args.shape, phase_times=args.phase_times,
                       pre_contrast_cue=args.pre_contrast_cue, name=args.name,
                       vessels=False if args.no_vessels else None)


if __name__ == "__main__":
    main()
