"""The DM presets: for each, the network and the pretraining recipe, next to each other.

A recipe is a number of optimisation STEPS (plus batch, patch and sampling settings), so that one command gives one
model on any machine whatever its load; ``nnUNetv2_dkm_pretrain --max-minutes`` is only an optional cap.
``DiffusionConfig`` describes the network alone; pretraining takes every recipe value it is not given from here, and
``nnUNetv2_dkm_pretrain --help`` shows these values as its defaults.

- ``paper``: the paper's DM (channels 128-256-256-256, attention at the lowest level, epsilon prediction), the
  plain DDPM loss, uniform timesteps, half the patches on tumour / strong enhancement, nnU-Net's patch size.
- ``small``: sized for a 2-core CPU (1.5 M parameters): v-prediction of the enhancement (post - pre), 64x64
  patches, half the timesteps from the noisier half of the schedule, 90 % of patches on tumour / strong enhancement,
  each pixel's loss weighted by ``1 + 2 |post - pre|``, the raw weights (no EMA), 8000 steps
  (``benchmarks/results_dm_recipe.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from nnunet_dkm.diffusion.config import DiffusionConfig, DiffusionConfigError

PATCH_CENTRING = ("labels", "enhancement")


@dataclass(frozen=True)
class PretrainingRecipe:
    """How a preset's DM is pretrained.

    Attributes:
        steps: optimisation steps (the recipe's length; the same on every machine).
        batch_size: slices per step and rank.
        patch_size: (H, W) of the training patches; None: the configuration's (in-plane, for 3D) patch size.
        learning_rate, weight_decay: AdamW.
        warmup_steps: linear learning-rate warm-up.
        foreground_fraction: share of patches centred on tumour / strong enhancement.
        high_noise_fraction: share of timesteps drawn from the noisier half of the schedule, t ~ U[T/2, T).
        enhancement_weight: per-pixel loss weight ``1 + w |x_post - x_pre|`` (0: the plain DDPM loss).
        patch_centring: where foreground patches are centred: ``"labels"`` (tumour voxels of labelled exams, the
            most enhancing voxels of unlabelled ones) or ``"enhancement"`` (the most enhancing voxels of every exam:
            label-free pretraining, so that the DM sees no tumour label at all).
        ema_decay: decay of the exponential moving average of the weights that the checkpoint saves (0: no EMA,
            the raw weights are saved).
    """

    steps: int
    batch_size: int
    patch_size: tuple[int, int] | None
    foreground_fraction: float
    high_noise_fraction: float
    enhancement_weight: float
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    patch_centring: str = "labels"
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        problems = [f"{name} must be >= 1, got {getattr(self, name)}" for name in ("steps", "batch_size")
                    if getattr(self, name) < 1]
        problems += [f"{name} must lie in [0, 1], got {getattr(self, name)}"
                     for name in ("foreground_fraction", "high_noise_fraction") if not 0 <= getattr(self, name) <= 1]
        if self.enhancement_weight < 0:
            problems.append(f"enhancement_weight must be >= 0, got {self.enhancement_weight}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.patch_centring not in PATCH_CENTRING:
            problems.append(f"patch_centring must be one of {PATCH_CENTRING}, got {self.patch_centring!r}")
        if problems:
            raise DiffusionConfigError("invalid pretraining recipe: " + "; ".join(problems))


@dataclass(frozen=True)
class DmPreset:
    """A named DM: its network and how it is pretrained."""

    network: DiffusionConfig
    recipe: PretrainingRecipe


DM_PRESETS: dict[str, DmPreset] = {
    "paper": DmPreset(
        network=DiffusionConfig(preset="paper", channels=(128, 256, 256, 256),
                                attention_levels=(False, False, False, True), num_res_blocks=2, num_head_channels=32,
                                norm_num_groups=32, prediction_type="epsilon"),
        recipe=PretrainingRecipe(steps=100_000, batch_size=8, patch_size=None, foreground_fraction=0.5,
                                 high_noise_fraction=0.0, enhancement_weight=0.0),
    ),
    "small": DmPreset(
        network=DiffusionConfig(preset="small", channels=(32, 64, 64, 64),
                                attention_levels=(False, False, False, True), num_res_blocks=1, num_head_channels=32,
                                norm_num_groups=16, prediction_type="v_prediction", target="enhancement"),
        recipe=PretrainingRecipe(steps=8000, batch_size=16, patch_size=(64, 64), foreground_fraction=0.9,
                                 high_noise_fraction=0.5, enhancement_weight=2.0, ema_decay=0.0),
    ),
}
PRESET_NAMES: tuple[str, ...] = tuple(DM_PRESETS)
RECIPE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PretrainingRecipe))


def dm_preset(name: str) -> DmPreset:
    """The preset called ``name``; an unknown name is a ``DiffusionConfigError`` listing the known ones."""
    if name not in DM_PRESETS:
        raise DiffusionConfigError(f"unknown DM preset {name!r}; choose one of {PRESET_NAMES}")
    return DM_PRESETS[name]


def preset_network(name: str, **overrides: Any) -> DiffusionConfig:
    """A preset's network config with any field overridden by keyword.

    Example: ``preset_network("small", prediction_type="epsilon", num_post_phases=3)``.
    """
    known = {f.name for f in fields(DiffusionConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DiffusionConfigError(f"override of preset {name!r}: unknown field(s) {unknown}; valid fields are "
                                   f"{sorted(known)}")
    return replace(dm_preset(name).network, **overrides)
