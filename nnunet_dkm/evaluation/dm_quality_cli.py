"""``nnUNetv2_dkm_dm_quality``: how close the DM's synthetic post-contrast images are to the truth.

    nnUNetv2_dkm_dm_quality -d 990 -c 2d                       # the dataset's DM, on its test split
    nnUNetv2_dkm_dm_quality -d 990 -c 2d --split selection     # on the DM's held-out training exams
    nnUNetv2_dkm_dm_quality -d 990 -c 2d --ddim-steps 5 --eta 0 -chk other_dm.pt -o quality_other
    nnUNetv2_dkm_dm_quality -d 990 -c 2d --synthetic my_synthetic/   # score images the command wrote before

The DM synthesises every evaluated case's post-contrast phases with the code of
``nnUNetv2_dkm_synthesize_postcontrast`` (from the pre-contrast image alone: no mask, no label), then each written
image is compared with the true phases (``nnunet_dkm.evaluation.dm_quality``) beside the identity, a linear map fitted
on the DM's training exams and a mask-told ceiling. Outputs in ``-o`` (default
``$nnUNet_results/DatasetXXX/dkm_dm_quality__<plans>__<configuration>__<split>/``): ``results.md``, ``results.csv``,
``examples.png`` and the synthetic images in ``synthetic/`` (reused when made with the same DM and settings).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from nnunet_dkm.atomic import remove_stale_temporaries, replace_folder, write_atomically
from nnunet_dkm.cli_types import fraction, non_negative_int, positive_int
from nnunet_dkm.command_line import add_device_argument, add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.diffusion.checkpoint import load_checkpoint
from nnunet_dkm.diffusion.postcontrast import (
    DEFAULT_DDIM_STEPS,
    DEFAULT_ETA,
    dm_checkpoint_for,
    synthesize_postcontrast,
)
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.evaluation.dm_quality import QualityCase, References, read_volume, score_cases
from nnunet_dkm.fingerprints import file_sha256
from nnunet_dkm.paths import nnunet_folder
from nnunet_dkm.preprocessing import DceExam, PlannedDataset, find_pretraining_exams, find_test_exams
from nnunet_dkm.reporting import format_number, machine_description, markdown_table

SPLITS = ("test", "selection")
ESTIMATE_ORDER = ("identity", "linear", "synthetic", "mask-told ceiling")


@dataclass(frozen=True)
class SynthesisSettings:
    """How the synthetic images were made; a ``synthetic/`` folder is reused only for the same settings."""

    checkpoint: str
    checkpoint_steps: int | None
    checkpoint_sha256: str
    cases: tuple[str, ...]
    method: str
    ddim_steps: int
    eta: float
    seed: int

    def record(self) -> dict:
        """The settings as ``synthesis.json`` holds them."""
        return json.loads(json.dumps(self.__dict__))

    def describe(self) -> str:
        sampler = "one-step estimate" if self.method == "one_step" else \
            f"DDIM, {self.ddim_steps} steps, eta {self.eta:g}"
        return f"{self.checkpoint} ({self.checkpoint_steps} pretraining steps), {sampler}, seed {self.seed}"


def evaluation_exams(dataset: PlannedDataset, split: str, metadata: dict) -> list[DceExam]:
    """The exams scored: the labelled test exams with post-contrast phases, or the DM's held-out training exams."""
    if split == "test":
        exams = [exam for exam in find_test_exams(dataset.raw_folder) if exam.post_files]
        if not exams:
            raise NnunetDkmError(f"{dataset.raw_folder}: no test case with a label (labelsTs) and post-contrast "
                                 f"phases (kineticsTs); use --split selection to score the DM's held-out training "
                                 f"exams")
        return exams
    held_out = set(metadata.get("validation_exams") or ())
    exams = [exam for exam in find_pretraining_exams(dataset.raw_folder) if exam.case_id in held_out]
    if not exams:
        raise NnunetDkmError("the DM checkpoint names no held-out training exam (metadata 'validation_exams') found "
                             f"in {dataset.raw_folder}; use --split test")
    return exams


def training_exams(dataset: PlannedDataset, metadata: dict) -> list[DceExam]:
    """The DM's training exams (from its checkpoint; all pretraining exams where it does not say)."""
    exams = find_pretraining_exams(dataset.raw_folder)
    trained_on = set(metadata.get("train_exams") or ())
    return [exam for exam in exams if exam.case_id in trained_on] or exams


def synthesise(dataset_id: int, configuration: str, plans: str, exams: Sequence[DceExam], folder: Path,
               settings: SynthesisSettings, checkpoint: Path, device: str) -> Path:
    """``folder`` holding ``{case}_{phase:04d}`` for every exam, made by ``nnUNetv2_dkm_synthesize_postcontrast``'s
    code; reused where its ``synthesis.json`` records the same settings, else rebuilt and renamed into place."""
    record = folder / "synthesis.json"
    if record.is_file() and json.loads(record.read_text()) == settings.record():
        return folder
    remove_stale_temporaries(folder.parent)

    def fill(temporary: Path) -> None:
        synthesize_postcontrast([exam.pre_file for exam in exams], temporary, dataset_id, configuration, plans,
                                checkpoint, device, settings.method, settings.ddim_steps, settings.seed,
                                eta=settings.eta)
        (temporary / "synthesis.json").write_text(json.dumps(settings.record(), indent=1))

    return replace_folder(folder, fill)


def read_synthetic(folder: Path, case: QualityCase, file_ending: str) -> np.ndarray:
    """The case's synthetic phases (K, z, y, x) from its ``{case}_{phase:04d}`` files."""
    files = [folder / f"{case.case_id}_{phase:04d}{file_ending}" for phase in range(1, case.posts.shape[0] + 1)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise NnunetDkmError(f"{folder}: synthetic image(s) {missing} missing; make them with "
                             f"nnUNetv2_dkm_synthesize_postcontrast or leave out --synthetic")
    volumes = [read_volume(f) for f in files]
    if volumes[0].shape != case.pre.shape:
        raise NnunetDkmError(f"{files[0]}: shape {volumes[0].shape}, the case's pre-contrast image {case.pre.shape}")
    return np.stack(volumes)


class ExampleCases:
    """The cases the example figure shows, kept while the cases stream past: those with the largest tumours (in
    voxels; the first cases where none has a tumour)."""

    def __init__(self, rows: int = 3) -> None:
        self.rows = rows
        self.largest: list[tuple[QualityCase, np.ndarray]] = []
        self.first: list[tuple[QualityCase, np.ndarray]] = []

    def offer(self, case: QualityCase, synthetic: np.ndarray) -> None:
        if len(self.first) < self.rows:
            self.first.append((case, synthetic))
        if case.tumour is not None and case.tumour.any():
            self.largest = sorted([*self.largest, (case, synthetic)],
                                  key=lambda pair: -int(pair[0].tumour.sum()))[:self.rows]

    def chosen(self) -> list[tuple[QualityCase, np.ndarray]]:
        return self.largest or self.first


def results_table(rows: list[dict]) -> pd.DataFrame:
    """The scores with each estimate's MAE relative to identity's (same phase and region)."""
    table = pd.DataFrame(rows)
    identity = table[table["estimate"] == "identity"].set_index(["phase", "region"])["mae"]
    table["mae_vs_identity"] = [row.mae / identity.get((row.phase, row.region), np.nan) - 1
                                for row in table.itertuples()]
    order = {name: i for i, name in enumerate(ESTIMATE_ORDER)}
    table["order"] = table["estimate"].map(order)
    return table.sort_values(["region", "phase", "order"]).drop(columns="order").reset_index(drop=True)


def markdown(table: pd.DataFrame, lines: list[str]) -> str:
    """The report: context lines, then one table per region."""
    text = ["# DM quality: synthetic post-contrast images against the truth", "", *[f"- {line}" for line in lines]]
    for region in ("tumour", "breast"):
        part = table[table["region"] == region]
        if part.empty:
            continue
        rows = [[str(row.phase), f"**{row.estimate}**" if row.estimate == "synthetic" else row.estimate,
                 format_number(row.mae), f"{row.mae_vs_identity:+.0%}", format_number(row.psnr, 1),
                 format_number(row.ssim), format_number(row.enhancement_corr), str(row.voxels)]
                for row in part.itertuples()]
        text += ["", f"## {region}", "", *markdown_table(rows, ["phase", "estimate", "MAE", "MAE vs identity",
                                                                  "PSNR (dB)", "SSIM", "enhancement corr.", "voxels"])]
    return "\n".join(text) + "\n"


def example_figure(examples: Sequence[tuple[QualityCase, np.ndarray]], references: References, path: Path) -> None:
    """Per (case, synthetic phases (K, z, y, x)), the middle tumour slice: pre, true post 1, synthetic, linear map,
    and the synthetic image's error; red: tumour label."""
    figure = Figure(figsize=(12, 2.6 * len(examples)))
    axes = figure.subplots(len(examples), 5, squeeze=False)
    for row, (case, synthetic) in enumerate(examples):
        tumour_slices = np.flatnonzero(case.tumour.any(axis=(1, 2))) if case.tumour is not None else []
        z = int(tumour_slices[len(tumour_slices) // 2]) if len(tumour_slices) else case.pre.shape[0] // 2
        made = case.normalised(synthetic[0])
        panels = [("pre-contrast", case.pre[z]), ("true post-contrast 1", case.posts[0, z]),
                  ("synthetic post-contrast 1", made[z]),
                  ("linear map", references.estimates(case, 0)["linear"][z]),
                  ("synthetic - true", made[z] - case.posts[0, z])]
        low, high = np.percentile(np.concatenate([case.pre[z].ravel(), case.posts[0, z].ravel()]), [1, 99.5])
        for column, (title, image) in enumerate(panels):
            axis = axes[row, column]
            if column == 4:
                limit = float(np.abs(image).max()) or 1.0
                axis.imshow(image, cmap="coolwarm", vmin=-limit, vmax=limit)
            else:
                axis.imshow(image, cmap="gray", vmin=low, vmax=high)
            if case.tumour is not None and case.tumour[z].any():
                axis.contour(case.tumour[z], levels=[0.5], colors="r", linewidths=0.6)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{case.case_id}: {title}" if column == 0 else title, fontsize=8)
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=90, bbox_inches="tight"))


def measure(dataset_id: int, configuration: str = "2d", plans: str = "nnUNetPlans", split: str = "test",
            checkpoint_file: Path | None = None, objective: str = "kinetic", method: str = "ddim",
            ddim_steps: int = DEFAULT_DDIM_STEPS, eta: float = DEFAULT_ETA, seed: int = 0,
            synthetic_folder: Path | None = None, output: Path | None = None, device: str = "cpu",
            command: str = "") -> tuple[pd.DataFrame, Path]:
    """Run the measure; returns (the table, the output folder)."""
    dataset = PlannedDataset.load(dataset_id, configuration, plans)
    location = dm_checkpoint_for(dataset, checkpoint_file, objective)
    metadata = load_checkpoint(location.path).metadata
    output = output or (nnunet_folder("nnUNet_results") / dataset.name
                        / f"dkm_dm_quality__{plans}__{configuration}__{split}")
    output.mkdir(parents=True, exist_ok=True)
    exams = evaluation_exams(dataset, split, metadata)
    settings = SynthesisSettings(str(location.path.resolve()), metadata.get("steps"), file_sha256(location.path),
                                 tuple(exam.case_id for exam in exams), method, ddim_steps, eta, seed)
    if synthetic_folder is None:
        synthetic_folder = synthesise(dataset_id, configuration, plans, exams, output / "synthetic", settings,
                                      location.path, device)
        made_by = settings.describe()
    else:
        made_by = f"images in {synthetic_folder} (given with --synthetic)"
    references = References.fit(training_exams(dataset, metadata), seed)
    examples = ExampleCases()

    def cases_one_at_a_time() -> Iterator[tuple[QualityCase, np.ndarray]]:  # memory flat in the number of cases
        for exam in exams:
            case = QualityCase.read(exam)
            synthetic = read_synthetic(synthetic_folder, case, dataset.file_ending)
            examples.offer(case, synthetic)
            yield case, synthetic

    table = results_table(score_cases(cases_one_at_a_time(), references))
    a_b = ", ".join(f"phase {k + 1}: post = {a:.3f} pre + {b:.3f}" for k, (a, b) in enumerate(references.linear))
    lines = [
        f"command: `{command}`" if command else "",
        f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}; machine: {machine_description(device)}",
        f"dataset: {dataset.name}, configuration {configuration}; cases: {split} split ({len(exams)}: "
        f"{', '.join(exam.case_id for exam in exams)})",
        f"synthetic images: {made_by}",
        f"DM: objective {metadata.get('objective', 'kinetic')}, preset {metadata.get('preset', '?')}, "
        f"{len(metadata.get('train_exams') or [])} training exams",
        "units: each case's own pre-contrast standard deviations (its mean subtracted); MAE pooled over the "
        "region's voxels, PSNR and SSIM averaged over cases, enhancement correlation pooled (Pearson of "
        "estimate - pre against true post - pre)",
        f"linear map fitted on the DM's training exams ({a_b}); the mask-told ceiling is told the TRUE tumour mask "
        "(not a pre-contrast-only estimate)",
        "regions: tumour = the label; breast = the pre-contrast body mask (Otsu) minus the tumour",
    ]
    text = markdown(table, [line for line in lines if line])
    write_atomically(output / "results.md", lambda temporary: temporary.write_text(text))
    write_atomically(output / "results.csv", lambda temporary: table.to_csv(temporary, index=False))
    example_figure(examples.chosen(), references, output / "examples.png")
    print(text)
    print(f"written to {output}")
    return table, output


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nnUNetv2_dkm_dm_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("-p", "--plans", default="nnUNetPlans")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test: the labelled test exams with post-contrast phases (default); selection: the DM's "
                             "held-out training exams (for choosing a recipe without the test split)")
    parser.add_argument("-chk", "--checkpoint", type=Path,
                        help="DM checkpoint (default: $nnUNet_dkm_checkpoint, else the dataset's dkm folder)")
    parser.add_argument("--method", default="ddim", choices=("ddim", "one_step"),
                        help="as nnUNetv2_dkm_synthesize_postcontrast --method")
    parser.add_argument("--ddim-steps", type=positive_int, default=DEFAULT_DDIM_STEPS,
                        help=f"DDIM steps (default {DEFAULT_DDIM_STEPS}, the synthesis command's)")
    parser.add_argument("--eta", type=fraction, default=DEFAULT_ETA,
                        help=f"DDIM noise weight (default {DEFAULT_ETA:g})")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--synthetic", type=Path,
                        help="score the {case}_{phase:04d} images in this folder (written by "
                             "nnUNetv2_dkm_synthesize_postcontrast) instead of synthesising them")
    parser.add_argument("-o", "--output", type=Path, help="output folder")
    add_device_argument(parser, "where the DM samples")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    args.command = shlex.join(["nnUNetv2_dkm_dm_quality", *argv])
    return args


@command_line_entry
def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    if args.output is not None:
        check_writable_folder(args.output, "-o")
    measure(args.dataset, args.configuration, args.plans, args.split, args.checkpoint, "kinetic", args.method,
            args.ddim_steps, args.eta, args.seed, args.synthetic, args.output, args.device, args.command)


if __name__ == "__main__":
    main()
