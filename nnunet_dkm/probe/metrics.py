"""Scores of a probability map: Dice of the thresholded map inside the body, ROC-AUC and average precision over the
body pixels (scikit-learn), and the choice of the threshold on the selection cases.

A case is given by its body pixels only: ``probabilities`` (P,) and ``labels`` (P,) bool at the body mask's pixels,
plus ``reference_voxels``, the label's voxel count over the whole image (tumour outside the body mask counts as
missed, so Dice never flatters a mask that clips the tumour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.02), 2)


@dataclass(frozen=True)
class BodyPixels:
    """One case's probabilities (P,) and labels (P,) at its body pixels, and its label's voxel count."""

    case_id: str
    probabilities: np.ndarray
    labels: np.ndarray
    reference_voxels: int


@dataclass(frozen=True)
class CaseScores:
    """Dice at the chosen threshold, ROC-AUC and average precision (NaN where a case lacks one of the classes)."""

    dice: float
    auc: float
    average_precision: float


def dice_curve(case: BodyPixels, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Dice of ``probabilities >= t`` (inside the body) for every threshold t: (T,); NaN where both masks are empty."""
    order = np.argsort(case.probabilities, kind="stable")
    sorted_probabilities = case.probabilities[order]
    positives_before = np.concatenate([[0], np.cumsum(case.labels[order], dtype=np.int64)])
    below = np.searchsorted(sorted_probabilities, thresholds, side="left")
    predicted = len(sorted_probabilities) - below
    true_positives = positives_before[-1] - positives_before[below]
    denominator = predicted + case.reference_voxels
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * true_positives / denominator, np.nan)


def choose_threshold(cases: Sequence[BodyPixels], thresholds: np.ndarray = THRESHOLDS) -> tuple[float, float]:
    """(threshold, mean Dice): the threshold with the highest mean Dice over ``cases`` (the lowest such one on ties;
    0.5 and NaN where no case has a Dice)."""
    curves = np.stack([dice_curve(case, thresholds) for case in cases])
    if np.all(np.isnan(curves)):
        return 0.5, math.nan
    with np.errstate(invalid="ignore"):
        means = np.nanmean(np.where(np.isnan(curves).all(axis=0), -1.0, curves), axis=0)
    best = int(np.argmax(means))
    return float(thresholds[best]), float(means[best])


def case_scores(case: BodyPixels, threshold: float) -> CaseScores:
    """Dice of ``probabilities >= threshold`` inside the body, ROC-AUC and average precision over the body pixels."""
    dice = float(dice_curve(case, np.asarray([threshold]))[0])
    labels = np.asarray(case.labels, dtype=bool)
    if labels.all() or not labels.any():
        return CaseScores(dice, math.nan, math.nan)
    return CaseScores(dice, float(roc_auc_score(labels, case.probabilities)),
                      float(average_precision_score(labels, case.probabilities)))
