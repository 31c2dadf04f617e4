"""Baselines that need no training of a network: what a pre-contrast image gives away for free, and the
post-contrast label rule (the ceiling on datasets whose labels come from it).

Every function works on 3D float arrays (z, y, x) of one exam and returns a boolean mask of the same shape.

- :func:`body_mask`: Otsu threshold of the pre-contrast image, holes filled, largest component.
- :func:`all_tissue_baseline`: every voxel of the body mask ("all tissue in the breast").
- :class:`IntensityWindow`: the pre-contrast intensity band (in units of each exam's own body statistics) that
  best covers the tumours of the training cases; applied as is to unseen exams.
- :func:`label_rule_on_post_contrast`: TCIA's functional-tumour-volume rule (PE1 >= 70 %, 4 of 26 neighbours) on
  the pre- and first post-contrast images within the whole body mask (no radiologist's box), largest component.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_dkm.ftv_rule import ftv_label


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean 3D mask (empty in, empty out)."""
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8)), True)
    return sitk.GetArrayFromImage(sitk.RelabelComponent(components, sortByObjectSize=True)) == 1


def body_mask(pre: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x): tissue (not air) of a pre-contrast exam, by Otsu's threshold, holes filled per slice."""
    image = sitk.GetImageFromArray(np.asarray(pre, dtype=np.float32))
    otsu = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1)).astype(bool)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in otsu])
    return largest_component(filled)


def all_tissue_baseline(pre: np.ndarray) -> np.ndarray:
    """Every voxel of the body mask: the prediction of a method that only knows where the breast is."""
    return body_mask(pre)


def standardised_intensity(pre: np.ndarray, body: np.ndarray) -> np.ndarray:
    """``(pre - mean) / std`` with the body mask's own statistics (the unit of :class:`IntensityWindow`)."""
    values = pre[body]
    return (pre - values.mean()) / max(float(values.std()), 1e-6)


@dataclass(frozen=True)
class IntensityWindow:
    """Pre-contrast voxels inside the body whose standardised intensity lies in ``[low, high]`` are tumour."""

    low: float
    high: float

    def predict(self, pre: np.ndarray) -> np.ndarray:
        body = body_mask(pre)
        z = standardised_intensity(pre, body)
        return largest_component(body & (z >= self.low) & (z <= self.high))

    @classmethod
    def fit(cls, exams: Iterable[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None) -> IntensityWindow:
        """The window with the highest Dice summed over training ``exams`` of ``(pre, label)`` arrays.

        The search runs over pairs of ``grid`` values (default -3 to 3 in steps of 0.25) on voxel counts only;
        the largest-component step is left out of the search and applied at prediction time.
        """
        grid = np.arange(-3.0, 3.01, 0.25) if grid is None else np.asarray(grid, dtype=float)
        edges = np.concatenate([[-np.inf], grid, [np.inf]])
        tumour_hist = np.zeros(len(edges) - 1)
        body_hist = np.zeros(len(edges) - 1)
        tumour_total = 0.0
        for pre, label in exams:
            body = body_mask(pre)
            z = standardised_intensity(pre, body)
            tumour = np.asarray(label, dtype=bool)
            tumour_hist += np.histogram(z[body & tumour], bins=edges)[0]
            body_hist += np.histogram(z[body], bins=edges)[0]
            tumour_total += float(tumour.sum())
        best, best_dice = (grid[0], grid[-1]), -1.0
        for i in range(1, len(edges) - 1):
            for j in range(i, len(edges) - 1):
                tp = tumour_hist[i:j + 1].sum()
                predicted = body_hist[i:j + 1].sum()
                dice = 2 * tp / (predicted + tumour_total) if predicted + tumour_total else 0.0
                if dice > best_dice:
                    best, best_dice = (edges[i], edges[j + 1]), dice
        return cls(float(best[0]), float(best[1]))


def label_rule_on_post_contrast(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """The FTV label rule applied to the whole body (no VOI box), then its largest component."""
    return largest_component(ftv_label(pre, post, body_mask(pre)).astype(bool))
