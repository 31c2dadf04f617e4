"""The DCE exams of a raw DKM dataset: pre-contrast image, post-contrast phases and (where labelled) the tumour label.

Layout (``dataset_conversion/raw_dataset.py`` writes it): ``images{Tr,Ts}/{case}_0000``, ``kinetics{Tr,Ts}/
{case}_{phase:04d}``, ``labels{Tr,Ts}/{case}`` and ``unlabelledTr/{case}_{phase:04d}`` (0000 = pre-contrast).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.preprocessing.planned_dataset import PreprocessedSpaceError

PRE_CONTRAST_SUFFIX = "_0000"


@dataclass(frozen=True)
class DceExam:
    """One DCE exam on disk: the pre-contrast image, its post-contrast phases and (if any) its label.

    ``source`` is ``"labelled"`` (imagesTr/kineticsTr/labelsTr), ``"unlabelled"`` (unlabelledTr) or ``"test"``
    (imagesTs/kineticsTs/labelsTs).
    """

    case_id: str
    pre_file: Path
    post_files: tuple[Path, ...]
    label_file: Path | None
    source: str


def dataset_json_of(raw_dataset: Path) -> dict:
    return json.loads((raw_dataset / "dataset.json").read_text())


def num_post_contrast_phases(raw_dataset: Path) -> int:
    """Post-contrast phases per exam recorded in ``dataset.json``'s ``dkm`` block (0 where there is none)."""
    return int(dataset_json_of(raw_dataset).get("dkm", {}).get("num_post_contrast_phases", 0))


def _exams_in(images: Path, kinetics: Path, labels: Path | None, ending: str, num_post: int,
              source: str) -> list[DceExam]:
    exams = []
    for pre in sorted(images.glob(f"*{PRE_CONTRAST_SUFFIX}{ending}")):
        case = pre.name[: -len(f"{PRE_CONTRAST_SUFFIX}{ending}")]
        posts = tuple(kinetics / f"{case}_{k:04d}{ending}" for k in range(1, num_post + 1))
        label = labels / f"{case}{ending}" if labels is not None else None
        exams.append(DceExam(case, pre, posts, label if label is not None and label.is_file() else None, source))
    return exams


def _check_phases_exist(exams: list[DceExam]) -> None:
    for exam in exams:
        for post in exam.post_files:
            if not post.is_file():
                raise PreprocessedSpaceError(f"case {exam.case_id}: post-contrast phase file {post} is missing")


def find_pretraining_exams(raw_dataset: Path) -> list[DceExam]:
    """Every exam with post-contrast phases that DM pretraining may use: labelled training cases and
    ``unlabelledTr/``; never the test split.

    Raises :class:`PreprocessedSpaceError` when the dataset has no post-contrast phase at all.
    """
    ending = dataset_json_of(raw_dataset).get("file_ending", ".nii.gz")
    num_post = num_post_contrast_phases(raw_dataset)
    if num_post < 1 or not (raw_dataset / "kineticsTr").is_dir():
        raise PreprocessedSpaceError(
            f"{raw_dataset} has no post-contrast phases (no kineticsTr/ or no 'dkm' block in dataset.json): "
            "the DM learns pre- to post-contrast and needs them. Create the dataset with nnUNetv2_dkm_synthesize, "
            "nnUNetv2_dkm_convert_nact or nnUNetv2_dkm_convert_mamamia."
        )
    exams = _exams_in(raw_dataset / "imagesTr", raw_dataset / "kineticsTr", raw_dataset / "labelsTr", ending,
                      num_post, "labelled")
    unlabelled = raw_dataset / "unlabelledTr"
    if unlabelled.is_dir():
        exams += _exams_in(unlabelled, unlabelled, None, ending, num_post, "unlabelled")
    _check_phases_exist(exams)
    return exams


def find_test_exams(raw_dataset: Path) -> list[DceExam]:
    """The labelled exams of the test split (``imagesTs`` with ``labelsTs``); their post-contrast phases where
    ``kineticsTs`` has them (else ``post_files`` is empty)."""
    ending = dataset_json_of(raw_dataset).get("file_ending", ".nii.gz")
    num_post = num_post_contrast_phases(raw_dataset)
    exams = _exams_in(raw_dataset / "imagesTs", raw_dataset / "kineticsTs", raw_dataset / "labelsTs", ending,
                      num_post, "test")
    return [exam if all(p.is_file() for p in exam.post_files) else DceExam(exam.case_id, exam.pre_file, (),
                                                                            exam.label_file, exam.source)
            for exam in exams if exam.label_file is not None]


def read_exam(exam: DceExam, plans_manager: PlansManager) -> tuple[list[np.ndarray], dict]:
    """Read an exam's images with the plans' reader: ([pre, post_1, ...] each (1, z, y, x), properties).

    Every file is checked to be complete, with finite voxels (``nnunet_dkm.image_integrity``): a damaged file raises
    ``DamagedImageError`` naming it.
    """
    reader = plans_manager.image_reader_writer_class()
    images = []
    properties: dict = {}
    for index, file in enumerate((exam.pre_file, *exam.post_files)):
        data, file_properties = read_checked(file, lambda name: reader.read_images([name]))
        if index == 0:
            properties = file_properties
        elif data.shape != images[0].shape:
            raise PreprocessedSpaceError(
                f"case {exam.case_id}: {file.name} has shape {data.shape[1:]}, the pre-contrast image "
                f"{images[0].shape[1:]}"
            )
        images.append(data)
    return images, properties
