"""Metrics and references of the DM evidence benchmark: MAE, enhancement correlation, linear map, mask ceiling."""

from __future__ import annotations

import math

import numpy as np

from nnunet_dkm.evaluation.dm_quality import RegionAccumulator, TumourMaskOracle, distance_to_margin, fit_global_linear


def disc_slices(count: int, seed: int, noise: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pre, post, mask) slices with a disc 'tumour' whose enhancement is 1 + 0.5 pre + 3 exp(-depth / 3) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    slices = []
    for _ in range(count):
        cy, cx, radius = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(5, 9)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        pre = rng.normal(0.0, 1.0, (32, 32)).astype(np.float32)
        enhancement = 1.0 + 0.5 * pre + 3.0 * np.exp(-distance_to_margin(mask) / 3.0)
        post = pre + np.where(mask, enhancement, 0.2) + rng.normal(0.0, noise, (32, 32))
        slices.append((pre, post.astype(np.float32), mask))
    return slices


def test_region_metrics_are_mae_and_pearson_of_enhancement() -> None:
    pre = np.zeros((1, 2, 2), np.float32)
    true = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    estimate = np.array([[[1.0, 3.0], [5.0, 7.0]]], np.float32)
    mask = np.ones_like(pre, bool)
    region = RegionAccumulator.empty()
    region.add(estimate, pre, true, mask)
    assert math.isclose(region.mae(), (0 + 1 + 2 + 3) / 4)
    assert math.isclose(region.enhancement_correlation(), np.corrcoef(estimate.ravel(), true.ravel())[0, 1])
    constant = RegionAccumulator.empty()
    constant.add(pre + 1.0, pre, true, mask)
    assert math.isnan(constant.enhancement_correlation())


def test_global_linear_map_recovers_slope_and_offset() -> None:
    pre = np.linspace(-2, 2, 50)
    assert np.allclose(fit_global_linear(pre, 1.5 * pre + 0.25), (1.5, 0.25))


def test_distance_to_margin_counts_voxels_inside_the_mask() -> None:
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    depth = distance_to_margin(mask)
    assert depth[3, 3] == 3 and depth[1, 3] == 1 and depth[0, 0] == 0
    assert distance_to_margin(mask[None]).shape == (1, 7, 7)


def test_mask_oracle_learns_the_visible_part_of_the_enhancement_and_keeps_the_rest() -> None:
    oracle = TumourMaskOracle.fit(disc_slices(20, seed=0))
    test = disc_slices(10, seed=1)
    pre, post, mask = (np.stack(parts) for parts in zip(*test, strict=True))
    outside = pre + 0.2
    estimate = oracle.predict(pre, mask, outside)
    assert np.array_equal(estimate[~mask], outside[~mask])
    region = RegionAccumulator.empty()
    region.add(estimate, pre, post, mask)
    assert region.mae() < 0.35  # close to the noise (mean |N(0, 0.3)| = 0.24)
    assert region.enhancement_correlation() > 0.9
