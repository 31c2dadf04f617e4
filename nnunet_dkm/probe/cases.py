"""The probe's cases in nnU-Net's preprocessed space, their split into fit, selection and report sets, the balanced
pixels the classifiers train on, and where the probe reads its DM and writes its results.

Labelled training cases come from the DM cache (``nnunet_dkm.preprocessing.build_cache``); test cases, which the
cache never holds, are brought into the same space with the same functions and stored the cache's way in a
temporary folder. A case's images and its two (z, y, x) masks (label and body) stay on disk and are read a chunk of
slices, or one case, at a time, so the probe's memory does not grow with its number of cases beyond the classifiers'
sampled pixels (kept masks cost 2 bytes per voxel per case: 126 GB for MAMA-MIA's 1,506 exams; memory measured in
``benchmarks/results_scale.md``). The split is drawn from the
seed once, so the fit sets of growing ``num_labelled`` are nested and the selection and report sets do not depend on
it. Each fit case gives the same number of tumour and non-tumour body pixels, ``min(cap, tumour, non-tumour)`` of
each, drawn without replacement from a generator seeded with (seed, case index), so every row's classifier is trained
on exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_dkm.evaluation.baselines import body_mask
from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.paths import nnunet_folder
from nnunet_dkm.preprocessing import (
    DceExam,
    PlannedDataset,
    build_cache,
    find_test_exams,
    mask_to_preprocessed_space,
    preprocess_like_precontrast,
    read_exam,
)
from nnunet_dkm.preprocessing.cache_storage import CachedArray, write_images, write_seg
from nnunet_dkm.probe.settings import ProbeError


@dataclass(frozen=True, eq=False)
class ProbeCase:
    """One labelled exam in preprocessed space (2d: slices along axis 0).

    Attributes:
        case_id: the case's id.
        images: (1 + K, z, y, x): pre-contrast image, then K post-contrast phases (K = 0 where the exam has
            none), all z-scored with the pre-contrast statistics; float32 in memory, or a :class:`CachedArray` on
            disk whose reads return float32.
        seg: (z, y, x) bool tumour label, in memory or a :class:`CachedArray` on disk.
        body: (z, y, x) bool Otsu body mask of the pre-contrast image (``evaluation.baselines.body_mask``), in memory
            or on disk.
    """

    case_id: str
    images: np.ndarray | CachedArray
    seg: np.ndarray | CachedArray
    body: np.ndarray | CachedArray

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(seg, body), each (z, y, x) bool, read into memory (for one case at a time)."""
        return np.asarray(self.seg, dtype=bool), np.asarray(self.body, dtype=bool)

    def pre_slices(self, slices: slice) -> np.ndarray:
        """(n, y, x) pre-contrast image of the slices ``slices`` (reading only those)."""
        return np.asarray(self.images[0, slices], dtype=np.float32)

    @property
    def num_post_phases(self) -> int:
        return self.images.shape[0] - 1

    @property
    def num_slices(self) -> int:
        return self.images.shape[1]


def stored_mask(path: Path, mask: np.ndarray) -> CachedArray:
    """Store a (z, y, x) bool mask the way the DM cache stores labels; read back lazily as bool."""
    write_seg(path, mask)
    return CachedArray(path, bool, slice_axis=0)


def probe_case(case_id: str, images: np.ndarray | CachedArray, seg: np.ndarray | CachedArray,
               store: Path | None = None) -> ProbeCase:
    """A case from its (1 + K, z, y, x) images (in memory or on disk) and (z, y, x) label; the body mask is
    computed here. With ``store`` (a folder), the label (as ``seg > 0``) and body masks are stored there and read
    from there."""
    if not isinstance(images, CachedArray):
        images = np.ascontiguousarray(images, dtype=np.float32)
    seg = np.asarray(seg) > 0
    if seg.shape != tuple(images.shape[1:]):
        raise ProbeError(f"case {case_id}: label shape {seg.shape} differs from image shape {images.shape[1:]}")
    body = body_mask(np.asarray(images[0], dtype=np.float32))
    if store is None:
        return ProbeCase(case_id, images, seg, body)
    return ProbeCase(case_id, images, stored_mask(store / f"{case_id}_label.b2nd", seg),
                     stored_mask(store / f"{case_id}_body.b2nd", body))


def load_raw_case(exam: DceExam, dataset: PlannedDataset, store: Path | None = None) -> ProbeCase:
    """Read a labelled raw exam (e.g. of the test split) and bring it into preprocessed space; its images stay in
    memory, or with ``store`` (a folder) are stored there as the DM cache stores an exam and read from there."""
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
    if store is None:
        return probe_case(exam.case_id, stack, seg)
    path = store / f"{exam.case_id}.b2nd"
    write_images(path, stack)
    return probe_case(exam.case_id, CachedArray(path, np.float32, slice_axis=1), seg, store)


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


def load_split_cases(dataset: PlannedDataset, split: CaseSplit, progress: bool, store: Path) -> dict[str, ProbeCase]:
    """The fit, selection and report cases in preprocessed space, on disk: training cases' images in the DM cache,
    test cases preprocessed and stored in ``store`` (a folder that must outlive the cases), every case's masks in
    ``store``."""

    cache = {exam.case_id: exam for exam in build_cache(dataset, progress=progress).exams}
    cases = {}
    training = [*split.fit, *split.selection, *([] if split.report_is_test else split.report)]
    for case_id in tqdm(training, desc="loading training cases", unit="case", disable=not progress, leave=False):
        exam = cache.get(case_id)
        if exam is None or exam.seg_file is None:
            raise ProbeError(f"case {case_id}: not in the DM cache {dataset.dkm_folder / 'cache'} with its label; "
                             "delete that folder to rebuild it")
        cases[case_id] = probe_case(case_id, *exam.load(mmap=True), store)
    if split.report_is_test:
        exams = {exam.case_id: exam for exam in find_test_exams(dataset.raw_folder)}
        for case_id in tqdm(split.report, desc="loading test cases", unit="case", disable=not progress, leave=False):
            cases[case_id] = load_raw_case(exams[case_id], dataset, store)
    return cases


@dataclass(frozen=True)
class PixelSample:
    """The sampled pixels of one case: flat indices into its (z, y, x) grid (sorted) and their labels (0/1)."""

    case_id: str
    indices: np.ndarray
    labels: np.ndarray

    def in_slices(self, slices: slice, slice_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into a chunk's flattened (n, y, x) grid, positions in this sample) for the chunk ``slices``."""
        start, stop = slices.start * slice_size, slices.stop * slice_size
        first, last = np.searchsorted(self.indices, [start, stop])
        return self.indices[first:last] - start, np.arange(first, last)


def balanced_sample(case: ProbeCase, cap: int, seed: int, case_index: int) -> PixelSample:
    """Up to ``cap`` tumour and as many non-tumour pixels of ``case``'s body mask.

    Tumour pixels are label pixels inside the body; a case without any gives an empty sample.
    """
    rng = np.random.default_rng([seed, case_index])
    seg, body = (mask.ravel() for mask in case.masks())
    tumour = np.flatnonzero(body & seg)
    background = np.flatnonzero(body & ~seg)
    count = min(cap, len(tumour), len(background))
    chosen_tumour = rng.choice(tumour, size=count, replace=False)
    chosen_background = rng.choice(background, size=count, replace=False)
    indices = np.concatenate([chosen_tumour, chosen_background])
    labels = np.concatenate([np.ones(count, np.float32), np.zeros(count, np.float32)])
    order = np.argsort(indices, kind="stable")
    return PixelSample(case.case_id, indices[order], labels[order])


def slice_chunks(num_slices: int, chunk: int) -> Iterator[slice]:
    """Consecutive slice ranges of at most ``chunk`` slices covering ``range(num_slices)``."""
    for start in range(0, num_slices, chunk):
        yield slice(start, min(start + chunk, num_slices))


def gather_features(features: np.ndarray, sample: PixelSample, slices: slice,
                    out: np.ndarray) -> None:
    """Copy the sampled pixels of a chunk's features (C, n, y, x) into ``out`` (len(sample), C) at their rows."""
    slice_size = features.shape[2] * features.shape[3]
    local, positions = sample.in_slices(slices, slice_size)
    out[positions] = features.reshape(features.shape[0], -1)[:, local].T


def total_pixels(samples: Sequence[PixelSample]) -> int:
    return int(sum(len(sample.indices) for sample in samples))


def probe_checkpoint(dataset: PlannedDataset, checkpoint_file: Path | None) -> Path:
    """``--checkpoint`` where given, else the dataset's DM (``$nnUNet_dkm_checkpoint`` or its dkm folder); it must
    exist, else :class:`ProbeError` names the file and the pretraining command."""
    if checkpoint_file is not None:
        if not checkpoint_file.is_file():
            raise ProbeError(f"--checkpoint {checkpoint_file}: no such file. To probe the dataset's own DM, leave "
                             f"--checkpoint out, or pretrain one with: {dataset.pretrain_command()}")
        return checkpoint_file
    return dataset.existing_dm_checkpoint(ProbeError).path


def probe_output_folder(dataset: PlannedDataset) -> Path:
    """``$nnUNet_results/DatasetXXX_Name/dkm_probe__<plans>__<configuration>/``."""
    return nnunet_folder("nnUNet_results") / dataset.name / f"dkm_probe__{dataset.plans_identifier}__" \
                                                            f"{dataset.configuration}"
