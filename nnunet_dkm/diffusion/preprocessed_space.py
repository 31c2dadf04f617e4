"""Bring DCE exams into nnU-Net's preprocessed space of one configuration.

The diffusion module (DM) must see at segmentation time exactly what it saw in pretraining, so
it is trained in nnU-Net's preprocessed space: same transpose, same crop to the nonzero region,
same normalisation, same resampling as ``nnUNetv2_plan_and_preprocess`` applies to the
pre-contrast image. Post-contrast phases go through the identical pipeline, with one change:
they are z-scored with the **pre-contrast image's** mean and standard deviation, so that
``post - pre`` is the enhancement in units of the pre-contrast image's spread.

The pre-contrast channel is produced by nnU-Net's own preprocessor (``run_case``); the
post-contrast phases by :func:`preprocess_like_precontrast`, whose equality with nnU-Net's
result on the pre-contrast image itself is checked by the tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from dataset_conversion.raw_dataset import existing_datasets_with_id

SUPPORTED_NORMALIZATION = ("ZScoreNormalization", "NoNormalization")
FILE_ENDING_KEY = "file_ending"


class PreprocessedSpaceError(Exception):
    """The dataset, plans or configuration cannot be used for DM pretraining; the message says what to run."""


@dataclass(frozen=True)
class DceExam:
    """One DCE exam on disk: the pre-contrast image, its post-contrast phases and (if any) its label.

    ``source`` is ``"labelled"`` (imagesTr/kineticsTr/labelsTr) or ``"unlabelled"`` (unlabelledTr).
    """

    case_id: str
    pre_file: Path
    post_files: tuple[Path, ...]
    label_file: Path | None
    source: str


@dataclass(frozen=True)
class NormalizationStats:
    """The affine nnU-Net applied to the pre-contrast image: ``(x - mean) / std`` (inside ``mask`` if masked)."""

    mean: float
    std: float
    use_mask: bool


def find_dataset_folder(root_env: str, dataset_id: int) -> Path:
    """``$root_env/DatasetXXX_*`` for ``dataset_id``, read from the environment at call time."""
    root = os.environ.get(root_env)
    if not root:
        raise PreprocessedSpaceError(f"{root_env} is not set: export {root_env}=/path/to/{root_env}")
    matches = existing_datasets_with_id(Path(root), dataset_id)
    if not matches:
        raise PreprocessedSpaceError(f"no dataset with id {dataset_id} in {root_env}={root}")
    if len(matches) > 1:
        raise PreprocessedSpaceError(f"several datasets with id {dataset_id} in {root}: {[m.name for m in matches]}")
    return matches[0]


def load_plans(
    dataset_id: int, configuration: str, plans_identifier: str = "nnUNetPlans"
) -> tuple[PlansManager, ConfigurationManager, dict, Path]:
    """Plans, configuration and dataset.json of a planned dataset, plus its preprocessed folder.

    Raises :class:`PreprocessedSpaceError` naming the command to run when planning is missing.
    """
    preprocessed = find_dataset_folder("nnUNet_preprocessed", dataset_id)
    plans_file = preprocessed / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise PreprocessedSpaceError(
            f"{plans_file} not found: run `nnUNetv2_plan_and_preprocess -d {dataset_id} -c {configuration}` first"
        )
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise PreprocessedSpaceError(
            f"configuration {configuration!r} is not in {plans_file.name} "
            f"(has {plans_manager.available_configurations})"
        )
    configuration_manager = plans_manager.get_configuration(configuration)
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    for scheme in configuration_manager.normalization_schemes:
        if scheme not in SUPPORTED_NORMALIZATION:
            raise PreprocessedSpaceError(
                f"normalization {scheme} of configuration {configuration} is not supported for DCE-MRI "
                f"(supported: {SUPPORTED_NORMALIZATION})"
            )
    return plans_manager, configuration_manager, dataset_json, preprocessed


def find_pretraining_exams(raw_dataset: Path) -> list[DceExam]:
    """Every exam with post-contrast phases that DM pretraining may use: labelled training cases and
    ``unlabelledTr/``; never the test split.

    Raises :class:`PreprocessedSpaceError` when the dataset has no post-contrast phase at all.
    """
    meta = json.loads((raw_dataset / "dataset.json").read_text())
    ending = meta.get(FILE_ENDING_KEY, ".nii.gz")
    num_post = int(meta.get("dkm", {}).get("num_post_contrast_phases", 0))
    if num_post < 1 or not (raw_dataset / "kineticsTr").is_dir():
        raise PreprocessedSpaceError(
            f"{raw_dataset} has no post-contrast phases (no kineticsTr/ or no 'dkm' block in dataset.json): "
            "the DM learns pre- to post-contrast and needs them. Create the dataset with nnUNetv2_dkm_synthesize, "
            "nnUNetv2_dkm_convert_nact or nnUNetv2_dkm_convert_mamamia."
        )
    exams = []
    for pre in sorted((raw_dataset / "imagesTr").glob(f"*_0000{ending}")):
        case = pre.name[: -len(f"_0000{ending}")]
        posts = tuple(raw_dataset / "kineticsTr" / f"{case}_{k:04d}{ending}" for k in range(1, num_post + 1))
        label = raw_dataset / "labelsTr" / f"{case}{ending}"
        exams.append(DceExam(case, pre, posts, label if label.is_file() else None, "labelled"))
    unlabelled = raw_dataset / "unlabelledTr"
    if unlabelled.is_dir():
        for pre in sorted(unlabelled.glob(f"*_0000{ending}")):
            case = pre.name[: -len(f"_0000{ending}")]
            posts = tuple(unlabelled / f"{case}_{k:04d}{ending}" for k in range(1, num_post + 1))
            exams.append(DceExam(case, pre, posts, None, "unlabelled"))
    for exam in exams:
        for post in exam.post_files:
            if not post.is_file():
                raise PreprocessedSpaceError(f"case {exam.case_id}: post-contrast phase file {post} is missing")
    return exams


def precontrast_normalization(
    cropped_pre: np.ndarray, nonzero_seg: np.ndarray, configuration_manager: ConfigurationManager
) -> NormalizationStats:
    """The statistics nnU-Net's normalisation uses on the cropped pre-contrast image.

    Args:
        cropped_pre: (1, z, y, x) pre-contrast image after transpose and crop.
        nonzero_seg: (1, z, y, x) nnU-Net's crop mask, -1 outside the nonzero region.
    """
    scheme = configuration_manager.normalization_schemes[0]
    if scheme == "NoNormalization":
        return NormalizationStats(0.0, 1.0, False)
    use_mask = bool(configuration_manager.use_mask_for_norm[0])
    values = cropped_pre[0][nonzero_seg[0] >= 0] if use_mask else cropped_pre[0]
    values = values.astype(np.float32, copy=False)
    return NormalizationStats(float(values.mean()), float(max(values.std(), 1e-8)), use_mask)


def preprocess_like_precontrast(
    images: list[np.ndarray],
    spacing: list[float],
    plans_manager: PlansManager,
    configuration_manager: ConfigurationManager,
) -> tuple[np.ndarray, NormalizationStats, dict]:
    """Run pre-contrast image and post-contrast phases through nnU-Net's preprocessing of the pre-contrast image.

    Args:
        images: [pre, post_1, ..., post_K], each (1, z, y, x) as nnU-Net's reader returns them.
        spacing: the images' spacing in the reader's axis order.

    Returns:
        stack: (1 + K, z', y', x') float32 in preprocessed space, all channels z-scored with the
            pre-contrast statistics (channel 0 equals nnU-Net's own preprocessed pre-contrast image).
        stats: the pre-contrast normalisation statistics.
        properties: nnU-Net's properties of the pre-contrast image (crop box, shapes, spacing).
    """
    transpose = [0, *[i + 1 for i in plans_manager.transpose_forward]]
    stack = np.concatenate([np.asarray(image, dtype=np.float32) for image in images]).transpose(transpose)
    original_spacing = [spacing[i] for i in plans_manager.transpose_forward]
    shape_before_cropping = list(stack.shape[1:])
    _, nonzero_seg, bbox = crop_to_nonzero(stack[:1].copy())
    stack = stack[(slice(None), *bounding_box_to_slice(bbox))]
    stats = precontrast_normalization(stack[:1], nonzero_seg, configuration_manager)
    if stats.use_mask:
        inside = nonzero_seg[0] >= 0
        stack[:, inside] = (stack[:, inside] - stats.mean) / stats.std
        stack[1:, ~inside] = 0  # outside its nonzero region the pre-contrast image is zero and stays so
    else:
        stack = (stack - stats.mean) / stats.std
    target_spacing = list(configuration_manager.spacing)
    if len(target_spacing) < len(original_spacing):
        target_spacing = [original_spacing[0], *target_spacing]  # 2d: slice spacing kept
    new_shape = compute_new_shape(stack.shape[1:], original_spacing, target_spacing)
    stack = configuration_manager.resampling_fn_data(stack, new_shape, original_spacing, target_spacing)
    properties = {
        "spacing": list(spacing),
        "spacing_transposed": list(original_spacing),
        "target_spacing": list(target_spacing),
        "shape_before_cropping": shape_before_cropping,
        "bbox_used_for_cropping": bbox,
        "shape_after_cropping_and_before_resampling": list(nonzero_seg.shape[1:]),
        "shape_after_resampling": list(stack.shape[1:]),
    }
    return stack.astype(np.float32, copy=False), stats, properties


def read_exam(exam: DceExam, plans_manager: PlansManager) -> tuple[list[np.ndarray], dict]:
    """Read an exam's images with the plans' reader: ([pre, post_1, ...] each (1, z, y, x), properties)."""
    reader = plans_manager.image_reader_writer_class()
    images = []
    properties: dict = {}
    for index, file in enumerate((exam.pre_file, *exam.post_files)):
        data, file_properties = reader.read_images([str(file)])
        if index == 0:
            properties = file_properties
        elif data.shape != images[0].shape:
            raise PreprocessedSpaceError(
                f"case {exam.case_id}: {file.name} has shape {data.shape[1:]}, the pre-contrast image "
                f"{images[0].shape[1:]}"
            )
        images.append(data)
    return images, properties


def mask_to_preprocessed_space(
    label: np.ndarray, properties: dict, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
    target_shape: list[int],
) -> np.ndarray:
    """A mask (1, z, y, x) in reader order -> (z', y', x') int8 in preprocessed space (nnU-Net's seg resampling).

    ``properties`` are those returned by ``preprocess_like_precontrast`` for the same exam.
    """
    transpose = [0, *[i + 1 for i in plans_manager.transpose_forward]]
    label = label.transpose(transpose)[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))]
    resampled = configuration_manager.resampling_fn_seg(label, target_shape, properties["spacing_transposed"],
                                                        properties["target_spacing"])
    return (resampled[0] > 0).astype(np.int8)


def preprocessed_to_original_space(
    stack: np.ndarray, stats: NormalizationStats, properties: dict, plans_manager: PlansManager,
    configuration_manager: ConfigurationManager,
) -> np.ndarray:
    """Undo ``preprocess_like_precontrast`` for images: (C, z', y', x') normalised -> (C, z, y, x) intensities on the
    input's grid, in the reader's axis order (nnU-Net's export order: resample, uncrop, transpose back).

    Intensities are mapped back with the pre-contrast statistics (``x * std + mean``); outside the crop box the
    result is 0, as nnU-Net's crop assumes.
    """
    images = stack.astype(np.float32) * stats.std + stats.mean
    cropped_shape = properties["shape_after_cropping_and_before_resampling"]
    images = configuration_manager.resampling_fn_data(images, cropped_shape, properties["target_spacing"],
                                                      properties["spacing_transposed"])
    full = np.zeros((images.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    full[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))] = images
    return full.transpose([0, *[i + 1 for i in plans_manager.transpose_backward]])
