"""DM config presets, MONAI network / schedulers, DDIM sampling, checkpoint file and plans identity."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import randomised_network, tiny_config
from torch import nn

import nnunet_dkm.diffusion.checkpoint as checkpoint_module
from nnunet_dkm.diffusion.checkpoint import (
    DiffusionCheckpoint,
    DiffusionCheckpointError,
    check_plans_identity,
    load_checkpoint,
    load_network,
    plans_identity,
    save_checkpoint,
)
from nnunet_dkm.diffusion.config import DiffusionConfig, DiffusionConfigError, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.estimates import synthesise_post_contrast
from nnunet_dkm.diffusion.network import (
    build_network,
    ddim_timesteps,
    make_ddim_scheduler,
    make_ddpm_scheduler,
    training_target,
)
from nnunet_dkm.diffusion.presets import preset_network
from nnunet_dkm.paths import dm_checkpoint_location, missing_dm_message
from nnunet_dkm.preprocessing import PreprocessedSpaceError


def nnunet_plans() -> dict:
    """An nnU-Net 2.8-style plans dict with a 2d configuration and an inheriting 3d_lowres one."""
    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 512]},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset990_DKMPhantom",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 0.7, 0.7],
        "original_median_shape_after_transp": [40, 128, 128],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 80.0, "std": 20.0}},
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 12,
                "patch_size": [128, 128],
                "median_image_size_in_voxels": [128.0, 128.0],
                "spacing": [0.7, 0.7],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "architecture": architecture,
                "batch_dice": True,
            },
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [32, 128, 128],
                "spacing": [3.0, 0.7, 0.7],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "architecture": architecture,
                "batch_dice": False,
            },
            "3d_lowres": {"inherits_from": "3d_fullres", "spacing": [3.0, 1.4, 1.4], "patch_size": [32, 64, 64]},
        },
    }


# ----------------------------------------------------------------------------------------------- config


def test_presets_match_the_paper_and_the_cpu_demo() -> None:
    paper = preset_network("paper")
    assert paper.channels == (128, 256, 256, 256)
    assert paper.attention_levels == (False, False, False, True)
    assert paper.prediction_type == "epsilon"
    assert (paper.num_train_timesteps, paper.beta_start, paper.beta_end) == (1000, 1e-4, 1e-2)
    assert (paper.in_channels, paper.out_channels, paper.spatial_dims) == (2, 1, 2)

    small = preset_network("small")
    assert small.channels == (32, 64, 64, 64)
    assert small.attention_levels == (False, False, False, True)
    assert small.num_res_blocks == 1
    assert small.prediction_type == "v_prediction"  # chosen by benchmarks/dm_evidence.py
    assert sum(p.numel() for p in build_network(small).parameters()) < 3_000_000


def test_preset_overrides_and_derived_channels() -> None:
    config = preset_network("paper", prediction_type="v_prediction", num_post_phases=3)
    assert config.prediction_type == "v_prediction"
    assert (config.in_channels, config.out_channels) == (4, 3)
    network = build_network(config)
    assert network.conv_in.conv.in_channels == 4
    assert network.out[2].conv.out_channels == 3
    assert make_ddpm_scheduler(config).prediction_type == "v_prediction"
    assert make_ddim_scheduler(config).prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"channels": (8, 16, 20, 16)}, "norm_num_groups"),
        ({"attention_levels": (False, True)}, "attention_levels"),
        ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
        ({"num_post_phases": 0}, "num_post_phases"),
    ],
)
def test_inconsistent_config_is_refused_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(DiffusionConfigError, match=message):
        tiny_config(**overrides)


def test_unknown_preset_or_field_is_refused() -> None:
    with pytest.raises(DiffusionConfigError, match="paper"):
        preset_network("huge")
    with pytest.raises(DiffusionConfigError, match="num_channels"):
        preset_network("small", num_channels=(8, 8, 8, 8))


def test_config_round_trips_through_json() -> None:
    config = tiny_config(num_res_blocks=(1, 2, 1, 1), prediction_type="sample", num_post_phases=2)
    restored = DiffusionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_feature_config_is_checked_against_the_dm() -> None:
    config = tiny_config(channels=(8, 16, 16), attention_levels=(False, False, True))
    with pytest.raises(DiffusionConfigError, match="only 3 levels"):
        KineticFeatureConfig(levels=(3, 4)).check_against(config)
    with pytest.raises(DiffusionConfigError, match="timestep"):
        KineticFeatureConfig(mode="A", levels=(3,), timestep=1000).check_against(config)
    with pytest.raises(DiffusionConfigError, match="mode"):
        KineticFeatureConfig(mode="D")


# ----------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target_is_what_monai_schedulers_invert(prediction_type: str) -> None:
    config = tiny_config(prediction_type=prediction_type)
    ddpm, ddim = make_ddpm_scheduler(config), make_ddim_scheduler(config)
    ddim.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 1, 8, 8, generator=generator)
    noise = torch.randn(3, 1, 8, 8, generator=generator)
    timestep = 699
    t_batch = torch.full((3,), timestep)
    noisy = ddpm.add_noise(clean, noise, t_batch)
    target = training_target(config, ddpm, clean, noise, t_batch)
    _, predicted_clean = ddim.step(target, timestep, noisy)
    torch.testing.assert_close(predicted_clean, clean, atol=1e-5, rtol=1e-5)


def test_schedule_is_linear_beta_1e4_to_1e2_with_1000_steps() -> None:
    scheduler = make_ddpm_scheduler(preset_network("paper"))
    assert scheduler.betas.shape == (1000,)
    assert math.isclose(scheduler.betas[0].item(), 1e-4, rel_tol=1e-6)
    assert math.isclose(scheduler.betas[-1].item(), 1e-2, rel_tol=1e-6)
    assert torch.allclose(scheduler.betas.diff(), scheduler.betas.diff()[0].expand(999), atol=1e-9)


class OracleDenoiser(nn.Module):
    """Answers every query with the exact target for a known clean image (any prediction type).

    Records the noise each query implies; on a consistent DDIM trajectory (each update lands on the timestep the
    next query is made at) that noise is the same at every step.
    """

    def __init__(self, config: DiffusionConfig, clean: torch.Tensor) -> None:
        super().__init__()
        self.config, self.clean = config, clean
        self.alphas_cumprod = make_ddpm_scheduler(config).alphas_cumprod
        self.implied_noise: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        noisy = x[:, : self.config.num_post_phases]
        abar = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noise = (noisy - abar.sqrt() * self.clean) / (1 - abar).sqrt()
        self.implied_noise.append(noise)
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "sample":
            return self.clean
        return abar.sqrt() * noise - (1 - abar).sqrt() * self.clean


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("num_steps", [1, 3, 5, 7])
def test_ddim_sampling_stays_on_the_trajectory_and_lands_on_the_clean_image(
    prediction_type: str, num_steps: int
) -> None:
    config = tiny_config(prediction_type=prediction_type, num_post_phases=2, target="post")  # returns the clean image
    generator = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 2, 8, 8, generator=generator)
    x_pre = torch.randn(2, 1, 8, 8, generator=generator)
    noise = torch.randn(2, 2, 8, 8, generator=generator)
    oracle = OracleDenoiser(config, clean)
    sample = synthesise_post_contrast(oracle, config, x_pre, noise, num_steps)
    torch.testing.assert_close(sample, clean, atol=1e-4, rtol=1e-4)
    assert len(oracle.implied_noise) == num_steps
    for implied in oracle.implied_noise[1:]:  # every step stayed on the trajectory of the first
        torch.testing.assert_close(implied, oracle.implied_noise[0], atol=1e-4, rtol=1e-4)


def test_ddim_timesteps_start_at_pure_noise_with_the_stride_monai_steps_by() -> None:
    assert ddim_timesteps(1000, 5) == [999, 799, 599, 399, 199]
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))


# ----------------------------------------------------------------------------------------------- checkpoint


def make_checkpoint(config: DiffusionConfig, network: nn.Module, **extra) -> DiffusionCheckpoint:
    return DiffusionCheckpoint(
        config=config,
        weights=network.state_dict(),
        input_scaling=InputScaling(scale=0.25, offset=-0.5),
        plans_identity=plans_identity(nnunet_plans(), "2d"),
        **extra,
    )


def test_checkpoint_rebuilds_the_network_from_the_file_alone(tmp_path: Path) -> None:
    config = tiny_config(prediction_type="v_prediction", num_post_phases=2)
    network = randomised_network(config)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    network(torch.randn(1, 3, 16, 16), torch.tensor([5])).square().mean().backward()
    optimiser.step()
    training_state = {"step": 1, "optimizer": optimiser.state_dict(), "raw_weights": network.state_dict()}
    path = save_checkpoint(
        make_checkpoint(config, network, weights_are_ema=True, metadata={"epochs": 3}, training_state=training_state),
        tmp_path / "dm" / "checkpoint.pt",
    )

    rebuilt, loaded = load_network(path, map_location="meta")
    assert all(p.device.type == "meta" for p in rebuilt.parameters())  # placed where map_location asks
    rebuilt, loaded = load_network(path)
    assert loaded.config == config
    assert loaded.input_scaling == InputScaling(scale=0.25, offset=-0.5)
    assert loaded.plans_identity == plans_identity(nnunet_plans(), "2d")
    assert loaded.weights_are_ema and loaded.metadata == {"epochs": 3}
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    with torch.no_grad():
        assert torch.equal(rebuilt(x, t), network(x, t))
    assert not rebuilt.training

    resumed = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    resumed.load_state_dict(loaded.training_state["optimizer"])
    assert loaded.training_state["step"] == 1
    assert torch.equal(resumed.state_dict()["state"][0]["exp_avg"], optimiser.state_dict()["state"][0]["exp_avg"])


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    path = save_checkpoint(make_checkpoint(config, randomised_network(config, seed=0)), tmp_path / "dm.pt")
    first_weights = load_checkpoint(path).weights

    def interrupted_save(payload, stream) -> None:
        stream.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(make_checkpoint(config, randomised_network(config, seed=1)), path)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["dm.pt"]
    assert all(torch.equal(first_weights[k], v) for k, v in load_checkpoint(path).weights.items())


def test_unreadable_checkpoints_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DiffusionCheckpointError, match=r"missing\.pt: no DM checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DiffusionCheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(DiffusionCheckpointError, match="not an nnunet-dkm DM checkpoint"):
        load_checkpoint(foreign)

    config = tiny_config()
    future = make_checkpoint(config, build_network(config)).to_payload()
    future["format_version"] = 99
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(DiffusionCheckpointError, match="newer"):
        load_checkpoint(tmp_path / "future.pt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tiny_config(), build_network(tiny_config()))
    checkpoint.config = tiny_config(channels=(16, 16, 16, 16))
    path = save_checkpoint(checkpoint, tmp_path / "dm.pt")
    with pytest.raises(DiffusionCheckpointError, match=r"dm\.pt.*do not fit"):
        load_network(path)


# ----------------------------------------------------------------------------------------------- plans identity


def test_plans_identity_accepts_its_own_plans_and_ignores_training_only_entries() -> None:
    identity = json.loads(json.dumps(plans_identity(nnunet_plans(), "2d")))  # as stored and read back
    assert identity["dataset_name"] == "Dataset990_DKMPhantom"
    assert identity["configuration"] == "2d"
    assert identity["preprocessing"]["spacing"] == [0.7, 0.7]
    plans = nnunet_plans()
    plans["configurations"]["2d"]["batch_size"] = 48
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["n_stages"] = 7
    plans["foreground_intensity_properties_per_channel"]["0"]["mean"] = 95.0  # unused by z-score normalisation
    check_plans_identity(identity, plans, "2d")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda plans: plans["configurations"]["2d"].update(spacing=[0.8, 0.8]), "spacing"),
        (lambda plans: plans["configurations"]["2d"].update(patch_size=[96, 96]), "patch_size"),
        (lambda plans: plans["configurations"]["2d"].update(normalization_schemes=["RescaleTo01Normalization"]),
         "normalization_schemes"),
        (lambda plans: plans.update(transpose_forward=[2, 1, 0]), "transpose_forward"),
        (lambda plans: plans.update(dataset_name="Dataset991_NACT"), "dataset_name"),
    ],
)
def test_checkpoint_for_other_plans_is_refused_naming_the_field_and_the_fix(change, field: str) -> None:
    identity = plans_identity(nnunet_plans(), "2d")
    plans = nnunet_plans()
    change(plans)
    with pytest.raises(DiffusionCheckpointError) as raised:
        check_plans_identity(identity, plans, "2d", checkpoint_path="/x/dm.pt")
    message = str(raised.value)
    assert f"{field}:" in message and "/x/dm.pt" in message
    dataset_id = "991" if field == "dataset_name" else "990"
    assert f"nnUNetv2_dkm_pretrain -d {dataset_id} -c 2d" in message


def test_other_configuration_or_plans_name_is_refused() -> None:
    identity = plans_identity(nnunet_plans(), "2d")
    with pytest.raises(DiffusionCheckpointError, match="configuration: checkpoint '2d', in use '3d_fullres'"):
        check_plans_identity(identity, nnunet_plans(), "3d_fullres")
    plans = nnunet_plans()
    plans["plans_name"] = "nnUNetResEncUNetMPlans"
    with pytest.raises(DiffusionCheckpointError, match="-d 990 -c 2d -p nnUNetResEncUNetMPlans"):
        check_plans_identity(identity, plans, "2d")


def test_plans_identity_resolves_inherited_configurations() -> None:
    lowres = plans_identity(nnunet_plans(), "3d_lowres")
    assert lowres["preprocessing"]["spacing"] == [3.0, 1.4, 1.4]
    assert lowres["preprocessing"]["normalization_schemes"] == ["ZScoreNormalization"]
    plans = nnunet_plans()
    plans["configurations"]["3d_fullres"]["use_mask_for_norm"] = [True]  # inherited by 3d_lowres
    with pytest.raises(DiffusionCheckpointError, match="use_mask_for_norm"):
        check_plans_identity(lowres, plans, "3d_lowres")


def test_plans_identity_of_a_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(PreprocessedSpaceError, match=r"'3d_cascade_fullres'.*available"):
        plans_identity(nnunet_plans(), "3d_cascade_fullres")


def test_tampered_identity_hash_is_refused() -> None:
    identity = copy.deepcopy(plans_identity(nnunet_plans(), "2d"))
    identity["preprocessing_sha256"] = "0" * 64
    with pytest.raises(DiffusionCheckpointError, match="preprocessing_sha256"):
        check_plans_identity(identity, nnunet_plans(), "2d")


def test_missing_dm_messages_name_the_real_command_and_the_variable(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    default = dm_checkpoint_location(tmp_path / "Dataset990_X", "2d")
    assert default.path == tmp_path / "Dataset990_X" / "dkm" / "2d" / "dm_checkpoint.pt"
    message = missing_dm_message(default, "Dataset990_X", "2d", "nnUNetPlansResEnc")
    assert "nnUNetv2_dkm_pretrain -d 990 -c 2d -p nnUNetPlansResEnc" in message and "DATASET" not in message

    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path / "elsewhere.pt"))
    overridden = dm_checkpoint_location(tmp_path / "Dataset990_X", "2d")
    assert overridden.from_environment and overridden.path == tmp_path / "elsewhere.pt"
    message = missing_dm_message(overridden, "Dataset990_X", "2d")
    assert "$nnUNet_dkm_checkpoint=" in message and "unset nnUNet_dkm_checkpoint" in message
