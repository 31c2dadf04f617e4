"""Per-case segmentation metrics: Dice and Jaccard (nnU-Net's own counting) and HD95 in mm (MONAI).

All masks are boolean arrays of one 3D shape (z, y, x), with the voxel spacing given in the same (z, y, x) order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one predicted mask against its reference.

    ``hd95_mm`` is the 95th-percentile symmetric Hausdorff distance in mm. Where the prediction is empty (and the
    reference is not) it is the diagonal of the image in mm, the largest distance the grid allows, so that a
    missed tumour counts as the worst boundary error instead of dropping out of the mean; ``empty_prediction``
    flags those cases.
    """

    dice: float
    jaccard: float
    hd95_mm: float
    reference_voxels: int
    predicted_voxels: int
    empty_prediction: bool

    def as_dict(self) -> dict:
        return asdict(self)


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of a grid of ``shape`` voxels with ``spacing`` (same axis order)."""
    return float(np.linalg.norm(np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)))


def hd95_mm(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two non-empty boolean masks of one shape."""
    pred, ref = (torch.from_numpy(np.asarray(m, dtype=np.float32))[None, None] for m in (prediction, reference))
    distance = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                          spacing=[float(s) for s in spacing])
    return float(distance.reshape(-1)[0])


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> CaseMetrics:
    """Dice, Jaccard and HD95 of boolean ``prediction`` against boolean ``reference`` (same 3D shape).

    Dice and Jaccard are NaN when both masks are empty (nnU-Net's convention); HD95 is 0 then.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    tp, fp, fn, _ = compute_tp_fp_fn_tn(reference, prediction)
    union = tp + fp + fn
    dice = float(2 * tp / (2 * tp + fp + fn)) if union else float("nan")
    jaccard = float(tp / union) if union else float("nan")
    n_ref, n_pred = int(reference.sum()), int(prediction.sum())
    if n_ref == 0 and n_pred == 0:
        distance = 0.0
    elif n_ref == 0 or n_pred == 0:
        distance = image_diagonal_mm(reference.shape, spacing)
    else:
        distance = hd95_mm(reference, prediction, spacing)
    return CaseMetrics(dice, jaccard, distance, n_ref, n_pred, n_pred == 0 and n_ref > 0)
