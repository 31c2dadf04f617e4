"""Typed configuration of the diffusion module (DM) and of the kinetic feature extraction.

``DiffusionConfig`` describes the network (MONAI ``DiffusionModelUNet``) and its noise schedule; it is what a DM
checkpoint records so that the network can be rebuilt from the file alone. ``InputScaling`` is the fixed affine map
from nnU-Net-normalised intensities to the DM's input range. ``KineticFeatureConfig`` selects how features are read
from a frozen DM (extraction mode, levels, decoder or encoder, precision).

The DM is conditional: its input is ``cat[x_t, x_pre]`` (``num_post_phases`` noised post-contrast channels followed
by the pre-contrast image) and its output has ``num_post_phases`` channels (noise, velocity or sample, according to
``prediction_type``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from nnunet_dkm.errors import NnunetDkmError

PredictionType = Literal["epsilon", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
Objective = Literal["kinetic", "pre-only", "regression"]
OBJECTIVES: tuple[str, ...] = ("kinetic", "pre-only", "regression")
Target = Literal["post", "enhancement"]
TARGETS: tuple[str, ...] = ("post", "enhancement")

class DiffusionConfigError(NnunetDkmError, ValueError):
    """A diffusion or feature configuration is inconsistent; the message names the field and the problem."""


@dataclass(frozen=True)
class DiffusionConfig:
    """Network and noise schedule of the DM.

    Attributes:
        preset: name of the preset this configuration started from ("paper", "small" or "custom").
        num_post_phases: post-contrast phases predicted jointly (output channels); input channels are one more
            (the pre-contrast condition).
        spatial_dims: 2 (slices, the DKM setting) or 3.
        channels: feature channels per resolution level, shallowest first; level l (1-based) works at
            H / 2^(l-1).
        attention_levels: self-attention on/off per level (same length as ``channels``).
        num_res_blocks: residual blocks per level (one int for all levels, or one per level).
        num_head_channels: channels per attention head.
        norm_num_groups: GroupNorm groups; every entry of ``channels`` must be divisible by it.
        norm_eps: GroupNorm epsilon.
        resblock_updown: use residual blocks (instead of strided / interpolating convolutions) to change resolution.
        prediction_type: training target of MONAI's schedulers: "epsilon", "v_prediction" or "sample".
        num_train_timesteps: T, the number of diffusion steps.
        schedule: MONAI noise schedule name (``monai.networks.schedulers.NoiseSchedules``).
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        clip_sample: let the schedulers clip the predicted clean image to [-1, 1] while sampling. Off by default,
            because the DM's input range is set by ``InputScaling`` and need not be [-1, 1].
        objective: what the DM learns (``nnunet_dkm.diffusion.objectives``): "kinetic" (conditional diffusion
            pre -> post), "pre-only" (diffusion of the pre-contrast image, no condition: no kinetics) or "regression"
            (one forward at ``regression_timestep`` regressing the post-contrast image: no diffusion).
        target: the clean image ``x_0`` of the kinetic and regression objectives: "post" (the post-contrast phases)
            or "enhancement" (post - pre). The pre-only objective generates the pre-contrast image ("post" here).
        regression_timestep: the one timestep of the regression objective.
    """

    preset: str = "custom"
    num_post_phases: int = 1
    spatial_dims: int = 2
    channels: tuple[int, ...] = (32, 64, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    num_res_blocks: int | tuple[int, ...] = 1
    num_head_channels: int = 32
    norm_num_groups: int = 16
    norm_eps: float = 1e-6
    resblock_updown: bool = False
    prediction_type: PredictionType = "epsilon"
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 1e-2
    clip_sample: bool = False
    objective: Objective = "kinetic"
    target: Target = "post"
    regression_timestep: int = 50

    def __post_init__(self) -> None:
        # Normalise sequences coming from JSON / keyword overrides into tuples so that configs compare and hash.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention_levels", tuple(bool(a) for a in self.attention_levels))
        if not isinstance(self.num_res_blocks, int):
            object.__setattr__(self, "num_res_blocks", tuple(int(n) for n in self.num_res_blocks))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if self.num_post_phases < 1:
            problems.append(f"num_post_phases must be >= 1, got {self.num_post_phases}")
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.channels) < 1:
            problems.append("channels must name at least one level")
        if len(self.attention_levels) != len(self.channels):
            problems.append(
                f"attention_levels has {len(self.attention_levels)} entries but channels has {len(self.channels)}"
            )
        if isinstance(self.num_res_blocks, tuple) and len(self.num_res_blocks) != len(self.channels):
            problems.append(
                f"num_res_blocks has {len(self.num_res_blocks)} entries but channels has {len(self.channels)}"
            )
        if self.norm_num_groups < 1 or any(c % self.norm_num_groups for c in self.channels):
            problems.append(f"every entry of channels {self.channels} must be divisible by norm_num_groups "
                            f"({self.norm_num_groups})")
        for level, (width, attention) in enumerate(zip(self.channels, self.attention_levels, strict=False), start=1):
            if attention and width % self.num_head_channels:
                problems.append(f"level {level} has attention and {width} channels, not divisible by "
                                f"num_head_channels ({self.num_head_channels})")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.num_train_timesteps < 2:
            problems.append(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            problems.append(f"need 0 < beta_start < beta_end < 1, got {self.beta_start} and {self.beta_end}")
        problems += self._objective_problems()
        if problems:
            raise DiffusionConfigError("invalid diffusion config: " + "; ".join(problems))

    def _objective_problems(self) -> list[str]:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.target not in TARGETS:
            problems.append(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.objective == "pre-only" and self.target != "post":
            problems.append("the pre-only objective generates the pre-contrast image: target must be 'post'")
        if self.objective == "regression" and self.prediction_type != "sample":
            problems.append("the regression objective outputs the image itself: prediction_type must be 'sample'")
        if not 0 <= self.regression_timestep < self.num_train_timesteps:
            problems.append(f"regression_timestep must lie in [0, {self.num_train_timesteps}), got "
                            f"{self.regression_timestep}")
        return problems

    @property
    def in_channels(self) -> int:
        """Network input channels: the noised post-contrast phases, then the pre-contrast condition."""
        return self.num_post_phases + 1

    @property
    def out_channels(self) -> int:
        """Network output channels: one per predicted post-contrast phase."""
        return self.num_post_phases

    @property
    def num_levels(self) -> int:
        """Resolution levels; level l (1-based) works at 1 / 2^(l-1) of the input size."""
        return len(self.channels)

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this (2^(num_levels-1))."""
        return 2 ** (self.num_levels - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists); ``from_dict`` inverts it."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DiffusionConfig:
        """Rebuild a config written by ``to_dict``; unknown keys are an error (they mean another code version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DiffusionConfigError(
                f"diffusion config: unknown field(s) {unknown}; valid fields are {sorted(known)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class InputScaling:
    """Fixed affine map from nnU-Net-normalised intensities to the DM's input range: ``x_dm = scale * x + offset``.

    Applied to the pre-contrast image and to every post-contrast phase alike (all are normalised with the
    pre-contrast image's statistics), so enhancement ``x_post - x_pre`` is scaled by ``scale`` only.
    """

    scale: float
    offset: float

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise DiffusionConfigError(f"input scaling needs scale > 0, got {self.scale}")

    def to_dict(self) -> dict[str, float]:
        return {"scale": float(self.scale), "offset": float(self.offset)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputScaling:
        return cls(scale=float(values["scale"]), offset=float(values["offset"]))


ExtractionMode = Literal["A", "B", "C"]
DEFAULT_SLICE_CHUNK_PIXELS = 2**19
FeatureSource = Literal["decoder", "encoder"]


@dataclass(frozen=True)
class KineticFeatureConfig:
    """How kinetic features are read from a frozen DM.

    Attributes:
        mode: "A" the noised identity guess (``objectives.identity_guess``: the pre-contrast image, or zero
            enhancement) at ``timestep``; "B" (default) pure noise at t = T-1; "C" synthesise the post-contrast
            image with ``ddim_steps`` DDIM steps, then read features at t = 0.
        levels: resolution levels to return (1 = full size, 2 = 1/2, ... ); default f1 (why these defaults:
            ``benchmarks/results_feature_probe.md``).
        source: "decoder" (default) or "encoder" features.
        timestep: t* of mode A.
        ddim_steps: K, DDIM steps of mode C.
        noise_seed: seed of the fixed noise map, re-seeded on every call so the same input gives the same features.
        autocast: run the DM under bfloat16 autocast (features are returned in the input's dtype).
        channels_last: run the DM in channels-last memory format (default; features equal the contiguous-format
            ones to float rounding).
        slice_chunk_pixels: 3D configurations only (the 2D DM runs slice by slice inside the 3D patch): at most this
            many pixels (slices x in-plane pixels) per DM call, at least one slice; 0 runs every slice of the batch
            in one call. Bounds the DM's activation memory whatever the patch size; features do not depend on it
            (up to the float rounding of batched kernels). Default 2^19: 128 slices of 64x64, 20 of 160x160.
    """

    mode: ExtractionMode = "B"
    levels: tuple[int, ...] = (1,)
    source: FeatureSource = "decoder"
    timestep: int = 50
    ddim_steps: int = 5
    noise_seed: int = 0
    autocast: bool = False
    channels_last: bool = True
    slice_chunk_pixels: int = DEFAULT_SLICE_CHUNK_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(sorted({int(level) for level in self.levels})))
        problems = []
        if self.slice_chunk_pixels < 0:
            problems.append(f"slice_chunk_pixels must be >= 0 (0: no chunking), got {self.slice_chunk_pixels}")
        if self.mode not in ("A", "B", "C"):
            problems.append(f"mode must be 'A', 'B' or 'C', got {self.mode!r}")
        if self.source not in ("decoder", "encoder"):
            problems.append(f"source must be 'decoder' or 'encoder', got {self.source!r}")
        if not self.levels or self.levels[0] < 1:
            problems.append(f"levels must be a non-empty set of levels >= 1, got {self.levels}")
        if self.timestep < 0:
            problems.append(f"timestep must be >= 0, got {self.timestep}")
        if self.ddim_steps < 1:
            problems.append(f"ddim_steps must be >= 1, got {self.ddim_steps}")
        if problems:
            raise DiffusionConfigError("invalid kinetic feature config: " + "; ".join(problems))

    def check_against(self, diffusion_config: DiffusionConfig) -> None:
        """Raise ``DiffusionConfigError`` where these options cannot be used with that DM."""
        if self.levels[-1] > diffusion_config.num_levels:
            raise DiffusionConfigError(
                f"feature levels {self.levels} requested but the DM has only {diffusion_config.num_levels} levels"
            )
        if self.mode == "A" and self.timestep >= diffusion_config.num_train_timesteps:
            raise DiffusionConfigError(
                f"timestep {self.timestep} is outside the DM's schedule (T = {diffusion_config.num_train_timesteps})"
            )
        if self.mode == "C" and diffusion_config.objective != "kinetic":
            raise DiffusionConfigError(
                f"feature mode C samples with DDIM, which a DM with the {diffusion_config.objective!r} objective was "
                f"not trained for; use mode A or B"
            )
        if self.mode == "C" and self.ddim_steps > diffusion_config.num_train_timesteps:
            raise DiffusionConfigError(
                f"ddim_steps {self.ddim_steps} exceeds the DM's T = {diffusion_config.num_train_timesteps}"
            )
