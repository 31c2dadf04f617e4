"""Training and scoring one feature family: classifiers on the fit cases' sampled pixels, thresholds on the selection
cases, Dice / ROC-AUC / AP on the report cases, and the probability maps of the preview slices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from nnunet_dkm.probe.cases import ProbeCase
from nnunet_dkm.probe.classifiers import PixelClassifier, fit_classifier
from nnunet_dkm.probe.features import FeatureFamily
from nnunet_dkm.probe.metrics import BodyPixels, case_scores, choose_threshold
from nnunet_dkm.probe.results import Preview, ProbeOptions
from nnunet_dkm.probe.sampling import PixelSample, gather_features, slice_chunks, total_pixels


def fit_family(family: FeatureFamily, fit_cases: Sequence[ProbeCase], samples: Sequence[PixelSample],
               options: ProbeOptions) -> dict[tuple[str, str], PixelClassifier]:
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


def predict_family(family: FeatureFamily, classifiers: Mapping[tuple[str, str], PixelClassifier],
                   case: ProbeCase, chunk_slices: int) -> dict[tuple[str, str], BodyPixels]:
    """Every classifier's probabilities at ``case``'s body pixels (in the body mask's C order)."""
    parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in classifiers}
    for slices in slice_chunks(case.num_slices, chunk_slices):
        body = case.body[slices].ravel()
        for label, features in family.extract(case, slices).items():
            pixels = features.reshape(features.shape[0], -1)[:, body].T
            for (row, kind), classifier in classifiers.items():
                if row == label:
                    parts[(row, kind)].append(classifier.predict(pixels))
    labels = case.seg[case.body]
    reference = int(case.seg.sum())
    return {key: BodyPixels(case.case_id, np.concatenate(values), labels, reference) for key, values in parts.items()}


def preview_slices(report: Sequence[ProbeCase], count: int) -> list[Preview]:
    """The slice with the most tumour of each of the first ``count`` report cases."""
    previews = []
    for case in report[:count]:
        z = int(np.argmax(case.seg.reshape(case.num_slices, -1).sum(axis=1)))
        previews.append(Preview(case.case_id, z, case.pre[z].copy(), case.seg[z].copy()))
    return previews


def store_preview(preview: Preview, case: ProbeCase, key: tuple[str, str], pixels: BodyPixels) -> None:
    """Put the preview slice's probabilities (from the case's body pixels) into ``preview``."""
    volume = np.zeros(case.seg.shape, np.float32)
    volume[case.body] = pixels.probabilities
    preview.probabilities[key] = volume[preview.z]


def evaluate_family(family: FeatureFamily, classifiers: Mapping[tuple[str, str], PixelClassifier],
                    selection: Sequence[ProbeCase], report: Sequence[ProbeCase], previews: Sequence[Preview],
                    options: ProbeOptions) -> tuple[list[dict], list[dict]]:
    """Thresholds on ``selection``, scores on ``report``: (per-case records, selection records)."""
    chosen = {}
    selection_pixels: dict[tuple[str, str], list[BodyPixels]] = {key: [] for key in classifiers}
    for case in selection:
        for key, pixels in predict_family(family, classifiers, case, options.chunk_slices).items():
            selection_pixels[key].append(pixels)
    selection_records = []
    for key, cases in selection_pixels.items():
        chosen[key] = choose_threshold(cases)
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
                store_preview(previews_by_case[case.case_id], case, key, pixels)
    return records, selection_records
