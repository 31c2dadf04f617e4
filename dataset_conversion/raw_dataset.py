"""Writing DKM datasets in nnU-Net v2 raw format, atomically.

Every converter (synthetic phantom, TCIA Breast-MRI-NACT-Pilot, MAMA-MIA) writes through
:class:`RawDatasetWriter`, which owns the layout (README, "The raw dataset layout")::

    nnUNet_raw/DatasetXXX_Name/
        imagesTr/{case}_0000.nii.gz         pre-contrast image (the network input)
        labelsTr/{case}.nii.gz              tumour label (0 background, 1 tumour)
        kineticsTr/{case}_{phase:04d}.nii.gz post-contrast phases (phase 1 = first post-contrast)
        imagesTs/ labelsTs/ kineticsTs/     the same for the test split (a test exam whose label could not be
                                            built has no labelsTs file: it can be predicted, not scored)
        unlabelledTr/{case}_{phase:04d}.nii.gz whole DCE exams without label (0000 = pre-contrast)
        dataset.json                        nnU-Net's fields plus a "dkm" block

The dataset is built in a hidden temporary folder next to its destination and renamed into
place only when complete, so a failed conversion leaves nothing behind; the folder of a killed
run (``kill -9``, a cluster time limit) is removed, with a message, when the next conversion into
the same raw folder starts (``nnunet_dkm.atomic``). Finished datasets get the user's normal
permissions (umask), not the private mode of temporary folders. An
existing dataset with the same ID is replaced only with ``overwrite=True``. A dataset is written
as soon as anything could be, so that no exam is lost; one without labelled training case (only
unlabelled exams or test images) gets a summary note saying that nnU-Net planning and training, and
hence DM pretraining in nnU-Net's planned space, need at least one labelled training case.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from nnunet_dkm.atomic import make_temporary_folder, publish, remove_stale_temporaries, report_removed
from nnunet_dkm.command_line import check_writable_folder
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.image_integrity import write_checked_image

FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "tumour": 1}
SPLITS = ("Tr", "Ts")
TEST_WITHOUT_LABEL = "Ts_without_label"  # key in the writer's and summary's case lists
NO_TRAINING_CASE_NOTE = (
    "no labelled training case: nnU-Net planning and training need at least one labelled training case "
    "(imagesTr/ + labelsTr/), and so does DM pretraining, which works in nnU-Net's planned space. The exams "
    "written (unlabelledTr/, imagesTs/) are kept so that nothing is lost: add labelled exams (or fix the label "
    "problems noted above) and convert again"
)


class DatasetConversionError(NnunetDkmError):
    """Bad input for a converter: the message names the file or case and what is wrong."""


def nnunet_raw_folder(explicit: str | os.PathLike | None = None) -> Path:
    """Return the nnU-Net raw folder: ``explicit`` if given, else ``$nnUNet_raw``.

    Raises :class:`DatasetConversionError` with the line to export when neither is set.
    """
    value = explicit if explicit is not None else os.environ.get("nnUNet_raw")
    if not value:
        raise DatasetConversionError(
            "nnUNet_raw is not set. Tell nnU-Net where raw datasets live, e.g.\n"
            "    export nnUNet_raw=/path/to/nnUNet_raw\n"
            "or pass --raw-folder."
        )
    return Path(value)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, e.g. ``Dataset990_DKMPhantom``."""
    if not 1 <= int(dataset_id) <= 999:
        raise DatasetConversionError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise DatasetConversionError(f"dataset name {name!r} may only hold letters, digits, '-' and '_'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def existing_datasets_with_id(raw_folder: Path, dataset_id: int) -> list[Path]:
    """Folders in ``raw_folder`` that nnU-Net would resolve for ``dataset_id``."""
    if not raw_folder.is_dir():
        return []
    prefix = f"Dataset{int(dataset_id):03d}_"
    return sorted(p for p in raw_folder.iterdir() if p.is_dir() and p.name.startswith(prefix))


def check_same_geometry(reference: sitk.Image, other: sitk.Image, what: str, tolerance: float = 1e-3) -> None:
    """Raise :class:`DatasetConversionError` naming ``what`` if ``other`` is not on ``reference``'s grid.

    Sizes must match exactly; spacing, origin and direction within ``tolerance`` (relative to
    the spacing for the origin).
    """
    if reference.GetDimension() != other.GetDimension():
        raise DatasetConversionError(
            f"{what}: {other.GetDimension()}D image, expected {reference.GetDimension()}D like the pre-contrast image"
        )
    if reference.GetSize() != other.GetSize():
        raise DatasetConversionError(
            f"{what}: size {other.GetSize()} differs from the pre-contrast image's {reference.GetSize()}"
        )
    ref_spacing = np.asarray(reference.GetSpacing())
    if not np.allclose(ref_spacing, other.GetSpacing(), rtol=tolerance, atol=0):
        raise DatasetConversionError(
            f"{what}: spacing {tuple(np.round(other.GetSpacing(), 4))} differs from the pre-contrast image's "
            f"{tuple(np.round(ref_spacing, 4))}"
        )
    if not np.allclose(reference.GetOrigin(), other.GetOrigin(), atol=tolerance * float(ref_spacing.min()) * 100):
        raise DatasetConversionError(
            f"{what}: origin {tuple(np.round(other.GetOrigin(), 3))} differs from the pre-contrast image's "
            f"{tuple(np.round(reference.GetOrigin(), 3))}"
        )
    if not np.allclose(reference.GetDirection(), other.GetDirection(), atol=tolerance):
        raise DatasetConversionError(f"{what}: orientation (direction cosines) differs from the pre-contrast image's")


def describe_merged_label_values(values: np.ndarray) -> str:
    """The values of a label array other than 0 and 1 with their voxel counts, e.g. ``2 (1234 voxels), 3 (5
    voxels)``; empty when the label holds only 0 and 1. For the summary of a converter that binarises labels."""
    unique, counts = np.unique(np.asarray(values), return_counts=True)
    return ", ".join(f"{value:g} ({count} voxel{'s' if count != 1 else ''})"
                     for value, count in zip(unique.tolist(), counts.tolist(), strict=True) if value not in (0, 1))


@dataclass
class ConversionSummary:
    """What a converter did: cases written per split, cases skipped with their reason, and notes
    (things done on purpose that the user should know about, e.g. an exam sent to ``unlabelledTr/``)."""

    written: dict[str, list[str]] = field(
        default_factory=lambda: {"Tr": [], "Ts": [], TEST_WITHOUT_LABEL: [], "unlabelled": []}
    )
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, case: str, reason: str) -> None:
        self.skipped.append((case, reason))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def table(self) -> str:
        """A plain-text summary table for the end of a conversion."""
        lines = [
            "summary",
            f"  training cases written   : {len(self.written['Tr'])}",
            f"  test cases written       : {len(self.written['Ts'])}",
            f"  unlabelled exams written : {len(self.written['unlabelled'])}",
            f"  skipped                  : {len(self.skipped)}",
        ]
        without_label = self.written.get(TEST_WITHOUT_LABEL, [])
        if without_label:
            lines.insert(3, f"  test images without label: {len(without_label)}")
        if self.skipped:
            width = max(len(case) for case, _ in self.skipped)
            lines.append("  skipped cases:")
            lines += [f"    {case:<{width}}  {reason}" for case, reason in self.skipped]
        only_unlabelled = not self.written["Tr"] and any(self.written.values())
        notes = [*self.notes, NO_TRAINING_CASE_NOTE] if only_unlabelled else self.notes
        if notes:
            lines.append("  notes:")
            lines += [f"    - {note}" for note in notes]
        return "\n".join(lines)


class RawDatasetWriter:
    """Build one nnU-Net raw dataset in a temporary folder, then move it into place.

    Use as a context manager; :meth:`finish` writes ``dataset.json`` and renames the folder.
    Leaving the ``with`` block without :meth:`finish` (e.g. on an exception) deletes
    everything written so far::

        with RawDatasetWriter(raw, 990, "DKMPhantom", overwrite=False) as writer:
            writer.add_case("phantom_000", pre, post_phases, label)
            writer.finish(description=..., dkm={...})
    """

    def __init__(self, raw_folder: str | os.PathLike, dataset_id: int, name: str, overwrite: bool = False):
        self.raw_folder = Path(raw_folder)
        self.dataset_id = int(dataset_id)
        self.final_path = self.raw_folder / dataset_folder_name(dataset_id, name)
        self.overwrite = overwrite
        self.existing = existing_datasets_with_id(self.raw_folder, self.dataset_id)
        if self.existing and not overwrite:
            names = ", ".join(str(p) for p in self.existing)
            raise DatasetConversionError(
                f"dataset {self.dataset_id} already exists ({names}); pass --overwrite to replace it "
                f"or choose another id with -d"
            )
        check_writable_folder(self.raw_folder, "nnU-Net raw folder (--raw-folder or $nnUNet_raw)")
        self.raw_folder.mkdir(parents=True, exist_ok=True)
        report_removed(remove_stale_temporaries(self.raw_folder), "dataset")
        self.tmp_path = make_temporary_folder(self.raw_folder, self.final_path.name)
        self.cases: dict[str, list[str]] = {"Tr": [], "Ts": [], TEST_WITHOUT_LABEL: [], "unlabelled": []}
        self.num_post_phases: int | None = None
        self.finished = False

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> RawDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            self.abort()

    def abort(self) -> None:
        """Delete the temporary folder; the destination is left as it was."""
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    # -- writing -----------------------------------------------------------------------
    def _write(self, image: sitk.Image, relative: str) -> None:
        path = self.tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_checked_image(image, path, shown_as=self.final_path / relative)

    def _check_case_id(self, case_id: str) -> None:
        if not case_id or any(c in case_id for c in "/\\ ") or case_id.startswith("."):
            raise DatasetConversionError(f"invalid case id {case_id!r}: no spaces or slashes allowed")
        for ids in self.cases.values():
            if case_id in ids:
                raise DatasetConversionError(f"case id {case_id!r} is used twice")

    def _check_phases(self, case_id: str, pre: sitk.Image, post: Sequence[sitk.Image]) -> None:
        if len(post) == 0:
            raise DatasetConversionError(f"case {case_id}: no post-contrast phase (DKM needs at least one)")
        for index, phase in enumerate(post, start=1):
            check_same_geometry(pre, phase, f"case {case_id}, post-contrast phase {index}")

    def add_case(
        self,
        case_id: str,
        pre: sitk.Image,
        post: Sequence[sitk.Image],
        label: sitk.Image,
        split: str = "Tr",
    ) -> None:
        """Write one labelled exam.

        Args:
            case_id: unique case identifier, used in every file name.
            pre: pre-contrast image, any 3D geometry; written unchanged as ``images{split}/{case}_0000``.
            post: post-contrast phases on ``pre``'s grid, in acquisition order (phase 1 first).
            label: tumour label on ``pre``'s grid, values {0, 1}; must hold at least one tumour voxel.
            split: ``"Tr"`` (training) or ``"Ts"`` (test).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self._check_case_id(case_id)
        self._check_phases(case_id, pre, post)
        check_same_geometry(pre, label, f"case {case_id}, label")
        label_array = sitk.GetArrayViewFromImage(label)
        values = np.unique(label_array)
        if not set(values.tolist()) <= {0, 1}:
            raise DatasetConversionError(f"case {case_id}: label holds values {values.tolist()}, expected only 0 and 1")
        if not (label_array > 0).any():
            raise DatasetConversionError(f"case {case_id}: label is empty (no tumour voxel)")
        label = sitk.Cast(label, sitk.sitkUInt8)
        label.CopyInformation(pre)
        self._write_exam(case_id, pre, post, f"images{split}", f"kinetics{split}")
        self._write(label, f"labels{split}/{case_id}{FILE_ENDING}")
        self.cases[split].append(case_id)

    def add_unlabelled(self, case_id: str, pre: sitk.Image, post: Sequence[sitk.Image]) -> None:
        """Write one DCE exam without tumour label to ``unlabelledTr/`` (used only for DM pretraining)."""
        self._check_case_id(case_id)
        self._check_phases(case_id, pre, post)
        self._write_exam(case_id, pre, post, "unlabelledTr", "unlabelledTr")
        self.cases["unlabelled"].append(case_id)

    def add_test_images(self, case_id: str, pre: sitk.Image, post: Sequence[sitk.Image]) -> None:
        """Write one test exam without tumour label: ``imagesTs/{case}_0000`` and ``kineticsTs/``, no ``labelsTs/``.

        For a test patient whose label could not be built: the exam stays in the test split (it can be
        predicted, not scored) instead of being lost or leaking into training. nnU-Net never reads imagesTs.
        """
        self._check_case_id(case_id)
        self._check_phases(case_id, pre, post)
        self._write_exam(case_id, pre, post, "imagesTs", "kineticsTs")
        self.cases[TEST_WITHOUT_LABEL].append(case_id)

    def _write_exam(self, case_id: str, pre: sitk.Image, post: Sequence[sitk.Image], pre_folder: str,
                    post_folder: str) -> None:
        """``{pre_folder}/{case}_0000`` and ``{post_folder}/{case}_{k:04d}``, the phases on ``pre``'s exact grid."""
        self._set_num_post(case_id, len(post))
        self._write(pre, f"{pre_folder}/{case_id}_0000{FILE_ENDING}")
        for index, phase in enumerate(post, start=1):
            phase = sitk.Image(phase)
            phase.CopyInformation(pre)  # identical within tolerance; make it exact for nnU-Net
            self._write(phase, f"{post_folder}/{case_id}_{index:04d}{FILE_ENDING}")

    def _set_num_post(self, case_id: str, count: int) -> None:
        if self.num_post_phases is None:
            self.num_post_phases = count
        elif count != self.num_post_phases:
            raise DatasetConversionError(
                f"case {case_id}: {count} post-contrast phases, but earlier cases have {self.num_post_phases}; "
                f"a dataset needs the same number of phases in every exam"
            )

    # -- finishing ---------------------------------------------------------------------
    def finish(self, dkm: dict[str, Any], description: str = "", reference: str = "", license: str = "",
               release: str = "") -> Path:
        """Write ``dataset.json`` (nnU-Net fields + ``"dkm"`` block) and rename the dataset into place.

        ``dkm`` should hold at least ``label_source``; phase names, acquisition times and counts
        are filled in here. Returns the final dataset folder. A dataset without labelled training case is
        written too (the converters' summary says that nnU-Net cannot plan or train on it).

        Raises:
            DatasetConversionError: nothing at all was written (no training, test or unlabelled exam).
        """
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        if not any(self.cases.values()):
            raise DatasetConversionError(
                "no training case could be written, and no test or unlabelled exam either; nothing to save "
                "(see skipped cases)"
            )
        num_post = self.num_post_phases or 0
        block = {
            "phases": ["pre-contrast"] + [f"post-contrast {i}" for i in range(1, num_post + 1)],
            "acquisition_times_s": None,
            "label_source": "unknown",
            "kinetics_folder": "kineticsTr",
            "unlabelled_folder": "unlabelledTr",
            "num_post_contrast_phases": num_post,
            "num_training": len(self.cases["Tr"]),
            "num_test": len(self.cases["Ts"]),
            "num_test_without_label": len(self.cases[TEST_WITHOUT_LABEL]),
            "num_unlabelled": len(self.cases["unlabelled"]),
        }
        block.update(dkm)
        generate_dataset_json(str(self.tmp_path), channel_names={0: "pre-contrast"}, labels=LABELS,
                              num_training_cases=len(self.cases["Tr"]), file_ending=FILE_ENDING,
                              dataset_name=self.final_path.name, description=description, reference=reference,
                              license=license, release=release, converted_by="nnunet-dkm", dkm=block)
        # move old datasets aside first, so a failed rename never leaves the user with neither
        trash = [existing.with_name(f".old_{existing.name}_{os.getpid()}") for existing in self.existing]
        for existing, aside in zip(self.existing, trash, strict=True):
            os.replace(existing, aside)
        publish(self.tmp_path, self.final_path)
        for aside in trash:
            shutil.rmtree(aside, ignore_errors=True)
        self.finished = True
        return self.final_path
