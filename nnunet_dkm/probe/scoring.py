"""Training and scoring the probe's pixel classifiers: scikit-learn's logistic regression and MLP on standardised
features of the fit cases' sampled pixels, each row's threshold on the selection cases, and Dice / ROC-AUC / average
precision on the report cases.

A case is scored at its body pixels only: ``probabilities`` (P,) and ``labels`` (P,) bool at the body mask's pixels,
plus ``reference_voxels``, the label's voxel count over the whole image (tumour outside the body mask counts as
missed, so Dice never flatters a mask that clips the tumour).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from nnunet_dkm.probe.cases import PixelSample, ProbeCase, gather_features, slice_chunks, total_pixels
from nnunet_dkm.probe.features import FeatureFamily

CLASSIFIERS = ("logistic", "mlp")


@dataclass(frozen=True)
class ClassifierSettings:
    """Training of the pixel classifiers; both minimise the mean binary cross-entropy plus an L2 penalty on the
    weights, full-batch, for a fixed budget, so the same pixels and seed give the same classifier.

    Attributes:
        hidden: MLP hidden width (one ReLU layer).
        steps: MLP Adam steps (full-batch epochs).
        learning_rate: MLP Adam learning rate.
        weight_decay: MLP L2 penalty, ``weight_decay / 2 * ||W||^2`` per pixel (scikit-learn's ``alpha`` divided by
            the number of pixels).
        logistic_iterations: L-BFGS iterations of the logistic regression.
        logistic_l2: L2 penalty ``logistic_l2 * ||w||^2`` on the logistic regression's weights (not the bias).
    """

    hidden: int = 32
    steps: int = 300
    learning_rate: float = 0.01
    weight_decay: float = 1e-3
    logistic_iterations: int = 100
    logistic_l2: float = 1e-4

    def describe(self) -> str:
        """One sentence for reports."""
        return (f"scikit-learn logistic regression: L-BFGS, {self.logistic_iterations} iterations, L2 "
                f"{self.logistic_l2:g}; MLP (hidden {self.hidden}, ReLU): Adam, {self.steps} full-batch steps, "
                f"learning rate {self.learning_rate:g}, L2 {self.weight_decay:g}")


def fit_classifier(kind: str, features: np.ndarray, labels: np.ndarray, seed: int,
                   settings: ClassifierSettings = ClassifierSettings()) -> Pipeline:
    """``StandardScaler`` + ``kind`` fitted on (N, C) features and (N,) 0/1 labels; the result depends only on the
    data and ``seed``. ``predict_proba(x)[:, 1]`` gives tumour probabilities of (M, C) features."""
    if len(features) == 0 or len(np.unique(labels)) < 2:
        raise ValueError("the classifier needs pixels of both classes")
    count = len(features)
    if kind == "logistic":
        classifier = LogisticRegression(C=1.0 / (2.0 * settings.logistic_l2 * count),
                                        max_iter=settings.logistic_iterations)
    elif kind == "mlp":
        classifier = MLPClassifier((settings.hidden,), alpha=settings.weight_decay * count, batch_size=count,
                                   learning_rate_init=settings.learning_rate, max_iter=settings.steps, shuffle=False,
                                   tol=0.0, n_iter_no_change=settings.steps + 1, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {kind!r}; choose from {CLASSIFIERS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget, by design
        return make_pipeline(StandardScaler(), classifier).fit(features, np.asarray(labels, dtype=int))


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


def choose_threshold(curves: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> tuple[float, float]:
    """(threshold, mean Dice): from the cases' Dice curves (cases, T) (:func:`dice_curve` at ``thresholds``), the
    threshold with the highest mean Dice over the cases (the lowest such one on ties; 0.5 and NaN where no case has a
    Dice)."""
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


@dataclass(frozen=True)
class ProbeOptions:
    """How the probe runs.

    Attributes:
        num_labelled: fit cases (default: every labelled training case outside the selection (and report) set).
        num_selection: selection cases (default: a quarter of the training cases, at least 2).
        seed: seed of the split, the pixel sample, the untrained DM and the classifiers.
        pixels_per_class: cap on tumour (and as many non-tumour) body pixels per fit case.
        classifiers: which classifiers (``logistic``, ``mlp``).
        classifier_settings: their training.
        device: where the DMs run (classifiers always train on the CPU).
        batch_size: slices per DM forward.
        chunk_slices: slices whose features are held in memory at once.
        preview_cases: report cases whose probability maps (slice with most tumour) are kept for the figure.
        time_settings: measure each setting's forward time per slice.
        progress: show tqdm progress bars.
    """

    num_labelled: int | None = None
    num_selection: int | None = None
    seed: int = 0
    pixels_per_class: int = 1000
    classifiers: tuple[str, ...] = CLASSIFIERS
    classifier_settings: ClassifierSettings = ClassifierSettings()
    device: str = "cpu"
    batch_size: int = 16
    chunk_slices: int = 32
    preview_cases: int = 3
    time_settings: bool = True
    progress: bool = True


@dataclass
class Preview:
    """One report slice for the figure: the pre-contrast slice, label and body mask (y, x), the number of the case's
    body pixels before this slice (where its pixels start in the case's C-order body pixels), and per (row,
    classifier) the probability map (y, x) (0 outside the body)."""

    case_id: str
    z: int
    pre: np.ndarray
    seg: np.ndarray
    body: np.ndarray
    body_offset: int
    probabilities: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def fit_family(family: FeatureFamily, fit_cases: Sequence[ProbeCase], samples: Sequence[PixelSample],
               options: ProbeOptions) -> dict[tuple[str, str], Pipeline]:
    """Train every classifier of ``options`` on every row of ``family`` with the sampled pixels of ``fit_cases``."""
    matrices: dict[str, np.ndarray] = {}
    offset = 0
    for case, sample in zip(fit_cases, samples, strict=True):
        if len(sample.indices) == 0:
            continue
        for slices in slice_chunks(case.num_slices, options.chunk_slices):
            for label, features in family.extract(case, slices).items():
                if label not in matrices:
                    matrices[label] = np.empty((total_pixels(samples), features.shape[0]), np.float32)
                gather_features(features, sample, slices, matrices[label][offset:offset + len(sample.indices)])
        offset += len(sample.indices)
    labels = np.concatenate([sample.labels for sample in samples])
    return {(row.label, kind): fit_classifier(kind, matrices[row.label], labels, options.seed,
                                              options.classifier_settings)
            for row in family.rows for kind in options.classifiers}


def predict_family(family: FeatureFamily, classifiers: Mapping[tuple[str, str], Pipeline],
                   case: ProbeCase, chunk_slices: int) -> dict[tuple[str, str], BodyPixels]:
    """Every classifier's probabilities at ``case``'s body pixels (in the body mask's C order)."""
    parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in classifiers}
    for slices in slice_chunks(case.num_slices, chunk_slices):
        body = case.body[slices].ravel()
        for label, features in family.extract(case, slices).items():
            pixels = features.reshape(features.shape[0], -1)[:, body].T
            for (row, kind), classifier in classifiers.items():
                if row == label:
                    parts[(row, kind)].append(classifier.predict_proba(pixels)[:, 1].astype(np.float32))
    seg, body = case.masks()
    labels = seg[body]
    reference = int(seg.sum())
    return {key: BodyPixels(case.case_id, np.concatenate(values), labels, reference) for key, values in parts.items()}


def preview_slices(report: Sequence[ProbeCase], count: int) -> list[Preview]:
    """The slice with the most tumour of each of the first ``count`` report cases."""
    previews = []
    for case in report[:count]:
        seg, body = case.masks()
        z = int(np.argmax(seg.reshape(case.num_slices, -1).sum(axis=1)))
        previews.append(Preview(case.case_id, z, case.pre_slices(slice(z, z + 1))[0], seg[z].copy(), body[z].copy(),
                                int(body[:z].sum())))
    return previews


def store_preview(preview: Preview, key: tuple[str, str], pixels: BodyPixels) -> None:
    """Put the preview slice's probabilities (from the case's body pixels) into ``preview``; reads nothing."""
    plane = np.zeros(preview.body.shape, np.float32)
    plane[preview.body] = pixels.probabilities[preview.body_offset:preview.body_offset + int(preview.body.sum())]
    preview.probabilities[key] = plane


def evaluate_family(family: FeatureFamily, classifiers: Mapping[tuple[str, str], Pipeline],
                    selection: Sequence[ProbeCase], report: Sequence[ProbeCase], previews: Sequence[Preview],
                    options: ProbeOptions) -> tuple[list[dict], list[dict]]:
    """Thresholds on ``selection``, scores on ``report``: (per-case records, selection records)."""
    chosen = {}
    # a case's Dice curve, not its pixels, is kept: memory does not grow with the selection cases
    selection_curves: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in classifiers}
    for case in selection:
        for key, pixels in predict_family(family, classifiers, case, options.chunk_slices).items():
            selection_curves[key].append(dice_curve(pixels))
    selection_records = []
    for key, curves in selection_curves.items():
        chosen[key] = choose_threshold(np.stack(curves))
        selection_records.append({"row": key[0], "classifier": key[1], "threshold": chosen[key][0],
                                  "selection_dice": chosen[key][1]})
    rows = {row.label: row for row in family.rows}
    records = []
    previews_by_case = {preview.case_id: preview for preview in previews}
    for case in report:
        for key, pixels in predict_family(family, classifiers, case, options.chunk_slices).items():
            threshold, selection_dice = chosen[key]
            scores = case_scores(pixels, threshold)
            row = rows[key[0]]
            records.append({"row": row.label, "kind": row.kind, "model": row.model, "setting": row.setting,
                            "classifier": key[1], "case": case.case_id, "dice": scores.dice, "auc": scores.auc,
                            "average_precision": scores.average_precision, "threshold": threshold,
                            "selection_dice": selection_dice})
            if case.case_id in previews_by_case:
                store_preview(previews_by_case[case.case_id], key, pixels)
    return records, selection_records
