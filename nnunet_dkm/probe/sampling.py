"""Balanced pixel sampling inside the body: the probe's training pixels.

Each fit case gives the same number of tumour and non-tumour body pixels, ``min(cap, tumour, non-tumour)`` of each,
drawn without replacement from a generator seeded with (seed, case index), so every row's classifier is trained on
exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_dkm.probe.cases import ProbeCase


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
    body = case.body.ravel()
    seg = case.seg.ravel()
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
