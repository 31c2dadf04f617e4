"""Did the DM learn kinetics? Its post-contrast estimates against the truth, and against simple baselines.

All images here are in nnU-Net's preprocessed space, z-scored with the pre-contrast statistics
(so ``post - pre`` is the enhancement in pre-contrast standard deviations).

Estimates of the first post-contrast phase from the pre-contrast image alone:
- ``pre``: the pre-contrast image itself (predicts no enhancement);
- ``linear``: a global linear intensity map ``post = a * pre + b`` fitted on training data;
- ``dm_one_step``: the DM's clean-image estimate from one forward at t*, input the noised
  pre-contrast image (exactly what feature extraction mode A feeds the DM);
- ``dm_ddim``: a DDIM sample of K steps from noise, conditioned on the pre-contrast image.

A ceiling: ``TumourMaskOracle`` is told the true tumour mask and fits the tumour's enhancement from what the
pre-contrast image shows there; no estimator from the pre-contrast image alone can be expected to beat it.

Metrics per region (tumour; rest of the breast): mean absolute error against the true phase,
and the Pearson correlation of predicted vs true enhancement ``estimate - pre`` over the
region's voxels pooled over cases (undefined for ``pre``, which predicts none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_dkm.diffusion.estimates import dm_ddim_estimate, dm_one_step_estimate

__all__ = ["RegionAccumulator", "TumourMaskOracle", "distance_to_margin", "dm_ddim_estimate", "dm_one_step_estimate",
           "fit_global_linear"]


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


def distance_to_margin(mask: np.ndarray) -> np.ndarray:
    """Per 2D slice, each mask voxel's distance (voxels) to the nearest voxel outside the mask; (N, H, W) or (H, W)."""
    from scipy import ndimage

    if mask.ndim == 2:
        return ndimage.distance_transform_edt(mask)
    return np.stack([ndimage.distance_transform_edt(slice_) for slice_ in mask])


@dataclass
class TumourMaskOracle:
    """A ceiling, not an estimate from the pre-contrast image alone: it is told where the tumour is.

    Inside the true tumour mask it predicts ``post = pre + e`` with ``e`` a least-squares fit on training tumours
    of what the pre-contrast slice shows there: the intensity (1, pre, pre^2) and the distance to the tumour margin
    (exp(-d/1.5), exp(-d/3), d, pre * exp(-d/3); the phantom's rim enhances most). Outside it, a given estimate is
    kept. Exam-level kinetics (dose, cardiac output, the tumour's own Ktrans) are not visible before contrast, so
    its enhancement correlation bounds what any pre-contrast-only estimator can reach on these data.
    """

    coefficients: np.ndarray

    @staticmethod
    def features(pre: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n_voxels_in_mask, 7) design matrix; pre and mask of the same shape, 2D or (N, H, W)."""
        values, depth = pre[mask], distance_to_margin(mask)[mask]
        rim = np.exp(-depth / 3.0)
        return np.stack([np.ones_like(values), values, values * values, np.exp(-depth / 1.5), rim, depth,
                         values * rim], axis=1)

    @classmethod
    def fit(cls, slices: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> TumourMaskOracle:
        """Fit on (pre, post, tumour mask) 2D slices (each (H, W)) that contain tumour."""
        design = np.concatenate([cls.features(pre, mask) for pre, _, mask in slices])
        enhancement = np.concatenate([(post - pre)[mask] for pre, post, mask in slices])
        coefficients, *_ = np.linalg.lstsq(design.astype(np.float64), enhancement.astype(np.float64), rcond=None)
        return cls(coefficients)

    def predict(self, pre: np.ndarray, mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
        """``outside`` with the tumour voxels replaced by ``pre + fitted enhancement``; (N, H, W) arrays."""
        estimate = outside.astype(np.float32, copy=True)
        estimate[mask] = pre[mask] + self.features(pre, mask) @ self.coefficients
        return estimate
