"""The tumour label rule of TCIA's Breast-MRI-NACT-Pilot (functional tumour volume, FTV).

A voxel is tumour when it lies in the tumour region, its early percent enhancement
``PE1 = 100 * (S1 - S0) / S0`` is at least 70 %, and at least 4 of its 26 neighbours pass the
same two tests. The label is therefore recoverable from the pre- and first post-contrast images.
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
    kernel = np.ones((3, 3, 3), dtype=np.int16)
    kernel[1, 1, 1] = 0
    return ndimage.convolve(mask.astype(np.int16), kernel, mode="constant", cval=0)


def ftv_label(
    pre: Array,
    early_post: Array,
    region: Array,
    threshold_percent: float = PE_THRESHOLD_PERCENT,
    min_neighbours: int = MIN_NEIGHBOURS,
) -> Array:
    """The FTV label (uint8, 0/1) of 3D arrays ``pre``, ``early_post`` and boolean ``region``.

    All three share one shape, e.g. (z, y, x).
    """
    candidate = np.asarray(region, dtype=bool) & (percent_enhancement(pre, early_post) >= threshold_percent)
    return (candidate & (neighbour_count(candidate) >= min_neighbours)).astype(np.uint8)
