"""What a DM pretraining run depends on: its settings (the preset's recipe with this run's overrides, recorded in
the checkpoint so that ``--continue`` can check them) and the process group it runs in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from nnunetv2.configuration import default_num_processes

from nnunet_dkm.diffusion.config import InputScaling
from nnunet_dkm.diffusion.postcontrast import DEFAULT_DDIM_STEPS
from nnunet_dkm.diffusion.presets import RECIPE_FIELDS, PretrainingRecipe, dm_preset
from nnunet_dkm.errors import NnunetDkmError

DEFAULT_INPUT_SCALING = InputScaling(scale=0.5, offset=0.0)


class PretrainingError(NnunetDkmError):
    """Pretraining cannot start or go on; the message says why and what to run."""


@dataclass
class PretrainSettings:
    """Everything a pretraining run depends on (recorded in the checkpoint).

    The recipe fields (``steps`` ... ``patch_centring``, see ``PretrainingRecipe``) default to None, which means
    "the preset's value": a preset's recipe is defined once, in ``nnunet_dkm/diffusion/presets.py``.
    """

    dataset_id: int
    configuration: str = "2d"
    plans_identifier: str = "nnUNetPlans"
    preset: str = "small"
    config_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    batch_size: int | None = None
    patch_size: tuple[int, int] | None = None
    foreground_fraction: float | None = None
    high_noise_fraction: float | None = None
    enhancement_weight: float | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    patch_centring: str | None = None
    ema_decay: float | None = None
    grad_clip: float = 1.0
    seed: int = 0
    validation_fraction: float = 0.1
    validate_every: int = 200
    save_every: int = 200
    keep_steps: tuple[int, ...] = ()  # also keep a copy of the checkpoint at these steps (0 = before training)
    slice_axis: int = 0  # 3D configurations: the axis of the preprocessed volumes the 2D slices are cut across
    input_scale: float = DEFAULT_INPUT_SCALING.scale
    input_offset: float = DEFAULT_INPUT_SCALING.offset
    augmentation: bool = True
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16 / fp16
    max_minutes: float | None = None  # optional cap on training time; the recipe is ``steps``
    sample_ddim_steps: int = DEFAULT_DDIM_STEPS  # the dm_samples.png figure: the synthesis sampler
    objective: str = "kinetic"  # kinetic, pre-only or regression (nnunet_dkm.diffusion.objectives)
    target: str | None = None  # post or enhancement; None: the preset's
    num_processes: int = default_num_processes  # -np: processes that build the DM cache (nnU-Net's nnUNet_def_n_proc)

    def __post_init__(self) -> None:
        preset_recipe = dm_preset(self.preset).recipe
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset_recipe, name))
        self.keep_steps = tuple(sorted({int(step) for step in self.keep_steps}))
        _ = self.recipe  # building the recipe validates the values

    @property
    def recipe(self) -> PretrainingRecipe:
        """The recipe this run follows (the preset's, with this run's overrides)."""
        return PretrainingRecipe(**{name: getattr(self, name) for name in RECIPE_FIELDS})

    def network_overrides(self) -> dict[str, Any]:
        """The fields of the preset's network this run changes: objective and target, the regression objective's
        direct output (``sample``), then the explicit ``config_overrides``."""
        overrides: dict[str, Any] = {"objective": self.objective}
        if self.objective == "regression":
            overrides["prediction_type"] = "sample"
        if self.objective == "pre-only":
            overrides["target"] = "post"  # it generates the pre-contrast image; the target does not apply
        elif self.target is not None:
            overrides["target"] = self.target
        return {**overrides, **self.config_overrides}

    @property
    def label_free(self) -> bool:
        """Whether no tumour label is used (patches centred by enhancement alone)."""
        return self.patch_centring == "enhancement"

    def compatible_with(self, other: PretrainSettings) -> list[str]:
        """Settings that must not change when a run is continued; returns the differences."""
        keys = ("dataset_id", "configuration", "plans_identifier", "preset", "config_overrides", "batch_size",
                "seed", "input_scale", "input_offset", "patch_size", "ema_decay", "patch_centring", "slice_axis",
                "objective", "target")
        return [f"{k}: {getattr(other, k)!r} -> {getattr(self, k)!r}" for k in keys
                if _plain(getattr(self, k)) != _plain(getattr(other, k))]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_to_dict(settings: PretrainSettings) -> dict[str, Any]:
    values = asdict(settings)
    values["patch_size"] = list(settings.patch_size) if settings.patch_size else None
    values["keep_steps"] = list(settings.keep_steps)
    return values


def settings_from_dict(values: dict[str, Any]) -> PretrainSettings:
    """Settings stored in a checkpoint; keys this version does not know are an error (the run was made by another
    version and cannot be continued exactly)."""
    known = {f.name for f in fields(PretrainSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PretrainingError(f"the checkpoint's training state was written by another nnunet-dkm version (unknown "
                               f"settings {unknown}); it cannot be continued: use --overwrite to start a new run")
    values = dict(values)
    values["patch_size"] = tuple(values["patch_size"]) if values.get("patch_size") else None
    values["keep_steps"] = tuple(values.get("keep_steps") or ())
    return PretrainSettings(**values)


@dataclass
class RunContext:
    """Process group facts: rank, world size, device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0
