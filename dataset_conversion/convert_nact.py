"""Convert TCIA Breast-MRI-NACT-Pilot DICOM into nnU-Net raw format for DKM.

Breast-MRI-NACT-Pilot (Newitt & Hylton, TCIA 2016, doi:10.7937/K9/TCIA.2016.QHSYHJKY): 64 patients
under neoadjuvant chemotherapy, sagittal fat-suppressed 3D FGRE DCE-MRI at up to four visits
(ClinicalTrialTimePointDescription ``MRI_1`` .. ``MRI_4``), with UCSF parametric maps and SEGs.

What is written, per patient (the layout of ``raw_dataset.py``)::

    imagesTr/<PatientID>_0000.nii.gz       pre-contrast phase of the baseline visit (network input)
    kineticsTr/<PatientID>_000{1..K}.nii.gz first K post-contrast phases, same grid
    labelsTr/<PatientID>.nii.gz            tumour label: the "VOI PE Segmentation thresh=70" SEG, or,
                                           where absent, rebuilt with the collection's FTV rule
    unlabelledTr/<case>_000{0..K}.nii.gz   exams with DCE but no usable label; later visits with
                                           --unlabelled-visits (case = <PatientID>_<visit>)
    imagesTs/ labelsTs/ kineticsTs/        the same for --test-patients; a test patient whose label cannot
                                           be built keeps imagesTs/ and kineticsTs/, without labelsTs/

Everything is found by DICOM header (:mod:`dataset_conversion.dicom_index`); the DCE series and
its phases by :mod:`dataset_conversion.nact_dce`, the label by :mod:`dataset_conversion.nact_labels`.
Images keep their original geometry; SEG frames are placed on the pre-contrast grid by physical
position, tolerating exporters' sub-voxel offsets or resampling (see :func:`dicom_seg.seg_on_grid`).
An exam whose DCE cannot be read is skipped; one whose label cannot be built is still written without
label (training patients to unlabelledTr/, test patients to imagesTs/). The summary table at the end lists
cases written and skipped, with the reasons. The conversion fails only when nothing at all can be written;
a dataset without labelled training case is written with a note that nnU-Net cannot plan or train on it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from tqdm import tqdm

from dataset_conversion.dicom_index import Exam, group_exams, index_dicom_folder
from dataset_conversion.dicom_seg import MAPPING_SAME
from dataset_conversion.nact_dce import (
    DceAcquisition,
    find_dce_series,
    read_phase_image,
    read_phase_times,
    split_phases,
)
from dataset_conversion.nact_labels import (
    SOURCE_TUMOUR_SEG,
    TUMOUR_SEG_DESCRIPTION,
    TumourLabel,
    find_label_inputs,
    tumour_label,
)
from dataset_conversion.raw_dataset import (
    NO_TRAINING_CASE_NOTE,
    ConversionSummary,
    DatasetConversionError,
    RawDatasetWriter,
    nnunet_raw_folder,
)
from nnunet_dkm.command_line import add_verbose_argument, command_line_entry

DEFAULT_NAME = "BreastMRINACTPilot"
REFERENCE = (
    "Newitt D, Hylton N. Single site breast DCE-MRI data and segmentations from patients undergoing "
    "neoadjuvant chemotherapy. The Cancer Imaging Archive, 2016. doi:10.7937/K9/TCIA.2016.QHSYHJKY"
)
LICENSE = "CC BY 3.0 (TCIA Breast-MRI-NACT-Pilot); the TCIA data usage policy applies"
OFFICIAL_COUNT_TOLERANCE = 0.001  # rebuilt labels further than 0.1 % from the official FTV count get a note
MAX_FILES_NAMED = 20


class NactConversionWarning(UserWarning):
    """Something the user should know that does not stop the conversion (skipped file, rebuilt label)."""


@dataclass
class ExamImages:
    """One exam's DCE as SimpleITK images: the pre-contrast phase and the first K post-contrast phases."""

    dce: DceAcquisition
    pre: sitk.Image
    post: list[sitk.Image]
    acquisition_times_s: list[float] | None  # pre + kept post phases, s relative to injection


def case_id(exam: Exam) -> str:
    """``PatientID`` with characters other than letters, digits and '-' replaced; ``_<visit>`` added after baseline."""
    patient = _sanitise(exam.patient_id)
    return patient if exam.is_baseline else f"{patient}_{_sanitise(exam.visit)}"


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "unknown"


def load_exam_images(exam: Exam, num_post_phases: int) -> ExamImages:
    """Find, split and read the DCE of ``exam``, keeping the pre-contrast and the first ``num_post_phases`` phases.

    Raises:
        DatasetConversionError: no DCE, missing phases, fewer post-contrast phases than wanted,
        phases of different geometry, or unreadable slices (the message names the series).
    """
    dce = find_dce_series(exam)
    phases = split_phases(dce)
    available = len(phases) - 1
    if available < num_post_phases:
        raise DatasetConversionError(
            f"{dce.label}: missing phases: {available} post-contrast phase(s) found "
            f"({', '.join(p.instance_range for p in phases)}), --num-post-phases {num_post_phases} needs "
            f"{num_post_phases}"
        )
    kept = phases[: num_post_phases + 1]
    images = [read_phase_image(phase, f"{dce.label}, phase {index + 1}") for index, phase in enumerate(kept)]
    map_files = [s.files[0].path for s in exam.series_list() if s.series_uid not in {d.series_uid for d in dce.series}]
    times = read_phase_times(map_files, len(phases))
    return ExamImages(dce=dce, pre=images[0], post=images[1:],
                      acquisition_times_s=times[: num_post_phases + 1] if times else None)


def label_image(label: TumourLabel, pre: sitk.Image) -> sitk.Image:
    """The label array as a uint8 image on the pre-contrast grid."""
    image = sitk.GetImageFromArray(label.array)
    image.CopyInformation(pre)
    return image


def _warn(message: str) -> None:
    warnings.warn(message, NactConversionWarning, stacklevel=3)


def _report_skipped_files(skipped: Sequence[tuple[Path, str]], summary: ConversionSummary) -> None:
    for path, reason in skipped[:MAX_FILES_NAMED]:
        _warn(f"skipped {path}: {reason}")
    if len(skipped) > MAX_FILES_NAMED:
        _warn(f"... and {len(skipped) - MAX_FILES_NAMED} more files skipped")
    if skipped:
        named = "; ".join(f"{path} ({reason})" for path, reason in skipped[:MAX_FILES_NAMED])
        more = f"; ... ({len(skipped) - MAX_FILES_NAMED} more)" if len(skipped) > MAX_FILES_NAMED else ""
        summary.note(f"{len(skipped)} file(s) skipped: {named}{more}")


def _report_ignored_files(ignored: Sequence[Path], summary: ConversionSummary) -> None:
    """One warning (and a summary note) for the files below the input folder that are not DICOM: they are ignored."""
    if ignored:
        named = ", ".join(str(path) for path in ignored[:MAX_FILES_NAMED])
        more = f", ... ({len(ignored) - MAX_FILES_NAMED} more)" if len(ignored) > MAX_FILES_NAMED else ""
        _warn(f"ignored {len(ignored)} file(s) that are not DICOM: {named}{more}")
        summary.note(f"{len(ignored)} non-DICOM file(s) ignored: {named}{more}")


def check_input_folder(root: Path) -> None:
    """Refuse an ``-i`` that is missing or a file, naming what to give instead."""
    if root.is_file():
        raise DatasetConversionError(f"input folder {root} is a file, not a folder: give the folder that holds the "
                                     f"DICOM files (e.g. {root.parent})")
    if not root.is_dir():
        raise DatasetConversionError(f"input folder {root} does not exist")


def convert_nact(input_folder: str | Path, dataset_id: int, raw_folder: str | Path | None = None,
                 overwrite: bool = False, num_post_phases: int = 2, test_patients: Iterable[str] = (),
                 unlabelled_visits: bool = False, name: str = DEFAULT_NAME) -> Path:
    """Convert a Breast-MRI-NACT-Pilot DICOM folder into ``nnUNet_raw/Dataset{id}_{name}``.

    Args:
        input_folder: any folder tree holding the collection's DICOM files (names are not interpreted).
        dataset_id: nnU-Net dataset id.
        raw_folder: nnU-Net raw folder; default ``$nnUNet_raw``.
        overwrite: replace an existing dataset with the same id.
        num_post_phases: post-contrast phases kept per exam (the first K); exams with fewer are skipped.
        test_patients: PatientIDs whose baseline exam goes to imagesTs/labelsTs/kineticsTs.
        unlabelled_visits: also write the later visits (MRI_2, ...) to unlabelledTr/ for DM pretraining.
        name: dataset name after the id.

    Returns:
        The dataset folder.

    Raises:
        DatasetConversionError: bad arguments, no DICOM, unknown test patient, existing dataset without
        ``overwrite``, or no exam written at all. Bad exams are skipped (or written without label), not raised.
    """
    if num_post_phases < 1:
        raise DatasetConversionError(f"--num-post-phases must be at least 1, got {num_post_phases}")
    root = Path(input_folder)
    check_input_folder(root)
    raw = nnunet_raw_folder(raw_folder)
    summary = ConversionSummary()
    records: dict[str, dict[str, Any]] = {}
    with RawDatasetWriter(raw, dataset_id, name, overwrite=overwrite) as writer:
        index = index_dicom_folder(root)
        _report_skipped_files(index.skipped_files, summary)
        _report_ignored_files(index.non_dicom_paths, summary)
        if not index.headers:
            raise DatasetConversionError(f"no DICOM image found in {root}")
        patients = group_exams(index.headers)
        test_set = set(test_patients)
        unknown = sorted(test_set - set(patients))
        if unknown:
            raise DatasetConversionError(
                f"--test-patients {' '.join(unknown)}: not found in {root} (PatientIDs there: "
                f"{', '.join(sorted(patients)[:10])}{', ...' if len(patients) > 10 else ''})"
            )
        later_visits = 0
        for patient_id, exams in tqdm(patients.items(), desc="converting exams", unit="patient"):
            split = "Ts" if patient_id in test_set else "Tr"
            for exam in exams:
                if exam.is_baseline or unlabelled_visits:
                    record = _convert_exam(writer, exam, split, num_post_phases, summary, root)
                    if record is not None:
                        records[case_id(exam)] = record
                else:
                    later_visits += 1
        if later_visits:
            summary.note(f"{later_visits} later visit(s) not converted (pass --unlabelled-visits to use them)")
        summary.written = {key: list(ids) for key, ids in writer.cases.items()}
        print(summary.table())
        return writer.finish(
            dkm=_dkm_block(records, writer),
            description=(
                "TCIA Breast-MRI-NACT-Pilot baseline DCE-MRI: pre-contrast phase as network input, "
                f"post-contrast phases 1..{num_post_phases} in kinetics folders, functional tumour volume label"
            ),
            reference=REFERENCE,
            license=LICENSE,
        )


def _convert_exam(
    writer: RawDatasetWriter, exam: Exam, split: str, num_post_phases: int, summary: ConversionSummary, root: Path
) -> dict[str, Any] | None:
    """Write one exam, or record in ``summary`` why it was skipped; returns the case's dataset.json record.

    An exam whose DCE cannot be read is skipped. A baseline exam whose label cannot be built keeps its
    images (:func:`_write_without_label`). File paths in the record are relative to the input folder ``root``.
    """
    case = case_id(exam)
    try:
        images = load_exam_images(exam, num_post_phases)
    except DatasetConversionError as error:
        summary.skip(case, str(error))
        return None
    record: dict[str, Any] = {
        "patient_id": exam.patient_id,
        "visit": exam.visit,
        "dce_series": [s.series_number for s in images.dce.series],
        "dce_found_by": images.dce.how_found,
        "acquisition_times_s": images.acquisition_times_s,
    }
    try:
        if not exam.is_baseline:
            return _write_later_visit(writer, case, images, split, summary, record)
        label, reason = build_label(exam, images)
        if label is None:
            return _write_without_label(writer, case, images, split, reason, summary, record)
        _check_official_count(case, label, summary)
        _report_placement(case, label, summary)
        writer.add_case(case, images.pre, images.post, label_image(label, images.pre), split=split)
    except DatasetConversionError as error:  # the writer's own checks (geometry, phase count)
        summary.skip(case, str(error))
        return None
    record.update(label_source=label.source, label_file=_relative(label.source_file, root), label_voxels=label.voxels,
                  official_ftv_voxels=label.official_voxels,
                  **(label.placement.record() if label.placement is not None else {}))
    return record


def build_label(exam: Exam, images: ExamImages) -> tuple[TumourLabel | None, str]:
    """The exam's non-empty tumour label on the pre-contrast grid, or None and the reason it has none.

    Every :class:`DatasetConversionError` of the label step (SEG on another frame of reference or mostly
    outside the image, unreadable SEG, empty tissue mask, ...) becomes the reason; nothing is raised.
    """
    try:
        inputs = find_label_inputs(exam, images.dce)
        frame_of_reference = images.dce.series[0].files[0].frame_of_reference_uid
        label = tumour_label(inputs, images.pre, frame_of_reference)
    except DatasetConversionError as error:
        return None, f"tumour label could not be built: {error}"
    if label is None:
        return None, (
            f"no tumour label (no {TUMOUR_SEG_DESCRIPTION!r} SEG, and no PE1 map with "
            f"'VOI Breast Tissue Segmentation' SEG to rebuild it from)"
        )
    if label.voxels == 0:
        return None, f"tumour label from {label.source_file} is empty"
    return label, ""


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _check_official_count(case: str, label: TumourLabel, summary: ConversionSummary) -> None:
    if label.source == SOURCE_TUMOUR_SEG:
        return
    official = "not stored" if label.official_voxels is None else str(label.official_voxels)
    _warn(
        f"{case}: no {TUMOUR_SEG_DESCRIPTION!r} SEG; tumour label rebuilt from the PE1 map and {label.source_file}: "
        f"{label.voxels} voxels (official FTV count: {official})"
    )
    comparison = f"official FTV count {official}"
    if label.official_voxels:
        deviation = (label.voxels - label.official_voxels) / label.official_voxels
        comparison += f", {100 * deviation:+.3f} %"
        if abs(deviation) > OFFICIAL_COUNT_TOLERANCE:
            comparison += " - MORE THAN 0.1 % OFF, check this case"
    summary.note(f"{case}: label rebuilt with the FTV rule: {label.voxels} voxels ({comparison})")


def _report_placement(case: str, label: TumourLabel, summary: ConversionSummary) -> None:
    """A summary note where the label's SEG was not exactly on the image grid (the SEG reader warned already)."""
    placement = label.placement
    if placement is None or (placement.mapping == MAPPING_SAME and placement.outside_fraction == 0):
        return
    note = f"{case}: label SEG {label.source_file} offset by {placement.describe()}; mapped as {placement.mapping!r}"
    if placement.outside_fraction > 0:
        note += f", {100 * placement.outside_fraction:.1f} % of its mask outside the image (dropped)"
    summary.note(note)


def _write_later_visit(writer: RawDatasetWriter, case: str, images: ExamImages, split: str, summary: ConversionSummary,
                       record: dict[str, Any]) -> dict[str, Any] | None:
    """A later visit goes to unlabelledTr/ for DM pretraining, except a test patient's (the test split stays unseen)."""
    if split == "Ts":
        summary.skip(case, "later visit of a test patient; not written to unlabelledTr/ (the test split stays unseen)")
        return None
    writer.add_unlabelled(case, images.pre, images.post)
    record["label_source"] = None
    return record


def _write_without_label(writer: RawDatasetWriter, case: str, images: ExamImages, split: str, reason: str,
                         summary: ConversionSummary, record: dict[str, Any]) -> dict[str, Any]:
    """A baseline exam without usable label is never lost.

    Training patients go to unlabelledTr/ (DM pretraining still uses the exam); test patients keep their
    pre-contrast image in imagesTs/ and post-contrast phases in kineticsTs/, without a label.
    """
    if split == "Ts":
        writer.add_test_images(case, images.pre, images.post)
        summary.note(
            f"{case}: {reason}; test patient: images written to imagesTs/ and kineticsTs/ without a label "
            "(it can be predicted, not scored)"
        )
    else:
        writer.add_unlabelled(case, images.pre, images.post)
        summary.note(f"{case}: {reason}; written to unlabelledTr/ for DM pretraining")
    record.update(label_source=None, label_missing_reason=reason)
    return record


def _dkm_block(records: dict[str, dict[str, Any]], writer: RawDatasetWriter) -> dict[str, Any]:
    """dataset.json's "dkm" block: label source(s), acquisition times and one record per written case."""
    written = {case for ids in writer.cases.values() for case in ids}
    records = {case: record for case, record in sorted(records.items()) if case in written}
    sources = sorted({r["label_source"] for r in records.values() if r.get("label_source")})
    times = [tuple(r["acquisition_times_s"]) if r["acquisition_times_s"] else None for r in records.values()]
    common_times = list(times[0]) if times and times[0] is not None and len(set(times)) == 1 else None
    return {
        "label_source": (sources[0] if len(sources) == 1 else "mixed (see cases)") if sources else None,
        "acquisition_times_s": common_times,
        "acquisition_times_note": "k-space-centre time of each phase relative to injection, UCSF tag (0117,1034)",
        "source_collection": "TCIA Breast-MRI-NACT-Pilot",
        "cases": records,
    }


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_convert_nact",
        description="Convert TCIA Breast-MRI-NACT-Pilot DICOM into nnU-Net raw format for DKM: pre-contrast "
        "phase in imagesTr, post-contrast phases in kineticsTr, functional tumour volume label in labelsTr, "
        "exams without label in unlabelledTr. Files are found by DICOM header, whatever the folder names.",
    )
    parser.add_argument("-i", "--input-folder", required=True, help="folder holding the collection's DICOM files")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id, e.g. 991")
    parser.add_argument("--raw-folder", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    parser.add_argument("--num-post-phases", type=int, default=2,
                        help="post-contrast phases kept per exam (first K); exams with fewer are skipped (default: 2, "
                             "the protocol's early and late phase)")
    parser.add_argument("--test-patients", nargs="+", default=[], metavar="ID",
                        help="PatientIDs whose baseline exam goes to imagesTs/labelsTs/kineticsTs")
    parser.add_argument("--unlabelled-visits", action="store_true",
                        help="also write later visits (MRI_2, ...) to unlabelledTr/ for DM pretraining")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name after the id (default: {DEFAULT_NAME})")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # for this command only: catch_warnings restores it
        path = convert_nact(args.input_folder, args.dataset_id, raw_folder=args.raw_folder, overwrite=args.overwrite,
                            num_post_phases=args.num_post_phases, test_patients=args.test_patients,
                            unlabelled_visits=args.unlabelled_visits, name=args.name)
    print(f"dataset written to {path}")
    if json.loads((path / "dataset.json").read_text())["numTraining"] == 0:
        print(f"note: {NO_TRAINING_CASE_NOTE}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of the command line as ``warning: <message>`` lines on stderr, without source locations."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
