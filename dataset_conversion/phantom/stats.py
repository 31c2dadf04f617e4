"""``nnUNetv2_dkm_phantom_stats``: measure a phantom dataset against the real case's figures.

Reads the written images (``images*``, ``kinetics*``, ``labels*``) of a dataset made by
``nnUNetv2_dkm_synthesize`` and rebuilds each exam's ground-truth anatomy from the seed and the
parameters recorded in ``dataset.json`` (cheap, and checked against the label), so that
fibroglandular tissue, breast and the noise-only background are known exactly. Definitions, per
exam (S0 pre-contrast, S1 first and S2 second post-contrast image; the tumour is the label):

- tumour early enhancement: median over the tumour of PE1 = 100 (S1 - S0) / S0 (percent);
- tumour SER: median over the tumour of (S1 - S0) / (S2 - S0), where S2 > S0;
- fibroglandular tissue: voxels at least 80 % fibroglandular (little partial volume with fat),
  more than two voxels away from the tumour; its early enhancement is their median PE1;
- noise sigma: sqrt(mean(S0^2) / 2) over the noise-only background (no tissue within two voxels),
  the second moment of the Rayleigh distribution of noise-only magnitude;
- tumour pre-contrast SNR: mean tumour S0 / sigma;
- tumour vs fibroglandular pre-contrast CNR: (mean tumour S0 - mean fibroglandular S0) / sigma;
- tumour volume: tumour voxels / breast voxels in the image, percent.

The table gives, for each statistic, the median and interquartile range over exams, the target
from the real Breast-MRI-NACT-Pilot case, and whether the median falls in it. Example::

    nnUNetv2_dkm_phantom_stats -d 990 -o montage.png --num-cases 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tabulate import tabulate
from tqdm import tqdm

from dataset_conversion.phantom.anatomy import Anatomy
from dataset_conversion.phantom.case import generate_anatomy_for
from dataset_conversion.phantom.parameters import CALIBRATION_TARGETS, PhantomParameters
from dataset_conversion.raw_dataset import (
    FILE_ENDING,
    DatasetConversionError,
    existing_datasets_with_id,
    nnunet_raw_folder,
)
from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.command_line import add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.ftv_rule import percent_enhancement
from nnunet_dkm.image_integrity import read_checked_image
from nnunet_dkm.reporting import markdown_table

Array = np.ndarray

STATISTIC_NAMES: dict[str, str] = {
    "tumour_early_enhancement_percent": "tumour early enhancement PE1 (%)",
    "tumour_ser": "tumour SER (S1-S0)/(S2-S0)",
    "fgt_early_enhancement_percent": "fibroglandular early enhancement PE1 (%)",
    "tumour_pre_snr": "tumour pre-contrast SNR",
    "tumour_fgt_pre_cnr": "tumour vs fibroglandular pre-contrast CNR",
    "tumour_volume_percent_of_breast": "tumour volume (% of imaged breast)",
    "fgt_percent_of_breast": "fibroglandular tissue (% of imaged breast)",
    "tumour_voxels": "tumour (label) voxels",
    "noise_sigma_estimated": "noise sigma, estimated from background",
    "noise_sigma_recorded": "noise sigma, recorded at generation",
}


@dataclass
class PhantomExam:
    """One labelled exam as written, plus its rebuilt anatomy. Arrays are (z, y, x)."""

    case_id: str
    phases: list[Array]
    label: Array
    anatomy: Anatomy
    noise_sigma_recorded: float


@dataclass
class CaseStatistics:
    """The statistics of one exam (see the module docstring for the definitions)."""

    case_id: str
    tumour_early_enhancement_percent: float
    tumour_ser: float
    fgt_early_enhancement_percent: float
    tumour_pre_snr: float
    tumour_fgt_pre_cnr: float
    tumour_volume_percent_of_breast: float
    fgt_percent_of_breast: float
    tumour_voxels: float
    noise_sigma_estimated: float
    noise_sigma_recorded: float


class PhantomDataset:
    """A phantom dataset in the raw folder: its ``dataset.json`` and access to its labelled exams."""

    def __init__(self, dataset_id: int, raw_folder: str | os.PathLike | None = None):
        raw = nnunet_raw_folder(raw_folder)
        folders = existing_datasets_with_id(raw, dataset_id)
        if not folders:
            raise DatasetConversionError(f"dataset {dataset_id} not found in {raw}")
        self.folder = folders[0]
        json_path = self.folder / "dataset.json"
        if not json_path.is_file():
            raise DatasetConversionError(f"{json_path} is missing")
        dkm = json.loads(json_path.read_text()).get("dkm", {})
        if "phantom_parameters" not in dkm or "phantom_cases" not in dkm:
            raise DatasetConversionError(
                f"{json_path}: no phantom parameters in the 'dkm' block; this dataset was not written by "
                f"nnUNetv2_dkm_synthesize, so its ground truth cannot be rebuilt"
            )
        try:
            self.parameters = PhantomParameters.from_dict(dkm["phantom_parameters"])
        except (TypeError, ValueError) as error:
            raise DatasetConversionError(
                f"{json_path}: phantom parameters from another version of nnunet-dkm ({error}); regenerate the "
                f"dataset with nnUNetv2_dkm_synthesize"
            ) from None
        self.seed = int(dkm["seed"])
        self.cases: dict[str, dict] = dkm["phantom_cases"]

    def labelled_case_ids(self) -> list[str]:
        """Training then test exams, in generation order."""
        return [case for case, info in self.cases.items() if info["split"] in ("Tr", "Ts")]

    def load(self, case_id: str) -> PhantomExam:
        """Read an exam's images and label and rebuild its anatomy; checks that they belong together."""
        info = self.cases[case_id]
        split = info["split"]
        num_phases = len(self.parameters.phase_times_s)
        paths = [self.folder / f"images{split}" / f"{case_id}_0000{FILE_ENDING}"]
        paths += [self.folder / f"kinetics{split}" / f"{case_id}_{p:04d}{FILE_ENDING}" for p in range(1, num_phases)]
        label_path = self.folder / f"labels{split}" / f"{case_id}{FILE_ENDING}"
        for path in [*paths, label_path]:
            if not path.is_file():
                raise DatasetConversionError(f"{path} is missing")
        phases = [sitk.GetArrayFromImage(read_checked_image(p)).astype(np.float32) for p in paths]
        label = sitk.GetArrayFromImage(read_checked_image(label_path)) > 0
        anatomy = generate_anatomy_for(self.parameters, self.seed, split, int(info["index"]), int(info["attempt"]))
        if anatomy.fat.shape != label.shape or np.any(label & ~anatomy.tumour_region()):
            raise DatasetConversionError(
                f"{label_path}: the label does not lie in the tumour rebuilt from dataset.json; the dataset was "
                f"written by another version of the phantom, so regenerate it with nnUNetv2_dkm_synthesize"
            )
        return PhantomExam(case_id, phases, label, anatomy, float(info["noise_sigma"]))


def noise_only_region(anatomy: Anatomy) -> Array:
    """Boolean (z, y, x): voxels with no tissue within two voxels (air and lung)."""
    tissue = anatomy.tissue_total > 0
    return ~ndimage.binary_dilation(tissue, structure=np.ones((3, 3, 3), bool), iterations=2)


def case_statistics(exam: PhantomExam) -> CaseStatistics:
    """Measure one exam (definitions in the module docstring)."""
    pre, early, late = exam.phases[0], exam.phases[1], exam.phases[2]
    tumour = exam.label
    near_tumour = ndimage.binary_dilation(exam.anatomy.tumour_region(), np.ones((3, 3, 3), bool), iterations=2)
    fibroglandular = (exam.anatomy.fibroglandular >= 0.8) & ~near_tumour
    background = noise_only_region(exam.anatomy)
    sigma = float(np.sqrt(np.mean(pre[background].astype(np.float64) ** 2) / 2.0))
    pe1 = percent_enhancement(pre, early)
    late_gain = late[tumour].astype(np.float64) - pre[tumour]
    early_gain = early[tumour].astype(np.float64) - pre[tumour]
    ser = early_gain[late_gain > 0] / late_gain[late_gain > 0]
    breast = exam.anatomy.breast > 0
    return CaseStatistics(
        case_id=exam.case_id,
        tumour_early_enhancement_percent=float(np.median(pe1[tumour])),
        tumour_ser=float(np.median(ser)) if ser.size else float("nan"),
        fgt_early_enhancement_percent=float(np.median(pe1[fibroglandular])) if fibroglandular.any() else float("nan"),
        tumour_pre_snr=float(pre[tumour].mean() / sigma),
        tumour_fgt_pre_cnr=float((pre[tumour].mean() - pre[fibroglandular].mean()) / sigma),
        tumour_volume_percent_of_breast=float(100.0 * tumour.sum() / max(int(breast.sum()), 1)),
        fgt_percent_of_breast=float(100.0 * exam.anatomy.fibroglandular[breast].sum() / max(int(breast.sum()), 1)),
        tumour_voxels=float(tumour.sum()),
        noise_sigma_estimated=sigma,
        noise_sigma_recorded=exam.noise_sigma_recorded,
    )


def measure_dataset(dataset_id: int, raw_folder: str | os.PathLike | None = None, num_cases: int | None = None,
                    verbose: bool = True) -> list[CaseStatistics]:
    """Statistics of the first ``num_cases`` labelled exams (training, then test) of a phantom dataset."""
    dataset = PhantomDataset(dataset_id, raw_folder)
    case_ids = dataset.labelled_case_ids()[:num_cases]
    return [
        case_statistics(dataset.load(case))
        for case in tqdm(case_ids, desc="measuring", unit="exam", disable=not verbose)
    ]


@dataclass
class SummaryRow:
    """Median and interquartile range of one statistic over exams, with its target range if any."""

    name: str
    median: float
    q1: float
    q3: float
    target: tuple[float, float] | None

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        return bool(self.target[0] <= self.median <= self.target[1])


def summarise(statistics: Sequence[CaseStatistics]) -> list[SummaryRow]:
    """One :class:`SummaryRow` per statistic (targeted ones first), NaNs ignored."""
    if not statistics:
        raise DatasetConversionError("no labelled exam to measure")
    rows = []
    for key, name in STATISTIC_NAMES.items():
        values = np.array([getattr(s, key) for s in statistics], dtype=float)
        values = values[np.isfinite(values)]
        q1, median, q3 = np.percentile(values, [25, 50, 75]) if values.size else (np.nan,) * 3
        rows.append(SummaryRow(name, float(median), float(q1), float(q3), CALIBRATION_TARGETS.get(key)))
    return rows


def format_table(rows: Sequence[SummaryRow], markdown: bool = False) -> str:
    """The summary as a plain-text (or Markdown) table: statistic | measured | target | ok."""
    header = ("statistic", "measured: median [IQR]", "target (real case)", "ok")
    body = []
    for row in rows:
        digits = 0 if row.name.endswith("voxels") else 2
        measured = f"{row.median:.{digits}f} [{row.q1:.{digits}f}, {row.q3:.{digits}f}]"
        target = "-" if row.target is None else f"{row.target[0]:g} to {row.target[1]:g}"
        ok = "-" if row.ok is None else ("yes" if row.ok else "NO")
        body.append((row.name, measured, target, ok))
    return "\n".join(markdown_table(body, header)) if markdown else tabulate(body, header, disable_numparse=True)


def write_montage(dataset_id: int, output: str | os.PathLike, raw_folder: str | os.PathLike | None = None,
                  num_cases: int = 4) -> Path:
    """PNG montage of ``num_cases`` labelled exams, one row each, at the slice with the most tumour.

    Columns: pre-contrast, each post-contrast phase (same grey window per row), the early
    percent-enhancement map (0-200 %, shown where S0 exceeds 3 noise sigmas) and the label
    outlined in red on the pre-contrast image.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    dataset = PhantomDataset(dataset_id, raw_folder)
    exams = [dataset.load(case) for case in dataset.labelled_case_ids()[:num_cases]]
    num_post = len(dataset.parameters.phase_times_s) - 1
    times = dataset.parameters.phase_times_s
    columns = 2 + num_post + 1
    figure = Figure(figsize=(2.4 * columns, 2.5 * len(exams)))
    axes = figure.subplots(len(exams), columns, squeeze=False)
    for row, exam in enumerate(exams):
        z = int(np.argmax(exam.label.sum(axis=(1, 2))))
        window = float(np.percentile(exam.phases[1], 99.7))
        sigma = float(np.sqrt(np.mean(exam.phases[0][noise_only_region(exam.anatomy)].astype(float) ** 2) / 2))
        panels = [(exam.phases[p][z], f"{'pre' if p == 0 else f'post {p}'} ({times[p]:+.0f} s)") for p in
                  range(num_post + 1)]
        for column, (image, title) in enumerate(panels):
            axes[row, column].imshow(image, cmap="gray", vmin=0, vmax=window)
            axes[row, column].set_title(title, fontsize=8)
        pe1 = percent_enhancement(exam.phases[0][z], exam.phases[1][z])
        shown = np.where(exam.phases[0][z] > 3 * sigma, pe1, np.nan)
        colormap = colormaps["jet"].copy()
        colormap.set_bad("black")
        axes[row, num_post + 1].imshow(shown, cmap=colormap, vmin=0, vmax=200)
        axes[row, num_post + 1].set_title("PE1 (0-200 %)", fontsize=8)
        axes[row, num_post + 2].imshow(exam.phases[0][z], cmap="gray", vmin=0, vmax=window)
        axes[row, num_post + 2].contour(exam.label[z], levels=[0.5], colors="red", linewidths=0.8)
        axes[row, num_post + 2].set_title("label on pre", fontsize=8)
        axes[row, 0].set_ylabel(f"{exam.case_id}\nslice {z}", fontsize=8)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))
    return output


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_phantom_stats",
        description="Measure a phantom dataset (enhancement, SER, SNR, CNR, tumour volume) beside the figures of "
        "the real Breast-MRI-NACT-Pilot case, and optionally draw a PNG montage.",
    )
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="dataset id of the phantom, e.g. 990")
    parser.add_argument("-o", "--montage", default=None, help="write a PNG montage of a few exams here")
    parser.add_argument("--num-cases", type=int, default=None, help="measure only the first N labelled exams")
    parser.add_argument("--montage-cases", type=int, default=4, help="exams in the montage (default 4)")
    parser.add_argument("--raw-folder", default=None, help="nnU-Net raw folder (default $nnUNet_raw)")
    parser.add_argument("--json", default=None, help="also write the per-exam statistics to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if a median misses its target")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.num_cases is not None and args.num_cases < 1:
        parser.error("--num-cases must be at least 1")
    for option, output in (("-o", args.montage), ("--json", args.json)):
        if output:
            check_writable_folder(Path(output).parent, f"{option} {output}: its folder")
    statistics = measure_dataset(args.dataset_id, args.raw_folder, args.num_cases)
    rows = summarise(statistics)
    print(f"{len(statistics)} labelled exams of dataset {args.dataset_id}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(s) for s in statistics], indent=1))
    if args.montage:
        print(f"montage: {write_montage(args.dataset_id, args.montage, args.raw_folder, args.montage_cases)}")
    if args.strict and not all(row.ok is not False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
