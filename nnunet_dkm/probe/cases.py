"""The probe's cases in nnU-Net's preprocessed space, and their split into fit, selection and report sets.

Labelled training cases come from the DM cache (``pretrain_dm.cache.build_cache``); test cases, which the cache never
holds, are brought into the same space in memory with the same functions. The split is drawn from the seed once, so
the fit sets of growing ``num_labelled`` are nested and the selection and report sets do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_dkm.evaluation.baselines import body_mask
from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.preprocessing import (
    DceExam,
    PlannedDataset,
    mask_to_preprocessed_space,
    preprocess_like_precontrast,
    read_exam,
)
from nnunet_dkm.probe.errors import ProbeError


@dataclass(frozen=True, eq=False)
class ProbeCase:
    """One labelled exam in preprocessed space (2d: slices along axis 0).

    Attributes:
        case_id: the case's id.
        images: (1 + K, z, y, x) float32: pre-contrast image, then K post-contrast phases (K = 0 where the exam has
            none), all z-scored with the pre-contrast statistics.
        seg: (z, y, x) bool tumour label.
        body: (z, y, x) bool Otsu body mask of the pre-contrast image (``evaluation.baselines.body_mask``).
    """

    case_id: str
    images: np.ndarray
    seg: np.ndarray
    body: np.ndarray

    @property
    def pre(self) -> np.ndarray:
        """(z, y, x) pre-contrast image."""
        return self.images[0]

    @property
    def num_post_phases(self) -> int:
        return self.images.shape[0] - 1

    @property
    def num_slices(self) -> int:
        return self.images.shape[1]


def probe_case(case_id: str, images: np.ndarray, seg: np.ndarray) -> ProbeCase:
    """A case from its (1 + K, z, y, x) images and (z, y, x) label; the body mask is computed here."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    seg = np.asarray(seg) > 0
    if seg.shape != images.shape[1:]:
        raise ProbeError(f"case {case_id}: label shape {seg.shape} differs from image shape {images.shape[1:]}")
    return ProbeCase(case_id, images, seg, body_mask(images[0]))


def load_raw_case(exam: DceExam, dataset: PlannedDataset) -> ProbeCase:
    """Read a labelled raw exam (e.g. of the test split) and bring it into preprocessed space in memory."""
    if exam.label_file is None:
        raise ProbeError(f"case {exam.case_id}: no label file next to {exam.pre_file}")
    plans_manager, configuration_manager = dataset.plans_manager, dataset.configuration_manager
    images, reader_properties = read_exam(exam, plans_manager)
    stack, _, properties = preprocess_like_precontrast(images, reader_properties["spacing"], plans_manager,
                                                       configuration_manager)
    label, _ = read_checked(exam.label_file, plans_manager.image_reader_writer_class().read_seg)
    if label.shape[1:] != images[0].shape[1:]:
        raise ProbeError(f"case {exam.case_id}: label {exam.label_file} has shape {label.shape[1:]}, the image "
                         f"{images[0].shape[1:]}")
    seg = mask_to_preprocessed_space(label, properties, plans_manager, configuration_manager, list(stack.shape[1:]))
    return probe_case(exam.case_id, stack, seg)


@dataclass(frozen=True)
class CaseSplit:
    """Case ids of the three sets. ``report_is_test`` says whether the report set is the test split (else it is
    held-out labelled training cases)."""

    fit: tuple[str, ...]
    selection: tuple[str, ...]
    report: tuple[str, ...]
    report_is_test: bool
    available_for_fit: int

    def describe(self) -> str:
        report = "test split" if self.report_is_test else "held-out labelled training cases (no test split)"
        return (f"fit {len(self.fit)} labelled training cases (of {self.available_for_fit} available), selection "
                f"{len(self.selection)} held-out training cases, report {len(self.report)} ({report})")


def default_num_selection(num_cases: int) -> int:
    """A quarter of the cases, at least 2, leaving at least one."""
    return min(max(2, num_cases // 4), num_cases - 1)


def split_cases(labelled: Sequence[str], test: Sequence[str], num_labelled: int | None = None,
                num_selection: int | None = None, seed: int = 0) -> CaseSplit:
    """Split labelled training cases into fit and selection sets (and a report set where there is no test split).

    One permutation of the sorted ids, drawn from ``seed``, is cut in order: report (only without a test split: a
    quarter, at least 1), selection (``num_selection``, default a quarter of the training cases, at least 2), then the
    first ``num_labelled`` of the rest (default: all of them) are the fit set.
    """
    labelled = sorted(labelled)
    if not labelled:
        raise ProbeError("the dataset has no labelled training case (labelsTr/): the probe fits its classifiers on "
                         "labelled training cases")
    order = [labelled[i] for i in np.random.default_rng(seed).permutation(len(labelled))]
    report: list[str] = sorted(test)
    if not report:
        report_count = max(1, len(labelled) // 4)
        report, order = order[:report_count], order[report_count:]
    selection_count = num_selection if num_selection is not None else default_num_selection(len(order))
    if len(order) < 2 or selection_count > len(order) - 1:
        held = "" if test else f" after {len(report)} held out for the report (no test split)"
        raise ProbeError(f"{len(order)} labelled training case(s){held}: the probe needs at least "
                         f"{max(selection_count, 1) + 1} (one or more to fit, {max(selection_count, 1)} to select "
                         f"thresholds)")
    selection, rest = order[:selection_count], order[selection_count:]
    count = len(rest) if num_labelled is None else num_labelled
    if count > len(rest):
        held = "" if test else f", {len(report)} for the report"
        raise ProbeError(f"--num-labelled {count}: only {len(rest)} labelled training case(s) are available to fit "
                         f"({len(labelled)} labelled, {len(selection)} held out for selection{held})")
    return CaseSplit(tuple(rest[:count]), tuple(selection), tuple(report), bool(test), len(rest))
