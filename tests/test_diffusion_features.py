"""Kinetic feature extraction: the truncated walk through MONAI's UNet and the frozen, deterministic extractor."""

from __future__ import annotations

import pytest
import torch
from conftest import randomised_network, tiny_config
from torch import nn

from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.estimates import synthesise_post_contrast
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, walk_unet
from nnunet_dkm.diffusion.network import make_ddpm_scheduler

SCALING = InputScaling(scale=0.5, offset=0.25)




@pytest.fixture(scope="module")
def config() -> DiffusionConfig:
    # attention at the two lowest levels and two residual blocks: exercises AttnDown/Up blocks and skip popping;
    # the post-contrast target, whose clean-image guess is the pre-contrast image (the enhancement target's features
    # are tested in test_dm_objectives.py)
    return tiny_config(attention_levels=(False, False, True, True), num_res_blocks=2, num_post_phases=2,
                       target="post")


@pytest.fixture(scope="module")
def network(config: DiffusionConfig) -> nn.Module:
    return randomised_network(config)


def patches(batch: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def extractor(config: DiffusionConfig, network: nn.Module, **options) -> KineticFeatureExtractor:
    return KineticFeatureExtractor(config, SCALING, KineticFeatureConfig(**options), network)


# ----------------------------------------------------------------------------------------------- walk


def test_full_walk_reproduces_the_monai_forward_exactly(config: DiffusionConfig, network: nn.Module) -> None:
    x = torch.randn(2, config.in_channels, 32, 32)
    timesteps = torch.tensor([0, 731])
    with torch.no_grad():
        expected = network(x, timesteps)
        walk = walk_unet(network, x, timesteps, levels=(1, 2, 3, 4), run_output_head=True)
    assert expected.abs().max() > 0
    assert torch.equal(walk.output, expected)


@pytest.mark.parametrize("source", ["decoder", "encoder"])
@pytest.mark.parametrize("levels", [(4,), (3, 4), (2,), (1, 3), (1, 2, 3, 4)])
def test_truncated_walk_returns_the_full_walks_tensors(
    config: DiffusionConfig, network: nn.Module, source: str, levels: tuple[int, ...]
) -> None:
    x = torch.randn(2, config.in_channels, 32, 32)
    timesteps = torch.tensor([250, 250])
    with torch.no_grad():
        full = walk_unet(network, x, timesteps, levels=(1, 2, 3, 4), source=source, run_output_head=True)
        truncated = walk_unet(network, x, timesteps, levels=levels, source=source)
    assert sorted(truncated.features) == sorted(levels)
    assert truncated.output is None
    for level in levels:
        assert torch.equal(truncated.features[level], full.features[level])
        assert truncated.features[level].shape == (2, config.channels[level - 1], 32 >> (level - 1), 32 >> (level - 1))


def modules_run(network: nn.Module, walk) -> set[str]:
    """Names of the top-level stages (conv_in, down_blocks.i, middle_block, up_blocks.i, out) that ran."""
    stages = {"conv_in": network.conv_in, "middle_block": network.middle_block, "out": network.out}
    stages |= {f"down_blocks.{i}": block for i, block in enumerate(network.down_blocks)}
    stages |= {f"up_blocks.{i}": block for i, block in enumerate(network.up_blocks)}
    stages |= {f"up_blocks.{i}.upsampler": b.upsampler for i, b in enumerate(network.up_blocks) if b.upsampler}
    stages |= {f"up_blocks.{i}.resnets.0": block.resnets[0] for i, block in enumerate(network.up_blocks)}
    ran: set[str] = set()
    hooks = [m.register_forward_hook(lambda *_, n=name: ran.add(n)) for name, m in stages.items()]
    try:
        walk()
    finally:
        for hook in hooks:
            hook.remove()
    return ran


@pytest.mark.parametrize(
    ("source", "levels", "last_stage", "first_skipped"),
    [
        ("decoder", (3, 4), "up_blocks.1.resnets.0", "up_blocks.1.upsampler"),  # f3 read before upsampling to H/2
        ("decoder", (4,), "up_blocks.0.resnets.0", "up_blocks.0.upsampler"),  # f4 needs only the lowest up block
        ("decoder", (1,), "up_blocks.3.resnets.0", "out"),  # f1 needs every up block but not the output head
        ("encoder", (3, 4), "down_blocks.3", "middle_block"),
        ("encoder", (1, 2), "down_blocks.1", "down_blocks.2"),
    ],
)
def test_walk_stops_after_the_deepest_level_needed(
    config: DiffusionConfig, network: nn.Module, source: str, levels: tuple, last_stage: str, first_skipped: str
) -> None:
    x = torch.randn(1, config.in_channels, 32, 32)
    with torch.no_grad():
        ran = modules_run(network, lambda: walk_unet(network, x, torch.tensor([250]), levels, source))
    assert last_stage in ran
    assert first_skipped not in ran and "out" not in ran


# ----------------------------------------------------------------------------------------------- extractor


@pytest.mark.parametrize("mode", ["A", "B", "C"])
@pytest.mark.parametrize("source", ["decoder", "encoder"])
def test_each_level_has_its_resolution_and_channels(
    config: DiffusionConfig, network: nn.Module, mode: str, source: str
) -> None:
    dm = extractor(config, network, mode=mode, source=source, levels=(1, 2, 3, 4), ddim_steps=2)
    features = dm(patches(batch=2, size=64)[..., :48])  # non-square: 64 x 48
    assert dm.level_channels == {1: 8, 2: 16, 3: 16, 4: 16}
    assert sorted(features) == [1, 2, 3, 4]
    for level, feature in features.items():
        assert feature.shape == (2, dm.level_channels[level], 64 >> (level - 1), 48 >> (level - 1))
        assert torch.isfinite(feature).all()


@pytest.mark.parametrize("mode", ["A", "B", "C"])
def test_same_input_gives_bit_identical_features(config: DiffusionConfig, network: nn.Module, mode: str) -> None:
    dm = extractor(config, network, mode=mode, ddim_steps=2)
    x = patches()
    first = dm(x)
    torch.randn(100)  # the global RNG state must not matter
    second = KineticFeatureExtractor(config, SCALING, dm.feature_config, network)(x.clone())
    for level in first:
        assert torch.equal(first[level], second[level])


def test_noise_seed_changes_features_and_the_input_matters(config: DiffusionConfig, network: nn.Module) -> None:
    x = patches()
    level = KineticFeatureConfig().levels[0]  # the default level
    reference = extractor(config, network)(x)[level]
    assert not torch.equal(reference, extractor(config, network, noise_seed=1)(x)[level])
    assert not torch.equal(reference, extractor(config, network)(x + 0.1)[level])


@pytest.mark.parametrize("mode", ["A", "C"])
def test_a_slices_features_do_not_depend_on_the_rest_of_the_batch(
    config: DiffusionConfig, network: nn.Module, mode: str
) -> None:
    dm = extractor(config, network, mode=mode, ddim_steps=2)
    batch = patches(batch=4)
    together = dm(batch)
    alone = dm(batch[2:3])
    for level in together:  # equal up to float rounding of batched kernels
        torch.testing.assert_close(together[level][2:3], alone[level], atol=1e-5, rtol=1e-4)


def test_extractor_is_frozen_and_stays_in_eval(config: DiffusionConfig, network: nn.Module) -> None:
    dm = extractor(config, randomised_network(config, seed=3).train(), levels=(1, 2, 3, 4))
    assert all(not p.requires_grad for p in dm.parameters())
    assert not any(module.training for module in dm.modules())
    wrapper = nn.Sequential(dm)
    wrapper.train()
    assert not dm.training and not any(module.training for module in dm.modules())
    before = {name: value.clone() for name, value in dm.state_dict().items()}

    x = patches().requires_grad_(True)
    features = dm(x)
    assert all(not feature.requires_grad for feature in features.values())
    fusion = nn.Conv2d(dm.level_channels[3], 4, 1)
    fusion(features[3]).sum().backward()  # a downstream loss trains the fusion layer only
    assert fusion.weight.grad is not None
    assert all(p.grad is None for p in dm.parameters())
    assert all(torch.equal(before[name], value) for name, value in dm.state_dict().items())


def test_mode_a_feeds_the_noised_pre_contrast_at_t_star(config: DiffusionConfig, network: nn.Module) -> None:
    dm = extractor(config, network, mode="A", timestep=250, levels=(2,))
    x = patches(batch=2)
    x_pre = SCALING.scale * x + SCALING.offset
    eps = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    abar = make_ddpm_scheduler(config).alphas_cumprod[250]
    x_t = abar.sqrt() * x_pre.expand(-1, 2, -1, -1) + (1 - abar).sqrt() * eps
    with torch.no_grad():
        expected = walk_unet(network, torch.cat([x_t, x_pre], 1), torch.tensor([250, 250]), (2,)).features[2]
    torch.testing.assert_close(dm(x)[2], expected, atol=1e-6, rtol=1e-5)


def test_mode_b_feeds_pure_noise_at_the_last_step(config: DiffusionConfig, network: nn.Module) -> None:
    dm = extractor(config, network, mode="B", levels=(4,))
    x = patches(batch=2)
    x_pre = SCALING.scale * x + SCALING.offset
    eps = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    with torch.no_grad():
        expected = walk_unet(network, torch.cat([eps, x_pre], 1), torch.tensor([999, 999]), (4,)).features[4]
    assert torch.equal(dm(x)[4], expected)


def test_mode_c_reads_features_of_the_synthesised_post_contrast_at_t_zero(
    config: DiffusionConfig, network: nn.Module
) -> None:
    dm = extractor(config, network, mode="C", ddim_steps=3, levels=(3,))
    x = patches(batch=2)
    x_pre = SCALING.scale * x + SCALING.offset
    eps = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    virtual_post = synthesise_post_contrast(network, config, x_pre, eps, 3)
    with torch.no_grad():
        expected = walk_unet(network, torch.cat([virtual_post, x_pre], 1), torch.tensor([0, 0]), (3,)).features[3]
    assert torch.equal(dm(x)[3], expected)


def test_input_scaling_is_applied_first(config: DiffusionConfig, network: nn.Module) -> None:
    x = patches()
    scaled = extractor(config, network)(x)
    identity = KineticFeatureExtractor(config, InputScaling(1.0, 0.0), KineticFeatureConfig(), network)
    unscaled = identity(SCALING.scale * x + SCALING.offset)
    for level in scaled:
        torch.testing.assert_close(scaled[level], unscaled[level], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("option", ["autocast", "channels_last"])
def test_bf16_autocast_and_channels_last_approximate_fp32(config: DiffusionConfig, option: str) -> None:
    network = randomised_network(config)
    x = patches()
    reference = extractor(config, network, channels_last=False, levels=(3, 4))(x)
    variant = extractor(config, randomised_network(config), **{"channels_last": False, option: True, "levels": (3, 4)})
    features = variant(x)
    assert torch.equal(features[4], variant(x)[4])
    for level, feature in features.items():
        assert feature.dtype == torch.float32
        tolerance = 0.1 if option == "autocast" else 1e-4
        torch.testing.assert_close(feature, reference[level], atol=tolerance * reference[level].abs().max(), rtol=0)


def test_untrained_control_has_the_same_interface(config: DiffusionConfig) -> None:
    control = KineticFeatureExtractor(config, SCALING)  # the default features: f1
    assert control.level_channels == {1: 8}
    assert sorted(control(patches())) == [1]


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 1, 36, 32), "divisible by 8"), ((2, 2, 32, 32), r"\[B, 1, H, W\]"), ((1, 32, 32), r"\[B, 1, H, W\]")],
)
def test_bad_patches_are_refused_with_the_reason(config: DiffusionConfig, shape: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KineticFeatureExtractor(config, SCALING)(torch.zeros(shape))


def test_3d_dm_gives_volumetric_features() -> None:
    config = tiny_config(spatial_dims=3, channels=(8, 8, 8), attention_levels=(False, False, False))
    features = KineticFeatureExtractor(config, SCALING, KineticFeatureConfig(levels=(1, 3)))(torch.zeros(1, 1, 8, 8, 8))
    assert features[1].shape == (1, 8, 8, 8, 8) and features[3].shape == (1, 8, 2, 2, 2)
