"""The tumour label rule of TCIA's Breast-MRI-NACT-Pilot: the functional tumour volume (FTV).

A voxel is tumour when it lies in the region examined, its early percent enhancement
``PE1 = 100 * (S1 - S0) / S0`` is at least 70 %, and at least 4 of its 26 neighbours enhance that much too
(neighbours counted inside a counting region, by default the region examined). The one definition used by the
NACT converter (which rebuilds missing labels inside the radiologist's VOI box), the phantom (which defines its
labels this way inside the tumour) and the benchmark's post-contrast ceiling (the rule over the whole body). The
label is therefore recoverable from the pre- and first post-contrast images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Array = np.ndarray

PE_THRESHOLD_PERCENT = 70.0
MIN_NEIGHBOURS = 4


def percent_enhancement(pre: Array, post: Array) -> Array:
    """``100 * (post - pre) / pre`` as float64 of the inputs' shape; 0 where ``pre <= 0``."""
    pre = np.asarray(pre, dtype=np.float64)
    post = np.asarray(post, dtype=np.float64)
    result = np.zeros(pre.shape)
    np.divide(100.0 * (post - pre), pre, out=result, where=pre > 0)
    return result


def neighbour_count(mask: Array) -> Array:
    """Number of the 26 neighbours of each voxel that are in ``mask`` (3D boolean), int array."""
    kernel = np.ones((3, 3, 3), dtype=np.int32)
    kernel[1, 1, 1] = 0
    return ndimage.convolve(np.asarray(mask, dtype=np.int32), kernel, mode="constant", cval=0)


def ftv_mask(pe_early: Array, region: Array, counting_region: Array | None = None,
             threshold_percent: float = PE_THRESHOLD_PERCENT, min_neighbours: int = MIN_NEIGHBOURS) -> Array:
    """The FTV rule on an early percent-enhancement map.

    Args:
        pe_early: early percent enhancement, 3D (e.g. (z, y, x)).
        region: boolean mask of the voxels examined (same shape).
        counting_region: boolean mask of the voxels whose enhancement counts as a neighbour's; None: ``region``.
        threshold_percent: a voxel enhances when ``pe_early >= threshold_percent``.
        min_neighbours: how many of its 26 neighbours must enhance.

    Returns:
        Boolean mask: ``region & enhancing & (enhancing neighbours in counting_region >= min_neighbours)``.
    """
    region = np.asarray(region, dtype=bool)
    enhancing = np.asarray(pe_early) >= threshold_percent
    counted = enhancing & (region if counting_region is None else np.asarray(counting_region, dtype=bool))
    return region & enhancing & (neighbour_count(counted) >= min_neighbours)


def ftv_label(pre: Array, early_post: Array, region: Array, threshold_percent: float = PE_THRESHOLD_PERCENT,
              min_neighbours: int = MIN_NEIGHBOURS) -> Array:
    """The FTV label (uint8, 0/1) of 3D arrays ``pre``, ``early_post`` and boolean ``region`` (one shape)."""
    pe_early = percent_enhancement(pre, early_post)
    return ftv_mask(pe_early, region, None, threshold_percent, min_neighbours).astype(np.uint8)
