"""Convert the MAMA-MIA breast DCE-MRI dataset into nnU-Net raw format for DKM.

MAMA-MIA (Garrucho et al., Scientific Data 2025, doi:10.1038/s41597-025-04707-4; download from
Synapse syn60868042) gathers 1,506 pre-treatment DCE-MRI exams from four TCIA collections with
expert tumour segmentations. Its layout::

    <MAMA-MIA>/
        images/DUKE_001/duke_001_0000.nii.gz     pre-contrast
        images/DUKE_001/duke_001_0001.nii.gz     first post-contrast, then _0002, ...
        segmentations/expert/duke_001.nii.gz     expert tumour segmentation
        train_test_splits.csv                    columns train_split, test_split (optional)

Patient ids are ``<COHORT>_<number>`` with cohorts DUKE, ISPY1, ISPY2 and NACT (e.g. DUKE_001,
ISPY1_1001, ISPY2_100899, NACT_01). Folder names are upper case while the distributed file names
are lower case; the project's own helper code writes ``{pid}/{pid}_000{phase}.nii.gz``. Names
are therefore matched without regard to case, and the case id written is the patient folder's name.

The number of post-contrast phases differs between exams, while a DKM dataset needs the same
number in every exam: ``num_post_phases`` K keeps phases 1..K and skips patients with fewer.
Exams without an (or with an empty) expert segmentation go to ``unlabelledTr/`` for DM pretraining.
Every file is checked to be complete, with finite voxels (``nnunet_dkm.image_integrity``): an exam with a
damaged image or segmentation is skipped, naming the file. Label values other than 0 and 1 are merged into
the tumour label, with a note in the summary. Nothing is resampled: a phase or label on another grid than the
pre-contrast image skips the patient.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from dataset_conversion.raw_dataset import (
    ConversionSummary,
    DatasetConversionError,
    RawDatasetWriter,
    check_same_geometry,
    describe_merged_label_values,
    nnunet_raw_folder,
)
from nnunet_dkm.command_line import add_verbose_argument, command_line_entry
from nnunet_dkm.image_integrity import (
    DamagedImageError,
    ImageDimensionError,
    check_image_dimension,
    read_checked_image,
)

MAMA_MIA_COHORTS = ("DUKE", "ISPY1", "ISPY2", "NACT")
SPLITS_CSV_NAME = "train_test_splits.csv"
SPLIT_COLUMNS = {"train_split": "Tr", "test_split": "Ts"}
LABEL_SOURCE = "MAMA-MIA expert"
REFERENCE = (
    "Garrucho L. et al., A large-scale multicenter breast cancer DCE-MRI benchmark dataset with expert "
    "segmentations, Scientific Data 12, 2025, doi:10.1038/s41597-025-04707-4"
)
LICENSE = "CC BY-NC 4.0 (MAMA-MIA); the source TCIA collections carry their own licenses"
PHASE_FILE = re.compile(r"^(?P<patient>.+)_(?P<phase>\d{4,})\.nii\.gz$", re.IGNORECASE)


@dataclass
class MamaMiaPatient:
    """One MAMA-MIA exam as found on disk.

    ``phase_files`` maps the phase number (0 = pre-contrast, 1 = first post-contrast, ...) to its
    NIfTI file; ``segmentation`` is the expert segmentation file, or None where there is none.
    """

    patient_id: str
    folder: Path
    phase_files: dict[int, Path]
    segmentation: Path | None

    @property
    def cohort(self) -> str:
        return cohort_of(self.patient_id)


def cohort_of(patient_id: str) -> str:
    """The cohort of a MAMA-MIA patient id: the part before the last underscore, upper case (``NACT_01`` -> NACT)."""
    return patient_id.rsplit("_", 1)[0].upper()


# -- finding the input ------------------------------------------------------------------------
def find_patients(input_folder: str | Path) -> list[MamaMiaPatient]:
    """All exams in ``input_folder/images``, sorted by patient id, with their phase and segmentation files.

    Raises :class:`DatasetConversionError` when the folder, ``images/`` or ``segmentations/expert/``
    is missing, or when ``images/`` holds no patient folder.
    """
    root = Path(input_folder)
    if root.is_file():
        raise DatasetConversionError(f"input folder {root} is a file, not a folder: give the MAMA-MIA folder that "
                                     f"holds images/ and segmentations/")
    if not root.is_dir():
        raise DatasetConversionError(f"input folder {root} does not exist")
    images = root / "images"
    if not images.is_dir():
        raise DatasetConversionError(
            f"{root} is not a MAMA-MIA folder: {images} is missing (expected images/<pid>/<pid>_0000.nii.gz)"
        )
    expert = root / "segmentations" / "expert"
    if not expert.is_dir():
        raise DatasetConversionError(
            f"{expert} is missing: MAMA-MIA's expert segmentations (segmentations/expert/<pid>.nii.gz) are needed "
            f"for the training cases"
        )
    segmentations = {path.name.lower(): path for path in expert.iterdir() if path.is_file()}
    patients = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
        phase_files = {}
        for path in folder.iterdir():
            match = PHASE_FILE.match(path.name)
            if match and match["patient"].lower() == folder.name.lower():
                phase_files[int(match["phase"])] = path
        segmentation = segmentations.get(f"{folder.name.lower()}.nii.gz")
        patients.append(MamaMiaPatient(folder.name, folder, dict(sorted(phase_files.items())), segmentation))
    if not patients:
        raise DatasetConversionError(f"no patient folder found in {images} (expected images/<pid>/<pid>_0000.nii.gz)")
    return patients


def select_cohorts(patients: Sequence[MamaMiaPatient], cohorts: Iterable[str] | None) -> list[MamaMiaPatient]:
    """The patients of the requested cohorts (case-insensitive); all patients when ``cohorts`` is None.

    Raises :class:`DatasetConversionError` for a requested cohort without any patient.
    """
    if not cohorts:
        return list(patients)
    wanted = {cohort.upper() for cohort in cohorts}
    found = sorted({patient.cohort for patient in patients})
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetConversionError(
            f"no patient of cohort {', '.join(missing)} in the input folder; cohorts found: {', '.join(found)} "
            f"(MAMA-MIA has {', '.join(MAMA_MIA_COHORTS)})"
        )
    return [patient for patient in patients if patient.cohort in wanted]


def read_splits(csv_path: Path) -> dict[str, str]:
    """Map lower-case patient id -> ``"Tr"`` or ``"Ts"`` from MAMA-MIA's ``train_test_splits.csv``.

    The file has two columns, ``train_split`` and ``test_split``, each listing patient ids (the shorter
    column padded with empty cells). Column names and ids are matched without regard to case.
    """
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DatasetConversionError(f"{csv_path} is empty; expected columns train_split and test_split")
        columns = {name.strip().lower(): index for index, name in enumerate(header)}
        if not set(SPLIT_COLUMNS) <= set(columns):
            raise DatasetConversionError(
                f"{csv_path}: expected columns train_split and test_split, found {', '.join(header)}"
            )
        splits: dict[str, str] = {}
        for line_number, row in enumerate(reader, start=2):
            for column, split in SPLIT_COLUMNS.items():
                index = columns[column]
                patient = row[index].strip().lower() if index < len(row) else ""
                if not patient or patient in ("nan", "none"):
                    continue
                if splits.get(patient, split) != split:
                    raise DatasetConversionError(
                        f"{csv_path}, line {line_number}: patient {patient} is listed in both train_split and "
                        f"test_split"
                    )
                splits[patient] = split
    return splits


# -- reading one exam -------------------------------------------------------------------------
def read_volume(path: Path) -> sitk.Image:
    """Read a complete 3D NIfTI volume.

    Raises:
        ImageDimensionError: its header declares a 2D or 4D image.
        DamagedImageError: the file is unreadable, truncated, corrupt or holds NaN / infinite voxels.
        DatasetConversionError: it is not a 3D single-channel image.
    """
    check_image_dimension(path, (3,), "give the whole 3D volume of this phase, not one slice or a series")
    image = read_checked_image(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetConversionError(
            f"{path}: expected a 3D single-channel volume, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return image


def required_phase_files(patient: MamaMiaPatient, num_post_phases: int) -> list[Path]:
    """The files of phases 0..K of an exam; raises :class:`DatasetConversionError` naming what is missing."""
    if 0 not in patient.phase_files:
        expected = patient.folder / f"{patient.patient_id.lower()}_0000.nii.gz"
        found = ", ".join(p.name for p in patient.phase_files.values()) or "no phase file"
        raise DatasetConversionError(f"pre-contrast image {expected} missing (found {found})")
    posts = [phase for phase in patient.phase_files if phase > 0]
    missing = [phase for phase in range(1, num_post_phases + 1) if phase not in patient.phase_files]
    if missing:
        if len(posts) < num_post_phases:
            reason = (
                f"{len(posts)} post-contrast phase(s), --num-post-phases {num_post_phases} needs "
                f"0001..{num_post_phases:04d}"
            )
        else:
            reason = f"post-contrast phase {missing[0]:04d} missing"
        raise DatasetConversionError(f"{patient.folder}: {reason}")
    return [patient.phase_files[phase] for phase in range(num_post_phases + 1)]


def load_exam(patient: MamaMiaPatient, num_post_phases: int) -> tuple[sitk.Image, list[sitk.Image]]:
    """Pre-contrast image and post-contrast phases 1..K, all checked to lie on the pre-contrast grid.

    Returns ``(pre, [post_1, ..., post_K])``; each is a 3D image of size (x, y, z) as stored.
    """
    files = required_phase_files(patient, num_post_phases)
    pre = read_volume(files[0])
    posts = []
    for path in files[1:]:
        phase = read_volume(path)
        check_same_geometry(pre, phase, str(path))
        posts.append(phase)
    return pre, posts


@dataclass
class ExpertLabel:
    """An expert segmentation binarised for nnU-Net: ``image`` UInt8 (> 0 -> 1) on the pre-contrast grid, or None
    when it holds no voxel > 0; ``merged_values`` describes the values other than 0 and 1 that were merged (empty
    when there were none)."""

    image: sitk.Image | None
    merged_values: str = ""


def load_label(path: Path, pre: sitk.Image) -> ExpertLabel:
    """The expert segmentation binarised (> 0 -> 1) on ``pre``'s grid.

    Raises:
        DamagedImageError: the file is unreadable or damaged.
        DatasetConversionError: a segmentation on another grid than the pre-contrast image (it is not resampled).
    """
    label = read_volume(path)
    check_same_geometry(pre, label, str(path))
    values = sitk.GetArrayViewFromImage(label)  # (z, y, x)
    binary = (values > 0).astype(np.uint8)
    merged = describe_merged_label_values(values)
    if not binary.any():
        return ExpertLabel(None, merged)
    result = sitk.GetImageFromArray(binary)
    result.CopyInformation(pre)
    return ExpertLabel(result, merged)


# -- the conversion ---------------------------------------------------------------------------
def convert_mamamia(
    input_folder: str | Path,
    dataset_id: int,
    raw_folder: str | Path | None = None,
    overwrite: bool = False,
    cohorts: Sequence[str] | None = None,
    num_post_phases: int = 2,
    skip_unlabelled: bool = False,
    name: str = "MAMAMIA",
    summary: ConversionSummary | None = None,
) -> Path:
    """Convert a MAMA-MIA folder into ``nnUNet_raw/Dataset{dataset_id:03d}_{name}`` and return that folder.

    Args:
        input_folder: the MAMA-MIA folder holding ``images/``, ``segmentations/expert/`` and optionally
            ``train_test_splits.csv`` (without it every labelled exam is a training case).
        dataset_id: nnU-Net dataset id (1..999).
        raw_folder: nnU-Net raw folder; ``$nnUNet_raw`` when None.
        overwrite: replace an existing dataset with the same id.
        cohorts: keep only these cohorts (DUKE, ISPY1, ISPY2, NACT; any case); all when None.
        num_post_phases: K, the post-contrast phases kept (0001..000K); exams with fewer are skipped.
        skip_unlabelled: drop exams without expert segmentation instead of writing them to ``unlabelledTr/``.
        name: dataset name after the id.
        summary: filled with what was written and skipped, if given (it is printed in any case).

    Raises:
        DatasetConversionError: missing input, no patient, an existing dataset without ``overwrite``,
            or no training case left after skipping.
    """
    if num_post_phases < 1:
        raise DatasetConversionError(f"--num-post-phases must be at least 1, got {num_post_phases}")
    summary = summary if summary is not None else ConversionSummary()
    root = Path(input_folder)
    patients = select_cohorts(find_patients(root), cohorts)
    splits_csv = root / SPLITS_CSV_NAME
    splits = read_splits(splits_csv) if splits_csv.is_file() else None
    raw = nnunet_raw_folder(raw_folder)

    unlisted: list[str] = []
    extra_phases: list[str] = []
    unlabelled: list[str] = []
    with RawDatasetWriter(raw, dataset_id, name, overwrite=overwrite) as writer:
        for patient in tqdm(patients, desc="MAMA-MIA", unit="exam"):
            split = "Tr" if splits is None else splits.get(patient.patient_id.lower())
            if split is None:
                unlisted.append(patient.patient_id)
                split = "Tr"
            outcome = _convert_patient(writer, patient, split, num_post_phases, skip_unlabelled, summary)
            if outcome is None:
                continue
            if outcome != "labelled":
                unlabelled.append(f"{patient.patient_id} ({outcome})")
            if max(patient.phase_files) > num_post_phases:
                extra_phases.append(patient.patient_id)

        summary.written = {key: list(ids) for key, ids in writer.cases.items()}
        if splits is None:
            summary.note(f"no {SPLITS_CSV_NAME} in {root}: every labelled exam is a training case")
        if unlisted:
            summary.note(
                f"{len(unlisted)} exam(s) not listed in {splits_csv} were made training cases: {_short_list(unlisted)}"
            )
        if unlabelled:
            summary.note(
                f"{len(unlabelled)} exam(s) without usable expert segmentation written to unlabelledTr/ for DM "
                f"pretraining: {_short_list(unlabelled)}"
            )
        if extra_phases:
            summary.note(
                f"{len(extra_phases)} exam(s) have more than {num_post_phases} post-contrast phases; only "
                f"0001..{num_post_phases:04d} were kept"
            )
        print(summary.table())
        converted_cohorts = sorted({cohort_of(case) for ids in writer.cases.values() for case in ids})
        return writer.finish(
            dkm={
                "label_source": LABEL_SOURCE,
                "acquisition_times_s": None,
                "cohorts": converted_cohorts,
                "split_source": SPLITS_CSV_NAME if splits is not None else "none (all labelled exams in Tr)",
                "source_layout": "images/<pid>/<pid>_<phase:04d>.nii.gz, segmentations/expert/<pid>.nii.gz",
            },
            description=(
                f"MAMA-MIA breast DCE-MRI ({', '.join(converted_cohorts)}): pre-contrast image as network input, "
                f"post-contrast phases 1..{num_post_phases} in kineticsTr/kineticsTs, expert tumour labels "
                f"binarised (> 0 -> 1)"
            ),
            reference=REFERENCE,
            license=LICENSE,
        )


def _convert_patient(writer: RawDatasetWriter, patient: MamaMiaPatient, split: str, num_post_phases: int,
                     skip_unlabelled: bool, summary: ConversionSummary) -> str | None:
    """Write one exam, or record in ``summary`` why it was skipped.

    Returns ``"labelled"`` for a labelled case, the reason for an exam written to ``unlabelledTr/``
    (``"no expert segmentation"`` or ``"empty expert segmentation"``), None for a skipped exam (a damaged image or
    label, too few phases, a file on another grid, ...). Label values other than 0 and 1 are merged into 1 with a
    note in ``summary``.
    """
    case = patient.patient_id
    try:
        pre, posts = load_exam(patient, num_post_phases)
        label = load_label(patient.segmentation, pre) if patient.segmentation is not None else ExpertLabel(None)
        if label.merged_values:
            summary.note(f"{case}: {patient.segmentation} holds values other than 0 and 1: {label.merged_values}; "
                         f"every value > 0 was merged into the tumour label 1, the others into background 0")
        if label.image is not None:
            writer.add_case(case, pre, posts, label.image, split=split)
            return "labelled"
        if patient.segmentation is None:
            missing = "no expert segmentation"
            where = f"no {case.lower()}.nii.gz in segmentations/expert/"
        else:
            missing = "empty expert segmentation"
            where = f"{patient.segmentation} holds no voxel > 0"
        if split == "Ts":
            summary.skip(
                case,
                f"test-split exam with {missing} ({where}): cannot be evaluated, and kept out of DM pretraining "
                f"so that the test split stays unseen",
            )
            return None
        if skip_unlabelled:
            summary.skip(case, f"{missing} ({where}); --skip-unlabelled")
            return None
        writer.add_unlabelled(case, pre, posts)
        return missing
    except (DatasetConversionError, DamagedImageError, ImageDimensionError) as error:
        summary.skip(case, str(error))
        return None


def _short_list(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more)"


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_convert_mamamia",
        description="Convert the MAMA-MIA breast DCE-MRI dataset (images/, segmentations/expert/, "
        "train_test_splits.csv) into nnU-Net raw format for DKM: pre-contrast image in imagesTr, "
        "post-contrast phases in kineticsTr, exams without expert label in unlabelledTr.",
    )
    parser.add_argument(
        "-i", "--input-folder", required=True, help="MAMA-MIA folder (holds images/ and segmentations/expert/)"
    )
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id, e.g. 992")
    parser.add_argument("--cohort", nargs="+", metavar="COHORT", default=None,
                        help=f"keep only these cohorts ({', '.join(MAMA_MIA_COHORTS)}); default: all")
    parser.add_argument("--num-post-phases", type=int, default=2,
                        help="post-contrast phases kept per exam (0001..000K); exams with fewer are skipped "
                             "(default: 2)")
    parser.add_argument("--skip-unlabelled", action="store_true",
                        help="drop exams without expert segmentation instead of writing them to unlabelledTr/")
    parser.add_argument("--name", default="MAMAMIA", help="dataset name after the id (default: MAMAMIA)")
    parser.add_argument("--raw-folder", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    path = convert_mamamia(args.input_folder, args.dataset_id, raw_folder=args.raw_folder, overwrite=args.overwrite,
                           cohorts=args.cohort, num_post_phases=args.num_post_phases,
                           skip_unlabelled=args.skip_unlabelled, name=args.name)
    print(f"dataset written to {path}")


if __name__ == "__main__":
    main()
