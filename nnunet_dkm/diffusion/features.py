"""Kinetic features from a frozen DM: a truncated walk through MONAI's ``DiffusionModelUNet`` and the extractor.

Levels are numbered from the input resolution: level l (1-based) is read at ``H / 2^(l-1)``, so with four levels
f1..f4 are at H, H/2, H/4, H/8. Decoder level l is the up path's state at that resolution after all its residual
(and attention) blocks and before upsampling; encoder level l is the down path's state at that resolution before
downsampling. Both have ``channels[l-1]`` channels.

The walk calls the network's own submodules (``time_embed``, ``conv_in``, ``down_blocks``, ``middle_block``, the
residual / attention blocks and upsamplers of ``up_blocks``, ``out``) in the order MONAI's ``forward`` does, and
stops once the deepest level needed is read: for encoder features after the down block of the deepest requested
level; for decoder features after the up block of the shallowest requested level.

For 3D configurations ``slicewise_kinetic_features`` runs the 2D extractor on the slices of a 3D patch, in chunks of
at most ``KineticFeatureConfig.slice_chunk_pixels`` pixels, and stacks each level back into the patch's axis order;
2d networks chunk their batch by the same budget (``chunked_kinetic_features``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

from nnunet_dkm.diffusion import objectives
from nnunet_dkm.diffusion.config import DiffusionConfig, FeatureSource, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.network import build_network, ddim_sample, make_ddpm_scheduler


@dataclass
class UNetWalk:
    """Result of ``walk_unet``: the requested levels' features and, when asked for, the network output."""

    features: dict[int, torch.Tensor]
    output: torch.Tensor | None = None


def walk_unet(network: DiffusionModelUNet, x: torch.Tensor, timesteps: torch.Tensor, levels: Iterable[int],
              source: FeatureSource = "decoder", run_output_head: bool = False) -> UNetWalk:
    """Run ``network`` up to the deepest point that the requested levels need, collecting their features.

    Args:
        network: a MONAI ``DiffusionModelUNet`` without cross-attention conditioning or class embedding.
        x: network input, [B, C_in, *spatial], every spatial size divisible by 2^(num_levels-1).
        timesteps: [B] diffusion steps.
        levels: levels to return, each in 1..num_levels.
        source: "decoder" or "encoder".
        run_output_head: walk the whole network and also return its output (equal to ``network(x, timesteps)``).

    Returns:
        ``UNetWalk`` with ``features[l]`` of shape [B, channels[l-1], *(s / 2^(l-1) for s in spatial)].
    """
    if network.with_conditioning or network.num_class_embeds is not None:
        raise ValueError("walk_unet supports DiffusionModelUNet without cross-attention or class conditioning")
    num_levels = len(network.block_out_channels)
    wanted = sorted(set(levels))
    if not wanted or wanted[0] < 1 or wanted[-1] > num_levels:
        raise ValueError(f"levels {wanted} must lie in 1..{num_levels}")
    if source not in ("decoder", "encoder"):
        raise ValueError(f"source must be 'decoder' or 'encoder', got {source!r}")

    embedding = network.time_embed(get_timestep_embedding(timesteps, network.block_out_channels[0]).to(x.dtype))
    hidden = network.conv_in(x)
    skips = [hidden]
    features: dict[int, torch.Tensor] = {}

    for index, down_block in enumerate(network.down_blocks):
        hidden, block_skips = down_block(hidden_states=hidden, temb=embedding, context=None)
        skips.extend(block_skips)
        level = index + 1
        if source == "encoder" and level in wanted:
            # block_skips: one state per residual block at this level, then the downsampled state (if any)
            features[level] = block_skips[len(down_block.resnets) - 1]
            if level == wanted[-1] and not run_output_head:
                return UNetWalk(features)

    hidden = network.middle_block(hidden_states=hidden, temb=embedding, context=None)

    for index, up_block in enumerate(network.up_blocks):
        attentions = getattr(up_block, "attentions", None)
        for block_index, resnet in enumerate(up_block.resnets):
            hidden = resnet(torch.cat([hidden, skips.pop()], dim=1), embedding)
            if attentions is not None:
                hidden = attentions[block_index](hidden).contiguous()
        level = num_levels - index
        if source == "decoder" and level in wanted:
            features[level] = hidden
            if level == wanted[0] and not run_output_head:
                return UNetWalk(features)
        if up_block.upsampler is not None:
            hidden = up_block.upsampler(hidden, embedding)

    return UNetWalk(features, network.out(hidden) if run_output_head else None)


MAX_NOISE_SHAPES = 8  # noise maps kept per extractor (nnU-Net's training and prediction use one patch shape)


def noise_buffer_name(spatial_shape: tuple[int, ...]) -> str:
    """The buffer that holds the fixed noise map of one spatial shape, e.g. ``fixed_noise_128x128``."""
    return "fixed_noise_" + "x".join(str(int(size)) for size in spatial_shape)


def dm_precision(device_type: str, bf16: bool) -> contextlib.AbstractContextManager:
    """The DM's precision, whatever the caller's autocast: bfloat16 autocast where ``bf16`` is asked, else fp32 (an
    outer fp16 / bf16 autocast region is switched off for the DM). On device types without autocast (``meta``)
    nothing is entered: there is no outer region to switch off, and ``torch.autocast`` would raise."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16)


class KineticFeatureExtractor(nn.Module):
    """Frozen DM that turns pre-contrast patches into kinetic features f_l at the selected levels.

    Always in eval mode (``train()`` is overridden), parameters frozen, forward under ``torch.no_grad()``. The same
    input gives bit-identical features: the noise map is drawn on the CPU from a generator seeded with
    ``noise_seed`` (so it is the same on every device), once per spatial shape, and kept on the device
    (``fixed_noise``); its shape [1, P, *spatial] is broadcast over the batch (so a slice's features do not depend
    on the rest of the batch, up to the float rounding of batched kernels, ~1e-6).

    Precision is set by ``feature_config.autocast`` alone: off means fp32 even inside a caller's fp16 / bf16
    autocast region, on means bfloat16 autocast (``dm_precision``). Features come back in the input's dtype.

    Attributes:
        level_channels: channels of each selected level's features, e.g. ``{3: 64, 4: 64}``.
    """

    def __init__(self, diffusion_config: DiffusionConfig, input_scaling: InputScaling,
                 feature_config: KineticFeatureConfig | None = None, network: DiffusionModelUNet | None = None) -> None:
        """
        Args:
            diffusion_config: the DM's config.
            input_scaling: the DM's input scaling (from its checkpoint).
            feature_config: extraction options; defaults to ``KineticFeatureConfig()`` (mode A, t* = 50, decoder f2).
            network: the pretrained DM; None builds a freshly initialised one (an untrained-DM control, or a
                container whose weights come from a state dict later).
        """
        super().__init__()
        self.diffusion_config = diffusion_config
        self.input_scaling = input_scaling
        self.feature_config = feature_config if feature_config is not None else KineticFeatureConfig()
        self.feature_config.check_against(diffusion_config)
        self.network = network if network is not None else build_network(diffusion_config)
        self._memory_format = torch.contiguous_format
        if self.feature_config.channels_last:
            self._memory_format = torch.channels_last if diffusion_config.spatial_dims == 2 else torch.channels_last_3d
            self.network.to(memory_format=self._memory_format)
        self._noise_scheduler = make_ddpm_scheduler(diffusion_config)
        self._noise_shapes: list[str] = []  # names of the noise buffers, oldest first
        self.requires_grad_(False)
        self.train(False)
        self.level_channels: dict[int, int] = {
            level: diffusion_config.channels[level - 1] for level in self.feature_config.levels
        }

    def train(self, mode: bool = True) -> KineticFeatureExtractor:
        """Stay in eval mode whatever is asked: the DM is frozen (dropout / norm statistics never change)."""
        return super().train(False)

    def fixed_noise(self, spatial_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The noise map of every call: [1, P, *spatial_shape], drawn on the CPU from a generator seeded with
        ``noise_seed`` (so it is the same on every device).

        Drawn once per (shape, device, dtype) and kept on the device as a non-persistent buffer (not in the state
        dict; it follows ``.to(device)``), so a call creates no generator and copies nothing from the host: under
        ``torch.compile`` the lookup is traced, without a graph break, once a shape's noise exists
        (``prepare_noise``).
        """
        name = noise_buffer_name(spatial_shape)
        noise = getattr(self, name, None)
        if noise is None or noise.device != device or noise.dtype != dtype:
            noise = self._draw_noise(spatial_shape).to(device=device, dtype=dtype)
            if name not in self._noise_shapes:
                self._noise_shapes.append(name)
            while len(self._noise_shapes) > MAX_NOISE_SHAPES:  # callers with whole images of many sizes
                delattr(self, self._noise_shapes.pop(0))
            self.register_buffer(name, noise, persistent=False)
        return noise

    def prepare_noise(self, spatial_shape: tuple[int, ...] | list[int]) -> None:
        """Draw the noise map of ``spatial_shape`` (the planned patch's, in the DM's 2D plane for 3D patches) now, on
        the module's device, so that the first (compiled) forward finds it."""
        device = next(self.network.parameters()).device
        self.fixed_noise(tuple(int(size) for size in spatial_shape), device, torch.float32)

    @torch.compiler.disable
    def _draw_noise(self, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.feature_config.noise_seed)
        return torch.randn((1, self.diffusion_config.num_post_phases, *spatial_shape), generator=generator)

    def _check_input(self, x: torch.Tensor) -> None:
        spatial_dims = self.diffusion_config.spatial_dims
        if x.ndim != spatial_dims + 2 or x.shape[1] != 1:
            raise ValueError(
                f"expected pre-contrast patches of shape [B, 1, {', '.join('HWD'[:spatial_dims])}], "
                f"got {tuple(x.shape)}"
            )
        divisor = self.diffusion_config.size_divisor
        if any(size % divisor for size in x.shape[2:]):
            raise ValueError(
                f"patch size {tuple(x.shape[2:])} must be divisible by {divisor} for a DM with "
                f"{self.diffusion_config.num_levels} levels"
            )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Kinetic features of nnU-Net-normalised pre-contrast patches.

        Args:
            x: [B, 1, H, W] (or [B, 1, H, W, D] for a 3D DM), sizes divisible by 2^(num_levels-1).

        Returns:
            ``{level: [B, level_channels[level], H / 2^(level-1), W / 2^(level-1)]}`` in ``x``'s dtype.
        """
        self._check_input(x)
        options = self.feature_config
        config = self.diffusion_config
        batch = x.shape[0]
        with torch.no_grad(), dm_precision(x.device.type, options.autocast):
            x_pre = self.input_scaling.scale * x.float() + self.input_scaling.offset
            noise = self.fixed_noise(tuple(x.shape[2:]), x.device, torch.float32)
            noise = noise.expand(batch, *noise.shape[1:])
            if options.mode == "A":
                timestep = options.timestep
                t_batch = torch.full((batch,), timestep, dtype=torch.long, device=x.device)
                x_t = self._noise_scheduler.add_noise(objectives.identity_guess(config, x_pre), noise, t_batch)
            elif options.mode == "B":
                timestep = config.num_train_timesteps - 1
                x_t = noise
            else:
                timestep = 0
                x_t = ddim_sample(self.network, config, x_pre, noise, options.ddim_steps)
            network_input = torch.cat([x_t, objectives.condition(config, x_pre)], dim=1)
            network_input = network_input.contiguous(memory_format=self._memory_format)
            t_batch = torch.full((batch,), timestep, dtype=torch.long, device=x.device)
            walk = walk_unet(self.network, network_input, t_batch, options.levels, options.source)
        return {level: walk.features[level].to(x.dtype).contiguous() for level in options.levels}


def slices_per_chunk(slice_shape: tuple[int, ...], chunk_pixels: int, num_slices: int) -> int:
    """Slices per DM call: as many as fit in ``chunk_pixels`` pixels (at least one); all of them for 0."""
    if chunk_pixels <= 0:
        return max(1, num_slices)
    pixels = 1
    for size in slice_shape:
        pixels *= int(size)
    return max(1, min(num_slices, chunk_pixels // max(1, pixels)))


def chunked_kinetic_features(extractor: KineticFeatureExtractor, x: torch.Tensor,
                             chunk_pixels: int | None = None) -> dict[int, torch.Tensor]:
    """The extractor's features of a batch of 2D patches [N, 1, H, W], in chunks of at most ``chunk_pixels`` pixels
    (``KineticFeatureConfig.slice_chunk_pixels`` where None; 0: one call), concatenated back along the batch.

    The DM's activation memory grows with the pixels of one call; the budget bounds it whatever batch nnU-Net plans
    (a batch within the budget is one call, as before). A patch's features do not depend on the chunking, up to the
    float rounding of batched kernels.
    """
    if chunk_pixels is None:
        chunk_pixels = extractor.feature_config.slice_chunk_pixels
    step = slices_per_chunk(tuple(x.shape[2:]), chunk_pixels, len(x))
    if step >= len(x):
        return extractor(x)
    chunks = [extractor(x[start:start + step]) for start in range(0, len(x), step)]
    return {level: torch.cat([chunk[level] for chunk in chunks]) for level in extractor.feature_config.levels}


def slicewise_kinetic_features(extractor: KineticFeatureExtractor, x: torch.Tensor, slice_axis: int = 0,
                               chunk_pixels: int | None = None) -> dict[int, torch.Tensor]:
    """Kinetic features of a 3D patch from a 2D DM, slice by slice.

    The patch is cut into 2D slices across ``slice_axis`` (0 = the first spatial axis, which nnU-Net's
    ``transpose_forward`` makes the lowest-resolution one); the other two axes, in their order, are the DM's 2D axes.
    The B * S slices go through the (frozen, truncated) 2D extractor in chunks of at most ``chunk_pixels`` pixels,
    and each level's features are stacked back into the patch's axis order.

    Args:
        extractor: a 2D ``KineticFeatureExtractor``.
        x: [B, 1, S0, S1, S2] nnU-Net-normalised pre-contrast patches; the two in-plane sizes divisible by the DM's
            ``size_divisor``.
        slice_axis: spatial axis (0, 1 or 2) the slices are taken across.
        chunk_pixels: pixel budget per DM call (``KineticFeatureConfig.slice_chunk_pixels`` where None; 0: all
            slices in one call).

    Returns:
        ``{level: [B, C_l, *shape]}`` where ``shape`` is the patch's spatial shape with the two in-plane sizes divided
        by 2^(level-1) and the slice axis at full size; e.g. for ``slice_axis=0``: [B, C_l, S0, S1 / 2^(l-1),
        S2 / 2^(l-1)]. A slice's features are the 2D extractor's features of that slice (chunking changes nothing but
        the float rounding of batched kernels).
    """
    if extractor.diffusion_config.spatial_dims != 2:
        raise ValueError("slice-wise features need a 2D DM")
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"expected 3D pre-contrast patches of shape [B, 1, D, H, W], got {tuple(x.shape)}")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    if chunk_pixels is None:
        chunk_pixels = extractor.feature_config.slice_chunk_pixels
    batch = x.shape[0]
    moved = x.movedim(2 + slice_axis, 2)  # [B, 1, S, A, C]
    num_slices, plane = moved.shape[2], tuple(moved.shape[3:])
    slices = moved.permute(0, 2, 1, 3, 4).reshape(batch * num_slices, 1, *plane)
    per_slice = chunked_kinetic_features(extractor, slices, chunk_pixels)
    features = {}
    for level in extractor.feature_config.levels:
        stacked = per_slice[level]
        stacked = stacked.reshape(batch, num_slices, *stacked.shape[1:]).permute(0, 2, 1, 3, 4)  # [B, C, S, a, c]
        features[level] = stacked.movedim(2, 2 + slice_axis).contiguous()
    return features
