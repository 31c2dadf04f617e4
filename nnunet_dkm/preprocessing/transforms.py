"""DCE images in nnU-Net's preprocessed space of one configuration, and back.

The diffusion module (DM) must see at segmentation time exactly what it saw in pretraining, so it works in
nnU-Net's preprocessed space: the steps of nnU-Net's ``DefaultPreprocessor.run_case`` (transpose, crop to the
nonzero region, normalisation, resampling), carried out here with nnU-Net's own functions (``crop_to_nonzero``,
``compute_new_shape`` and the configuration's resampling function) on the pre-contrast image and its
post-contrast phases together. One change: every phase is z-scored with the **pre-contrast image's** mean and
standard deviation, so that ``post - pre`` is the enhancement in units of the pre-contrast image's spread. The tests
check that channel 0 equals the array ``nnUNetv2_plan_and_preprocess`` writes for the pre-contrast image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager


@dataclass(frozen=True)
class NormalizationStats:
    """The affine nnU-Net applied to the pre-contrast image: ``(x - mean) / std`` (inside ``mask`` if masked)."""

    mean: float
    std: float
    use_mask: bool


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
