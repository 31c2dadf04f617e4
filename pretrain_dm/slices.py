"""2D training patches for the DM: foreground-aware slice sampling from the cache, cropping and padding.

A patch is a (1 + K, H, W) stack: the pre-contrast slice and its K post-contrast phases, cut at the
same place. Slices are taken along axis 0 of the arrays an exam's ``load`` returns: nnU-Net's 2d slices, or for a 3D
configuration the slices across the exam's ``slice_axis`` (``CachedExam.along_axis``).
With probability ``foreground_fraction`` the slice and the crop centre come from the
tumour (labelled exams) or from the most enhancing voxels (unlabelled exams), so that the DM sees
the strong kinetics it must learn; otherwise slice and crop are uniform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_dkm.preprocessing import CachedExam

ENHANCING_SLICE_QUANTILE = 0.75  # unlabelled exams: slices at or above this quantile of slice enhancement


@dataclass
class PatchSampler:
    """Draws (1 + K, H, W) float32 patches from cached exams in nnU-Net's preprocessed space.

    Args:
        exams: cached exams to draw from.
        patch_size: (H, W) of the patches; smaller slices are zero-padded (nnU-Net pads with 0 too).
        foreground_fraction: probability that a patch is centred on tumour / strong enhancement.
        rng: the generator every draw uses.
        opened: memory-mapped arrays by case id, shared between samplers to avoid reopening files.
    """

    exams: Sequence[CachedExam]
    patch_size: tuple[int, int]
    foreground_fraction: float
    rng: np.random.Generator
    opened: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.exams:
            raise ValueError("no exam to sample DM training patches from")

    def _load(self, exam: CachedExam) -> tuple[np.ndarray, np.ndarray | None]:
        if exam.case_id not in self.opened:
            self.opened[exam.case_id] = exam.load(mmap=True)
        return self.opened[exam.case_id]

    def _foreground_slices(self, exam: CachedExam) -> Sequence[int]:
        if exam.tumour_slices:
            return exam.tumour_slices
        enhancement = np.asarray(exam.slice_enhancement)
        return np.flatnonzero(enhancement >= np.quantile(enhancement, ENHANCING_SLICE_QUANTILE)).tolist()

    def _foreground_voxels(self, images: np.ndarray, seg: np.ndarray | None, index: int) -> np.ndarray:
        """(N, 2) candidate crop centres on slice ``index``: tumour voxels, else the most enhancing 1 %."""
        if seg is not None and seg[index].any():
            return np.argwhere(seg[index] > 0)
        enhancement = np.asarray(images[1, index]) - np.asarray(images[0, index])
        return np.argwhere(enhancement >= np.quantile(enhancement, 0.99))

    def sample(self, with_label: bool = False) -> np.ndarray:
        """One patch, (1 + K, H, W) float32; with ``with_label`` a last channel holds the tumour label (0 where the
        exam has none)."""
        exam = self.exams[self.rng.integers(len(self.exams))]
        images, seg = self._load(exam)
        depth, height, width = images.shape[1:]
        foreground = self.rng.random() < self.foreground_fraction
        if foreground:
            candidates = self._foreground_slices(exam)
            index = int(candidates[self.rng.integers(len(candidates))])
            voxels = self._foreground_voxels(images, seg, index)
            centre = voxels[self.rng.integers(len(voxels))]
        else:
            index = int(self.rng.integers(depth))
            centre = np.array([self.rng.integers(height), self.rng.integers(width)])
        stack = np.asarray(images[:, index], dtype=np.float32)
        if with_label:
            label = seg[index] if seg is not None else np.zeros(stack.shape[1:])
            stack = np.concatenate([stack, np.asarray(label, dtype=np.float32)[None]])
        return crop_around(stack, centre, self.patch_size, self.rng)

    def sample_batch(self, batch_size: int, with_label: bool = False) -> np.ndarray:
        """(B, 1 + K, H, W) float32, or (B, 2 + K, H, W) with the label last."""
        return np.stack([self.sample(with_label) for _ in range(batch_size)])


def crop_around(
    slice_stack: np.ndarray, centre: np.ndarray, patch_size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Cut a (C, H, W) patch of ``patch_size`` from (C, h, w) containing ``centre``, zero-padding where needed.

    Where the slice is larger than the patch the centre lands at a random position inside the patch
    (so foreground is not always in the middle); where it is smaller the slice is placed at random.
    """
    channels, height, width = slice_stack.shape
    out = np.zeros((channels, *patch_size), dtype=np.float32)
    starts = []
    for size, patch, position in zip((height, width), patch_size, centre, strict=True):
        if size >= patch:
            low = max(0, int(position) - patch + 1)
            high = min(size - patch, int(position))
            starts.append(int(rng.integers(low, high + 1)))
        else:
            starts.append(-int(rng.integers(0, patch - size + 1)))
    source = tuple(slice(max(s, 0), max(s, 0) + min(p, n)) for s, p, n in zip(starts, patch_size, (height, width),
                                                                               strict=True))
    target = tuple(slice(max(-s, 0), max(-s, 0) + min(p, n)) for s, p, n in zip(starts, patch_size, (height, width),
                                                                                strict=True))
    out[(slice(None), *target)] = slice_stack[(slice(None), *source)]
    return out


def split_exams(exams: tuple[CachedExam, ...], fraction: float, seed: int) -> tuple[list[CachedExam], list[CachedExam]]:
    """(training exams, validation exams): a seeded, per-exam hold-out, preferring labelled exams for validation
    (they have tumour slices for the sample figure). With a single exam both are that exam."""
    if len(exams) < 2:
        return list(exams), list(exams)
    rng = np.random.default_rng([seed, 7])
    labelled = [e for e in exams if e.tumour_slices]
    pool = labelled if len(labelled) >= 2 else list(exams)
    count = max(1, int(round(fraction * len(exams))))
    count = min(count, len(pool) - 1) if pool is labelled else min(count, len(exams) - 1)
    chosen = {pool[i].case_id for i in rng.choice(len(pool), size=count, replace=False)}
    return [e for e in exams if e.case_id not in chosen], [e for e in exams if e.case_id in chosen]
