"""Per-pixel feature maps of the probe's rows, computed slice by slice.

A *family* produces the features of several rows from one pass over a chunk of a case's slices:

- :class:`BaselineFeatures`: the pre-contrast intensity alone; a fixed filter bank of the pre-contrast slice
  (intensity plus Gaussian, gradient magnitude and Laplacian of Gaussian at sigma 1, 2 and 4 px, in-plane only);
  the enhancement ceiling (intensity plus every post-contrast phase minus the pre-contrast image).
- :class:`DmFeatures`: one frozen DM forward (one mode, t* or DDIM steps, and source) reading all levels any of its
  settings needs; each level is upsampled bilinearly to the slice size and a setting's row concatenates its levels.

Every family returns ``{row label: (C, n, y, x) float32}`` for ``n`` slices. :func:`forward_ms_per_slice` is the cost
of a setting: its truncated DM forward per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from monai.transforms import DivisiblePad
from scipy import ndimage

from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling
from nnunet_dkm.diffusion.features import KineticFeatureExtractor
from nnunet_dkm.probe.cases import ProbeCase
from nnunet_dkm.probe.settings import DmSetting
from nnunet_dkm.reporting import mean_seconds

FILTER_SIGMAS = (1.0, 2.0, 4.0)
INTENSITY, FILTER_BANK, CEILING = "intensity", "filter bank", "enhancement ceiling"


@dataclass(frozen=True)
class RowSpec:
    """One row of the probe's table.

    Attributes:
        label: unique name, e.g. ``pretrained DM A250:decoder:34``.
        kind: ``intensity``, ``filter_bank``, ``untrained_dm``, ``dm`` or ``ceiling``.
        model: the DM's name (``untrained``, ``pretrained``, a snapshot name) or "" for the baselines.
        setting: the DM setting's code, or "".
    """

    label: str
    kind: str
    model: str = ""
    setting: str = ""


class FeatureFamily(Protocol):
    """Rows whose features come from one pass over a chunk of slices."""

    name: str
    rows: list[RowSpec]

    def extract(self, case: ProbeCase, slices: slice) -> dict[str, np.ndarray]:
        """``{row label: (C, n, y, x) float32}`` for ``case``'s slices ``slices`` (n of them)."""
        ...


def dm_row_label(model: str, setting: DmSetting) -> str:
    return f"{model} DM {setting.code}"


def filter_bank(pre: np.ndarray) -> np.ndarray:
    """(n, y, x) slices -> (10, n, y, x): intensity, then Gaussian, gradient magnitude and Laplacian of Gaussian at
    each sigma of ``FILTER_SIGMAS`` (in-plane, per slice; reflecting borders)."""
    pre = np.asarray(pre, dtype=np.float32)
    channels = [pre]
    for filter_function in (ndimage.gaussian_filter, ndimage.gaussian_gradient_magnitude, ndimage.gaussian_laplace):
        channels += [filter_function(pre, sigma=(0.0, sigma, sigma)) for sigma in FILTER_SIGMAS]
    return np.stack(channels).astype(np.float32)


class BaselineFeatures:
    """Rows that need no DM: intensity, filter bank and (where ``with_ceiling``) the enhancement ceiling."""

    def __init__(self, with_ceiling: bool) -> None:
        self.rows = [RowSpec(INTENSITY, "intensity"), RowSpec(FILTER_BANK, "filter_bank")]
        if with_ceiling:
            self.rows.append(RowSpec(CEILING, "ceiling"))
        self.name = "baselines"

    def extract(self, case: ProbeCase, slices: slice) -> dict[str, np.ndarray]:
        """Features of ``case``'s slices ``slices``: ``{row label: (C, n, y, x)}``."""
        pre = case.pre_slices(slices)
        out = {INTENSITY: pre[None].astype(np.float32), FILTER_BANK: filter_bank(pre)}
        if any(row.kind == "ceiling" for row in self.rows):
            if case.num_post_phases < 1:
                raise ValueError(f"case {case.case_id} has no post-contrast phase for the enhancement ceiling")
            post = case.images[1:, slices]
            out[CEILING] = np.concatenate([pre[None], post - pre[None]]).astype(np.float32)
        return out


def upsampled_levels(features: dict[int, torch.Tensor], size: tuple[int, int]) -> dict[int, torch.Tensor]:
    """Each level's [B, C_l, h_l, w_l] bilinearly upsampled to [B, C_l, *size] (``align_corners=False``)."""
    return {level: torch.nn.functional.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
            for level, value in features.items()}


class DmFeatures:
    """The rows of one DM forward: settings sharing (mode, t* or DDIM steps, source), each a subset of levels.

    Args:
        model: the DM's name in row labels (``untrained``, ``pretrained``, ...).
        config, input_scaling: the DM's config and input scaling.
        network: the DM; None builds a freshly initialised one (seed torch before, for a deterministic control).
        settings: settings sharing one ``forward_key``.
        device: where the DM runs.
        batch_size: slices per DM forward.
    """

    def __init__(self, model: str, config: DiffusionConfig, input_scaling: InputScaling,
                 network: torch.nn.Module | None, settings: Sequence[DmSetting], device: torch.device,
                 batch_size: int = 16) -> None:
        keys = {setting.forward_key for setting in settings}
        if len(keys) != 1:
            raise ValueError(f"settings of one DM forward must share mode, number and source, got {sorted(keys)}")
        self.settings = list(settings)
        self.levels = tuple(sorted({level for setting in settings for level in setting.levels}))
        self.extractor = KineticFeatureExtractor(config, input_scaling, settings[0].feature_config(self.levels),
                                                 network).to(device)
        self.divisor = config.size_divisor
        self.device = device
        self.batch_size = batch_size
        self.rows = [RowSpec(dm_row_label(model, s), "untrained_dm" if model == "untrained" else "dm", model, s.code)
                     for s in settings]
        self.name = f"{model} DM {settings[0].mode}{settings[0].number if settings[0].mode != 'B' else ''}:" \
                    f"{settings[0].source}"

    def level_maps(self, pre: np.ndarray) -> dict[int, np.ndarray]:
        """(n, y, x) pre-contrast slices -> ``{level: (C_l, n, y, x)}`` upsampled to the slice size."""
        height, width = pre.shape[1:]
        slices = DivisiblePad(self.divisor, method="end")(np.asarray(pre, dtype=np.float32)).as_tensor()[:, None]
        chunks: dict[int, list[torch.Tensor]] = {level: [] for level in self.levels}
        for start in range(0, len(slices), self.batch_size):
            batch = slices[start:start + self.batch_size].to(self.device)
            levels = upsampled_levels(self.extractor(batch), tuple(batch.shape[2:]))
            for level, value in levels.items():
                chunks[level].append(value[:, :, :height, :width].cpu())
        return {level: torch.cat(values).permute(1, 0, 2, 3).numpy() for level, values in chunks.items()}

    def extract(self, case: ProbeCase, slices: slice) -> dict[str, np.ndarray]:
        """Features of ``case``'s slices ``slices``: ``{row label: (C, n, y, x)}``, C the sum of the setting's
        levels' channels."""
        maps = self.level_maps(case.pre_slices(slices))
        return {row.label: np.concatenate([maps[level] for level in setting.levels])
                for row, setting in zip(self.rows, self.settings, strict=True)}


def forward_ms_per_slice(config: DiffusionConfig, input_scaling: InputScaling, network: torch.nn.Module,
                         setting: DmSetting, slice_shape: tuple[int, int], device: torch.device,
                         batch_size: int = 8, repeats: int = 3) -> float:
    """Milliseconds per slice of ``KineticFeatureExtractor`` with exactly ``setting``'s levels on a [batch_size, 1,
    H, W] batch (H, W: ``slice_shape`` padded to the DM's size divisor): the mean of ``repeats`` calls after a
    warm-up."""
    divisor = config.size_divisor
    height, width = (-(-size // divisor) * divisor for size in slice_shape)
    extractor = KineticFeatureExtractor(config, input_scaling, setting.feature_config(), network).to(device)
    batch = torch.randn((batch_size, 1, height, width), generator=torch.Generator().manual_seed(0)).to(device)
    return 1000.0 * mean_seconds(lambda: extractor(batch), repeats) / batch_size
