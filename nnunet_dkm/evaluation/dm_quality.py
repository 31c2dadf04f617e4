"""Did the DM learn kinetics? Its post-contrast estimates against the truth, and against simple baselines.

All images here are in nnU-Net's preprocessed space, z-scored with the pre-contrast statistics
(so ``post - pre`` is the enhancement in pre-contrast standard deviations).

Estimates of the first post-contrast phase from the pre-contrast image alone:
- ``pre``: the pre-contrast image itself (predicts no enhancement);
- ``linear``: a global linear intensity map ``post = a * pre + b`` fitted on training data;
- ``dm_one_step``: the DM's clean-image estimate from one forward at t*, input the noised
  pre-contrast image (exactly what feature extraction mode A feeds the DM);
- ``dm_ddim``: a DDIM sample of K steps from noise, conditioned on the pre-contrast image.

Metrics per region (tumour; rest of the breast): mean absolute error against the true phase,
and the Pearson correlation of predicted vs true enhancement ``estimate - pre`` over the
region's voxels pooled over cases (undefined for ``pre``, which predicts none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_dkm.diffusion.estimates import dm_ddim_estimate, dm_one_step_estimate

__all__ = ["RegionAccumulator", "dm_ddim_estimate", "dm_one_step_estimate", "fit_global_linear"]


def fit_global_linear(pre: np.ndarray, post: np.ndarray) -> tuple[float, float]:
    """Least-squares ``post = a * pre + b`` over all given voxels; returns (a, b)."""
    a, b = np.polyfit(pre.ravel().astype(np.float64), post.ravel().astype(np.float64), 1)
    return float(a), float(b)


@dataclass
class RegionAccumulator:
    """Pools voxels of one region over cases for one estimate: absolute errors and enhancement pairs."""

    absolute_errors: list[np.ndarray]
    predicted_enhancement: list[np.ndarray]
    true_enhancement: list[np.ndarray]

    @classmethod
    def empty(cls) -> RegionAccumulator:
        return cls([], [], [])

    def add(self, estimate: np.ndarray, pre: np.ndarray, true_post: np.ndarray, mask: np.ndarray) -> None:
        """Add the voxels of ``mask`` (all arrays the same shape)."""
        self.absolute_errors.append(np.abs(estimate[mask] - true_post[mask]))
        self.predicted_enhancement.append(estimate[mask] - pre[mask])
        self.true_enhancement.append(true_post[mask] - pre[mask])

    def mae(self) -> float:
        return float(np.concatenate(self.absolute_errors).mean())

    def enhancement_correlation(self) -> float:
        """Pearson correlation of predicted vs true enhancement; NaN where the prediction is constant."""
        predicted = np.concatenate(self.predicted_enhancement)
        true = np.concatenate(self.true_enhancement)
        if predicted.std() < 1e-8 or true.std() < 1e-8:
            return float("nan")
        return float(np.corrcoef(predicted, true)[0, 1])
