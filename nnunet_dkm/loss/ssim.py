"""Global SSIM between a predicted probability map and the ground truth (Lv et al. 2023, Eq. 7).

    SSIM(S, G) = (2 mu_S mu_G + C1)(2 sigma_SG + C2) / ((mu_S^2 + mu_G^2 + C1)(sigma_S^2 + sigma_G^2 + C2))

with means, (population) variances and covariance taken over the whole image (not a sliding
window), C1 = (0.01 L)^2, C2 = (0.03 L)^2 and L = 1, the range of probabilities.
"""

from __future__ import annotations

import torch

DATA_RANGE = 1.0
K1, K2 = 0.01, 0.03


def global_ssim(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                data_range: float = DATA_RANGE) -> torch.Tensor:
    """Global SSIM per sample and channel.

    Args:
        prediction: (B, C, *spatial) values in [0, data_range], e.g. foreground probabilities.
        target: (B, C, *spatial) same shape, e.g. one-hot ground truth.
        mask: optional (B, 1, *spatial) bool; only voxels where it is True count (ignore label).

    Returns:
        (B, C) SSIM values in [-1, 1]; 1 where prediction equals target. Finite (with finite gradients) also for
        constant maps, thanks to C1 and C2.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    spatial = tuple(range(2, prediction.ndim))
    prediction, target = prediction.float(), target.float()
    weights = torch.ones_like(prediction[:, :1]) if mask is None else mask.to(prediction.dtype)
    count = weights.sum(dim=spatial).clamp_min(1.0)  # (B, 1)
    mean_p = (weights * prediction).sum(dim=spatial) / count
    mean_t = (weights * target).sum(dim=spatial) / count
    centred_p = prediction - mean_p[(..., *[None] * len(spatial))]
    centred_t = target - mean_t[(..., *[None] * len(spatial))]
    var_p = (weights * centred_p**2).sum(dim=spatial) / count
    var_t = (weights * centred_t**2).sum(dim=spatial) / count
    covariance = (weights * centred_p * centred_t).sum(dim=spatial) / count
    numerator = (2 * mean_p * mean_t + c1) * (2 * covariance + c2)
    denominator = (mean_p**2 + mean_t**2 + c1) * (var_p + var_t + c2)
    return numerator / denominator
