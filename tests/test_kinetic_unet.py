"""KineticUNet built by the trainer's static nnU-Net builder: shapes, deep supervision, frozen DM, state dicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PHANTOM_ID, TINY_DM
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dkm.architecture.builder import DKM_PLANS_KEY, MissingDkmBlockError, build_paper_network, make_plans_block
from nnunet_dkm.architecture.kinetic_unet import KineticUNet
from nnunet_dkm.architecture.paper_network import PaperKineticNet
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, plans_identity
from nnunet_dkm.diffusion.config import InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.network import build_network
from nnunet_dkm.diffusion.presets import preset_network
from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM, trainable_parameters
from nnunet_dkm.training.variants.paper import nnUNetTrainerDKMPaper

BIN = Path(sys.executable).parent


def plans_with_dkm_block(plans: dict, levels=(3, 4), source="decoder", **block_options) -> PlansManager:
    config = preset_network("small", num_post_phases=2, **TINY_DM)
    checkpoint = DiffusionCheckpoint(config, build_network(config).state_dict(), InputScaling(0.5, 0.0),
                                     plans_identity(plans, "2d"))
    block = make_plans_block(checkpoint, KineticFeatureConfig(levels=levels, source=source), "test", **block_options)
    plans = json.loads(json.dumps(plans))
    plans["configurations"]["2d"][DKM_PLANS_KEY] = block
    return PlansManager(plans)


def build(manager: PlansManager, deep_supervision: bool) -> KineticUNet:
    return nnUNetTrainerDKM.build_network_architecture(manager, manager.get_configuration("2d"), 1, 2,
                                                      deep_supervision)


@pytest.fixture(scope="module")
def phantom_plans(planned_phantom: dict[str, Path]) -> dict:
    return json.loads(next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*/nnUNetPlans.json"))
                      .read_text())


@pytest.fixture(scope="module")
def resenc_plans(planned_phantom: dict[str, Path]) -> dict:
    """nnU-Net's residual-encoder preset (ResEnc M) planned for the same dataset."""
    env = {**os.environ, **{k: str(v) for k, v in planned_phantom.items()}}
    result = subprocess.run([str(BIN / "nnUNetv2_plan_experiment"), "-d", str(PHANTOM_ID), "-pl",
                             "nnUNetPlannerResEncM"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    return json.loads((folder / "nnUNetResEncUNetMPlans.json").read_text())


@pytest.mark.parametrize("patch", [(64, 64), (32, 48), (128, 96)])
def test_output_shapes_with_and_without_deep_supervision(phantom_plans: dict, patch: tuple[int, int]) -> None:
    manager = plans_with_dkm_block(phantom_plans)
    x = torch.randn(2, 1, *patch)
    plain = build(manager, deep_supervision=False).eval()
    assert plain(x).shape == (2, 2, *patch)
    supervised = build(manager, deep_supervision=True).eval()
    outputs = supervised(x)
    assert isinstance(outputs, list) and outputs[0].shape == (2, 2, *patch)
    assert [o.shape[-1] for o in outputs] == sorted({o.shape[-1] for o in outputs}, reverse=True)
    supervised.decoder.deep_supervision = False  # nnU-Net's switch for validation / export
    assert supervised(x).shape == (2, 2, *patch)


def test_fusion_sits_at_the_stages_matching_the_dm_levels(phantom_plans: dict) -> None:
    network = build(plans_with_dkm_block(phantom_plans, levels=(1, 2, 3, 4)), False)
    assert network.level_of_stage == {0: 1, 1: 2, 2: 3, 3: 4}


def merge_kernels(network: KineticUNet) -> list[tuple[int, ...]]:
    return [tuple(fusion.merge.conv.kernel_size) for fusion in network.fusions.values()]


def test_fusion_merge_kernel_is_recorded_in_the_plans_and_older_plans_keep_the_stage_kernel(
    phantom_plans: dict,
) -> None:
    assert merge_kernels(build(plans_with_dkm_block(phantom_plans), False)) == [(1, 1), (1, 1)]
    stage_kernel = plans_with_dkm_block(phantom_plans, merge_kernel_size=None)
    assert merge_kernels(build(stage_kernel, False)) == [(3, 3), (3, 3)]
    older = plans_with_dkm_block(phantom_plans)  # written before the merge kernel was recorded
    del older.plans["configurations"]["2d"][DKM_PLANS_KEY]["fusion_merge_kernel_size"]
    assert merge_kernels(build(PlansManager(older.plans), False)) == [(3, 3), (3, 3)]
    x = torch.randn(1, 1, 64, 64)
    assert build(stage_kernel, False).eval()(x).shape == build(older, False).eval()(x).shape == (1, 2, 64, 64)


def test_residual_encoder_presets_work(resenc_plans: dict) -> None:
    manager = plans_with_dkm_block(resenc_plans)
    assert "ResidualEncoderUNet" in manager.get_configuration("2d").network_arch_class_name
    network = build(manager, deep_supervision=True).eval()
    assert network(torch.randn(1, 1, 64, 64))[0].shape == (1, 2, 64, 64)


def test_frozen_dm_is_unchanged_by_training_and_stays_in_eval(phantom_plans: dict) -> None:
    network = build(plans_with_dkm_block(phantom_plans), deep_supervision=False)
    dm_before = {k: v.clone() for k, v in network.kinetic.state_dict().items()}
    trainable = trainable_parameters(network)
    dm_parameters = {id(p) for p in network.kinetic.parameters()}
    assert trainable and not dm_parameters & {id(p) for p in trainable}  # what the optimisers get
    assert not any(p.requires_grad for p in network.kinetic.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    network.train()
    assert not network.kinetic.training and not network.kinetic.network.training
    fusion_before = next(network.fusions.parameters()).clone()
    for _ in range(2):
        optimizer.zero_grad()
        network(torch.randn(2, 1, 64, 64)).square().mean().backward()
        optimizer.step()
    for key, value in network.kinetic.state_dict().items():
        torch.testing.assert_close(value, dm_before[key], rtol=0, atol=0)
    assert not torch.equal(next(network.fusions.parameters()), fusion_before)


def test_state_dict_round_trip_through_the_static_builder(phantom_plans: dict) -> None:
    manager = plans_with_dkm_block(phantom_plans, levels=(2, 4), source="encoder")
    original = build(manager, deep_supervision=False).eval()
    rebuilt = build(manager, deep_supervision=False)
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(rebuilt(x), original(x))
    assert any(key.startswith("kinetic.network.") for key in original.state_dict())


def test_plans_without_dkm_block_are_explained(phantom_plans: dict) -> None:
    manager = PlansManager(json.loads(json.dumps(phantom_plans)))
    with pytest.raises(MissingDkmBlockError, match="plans.json saved in the model's results folder"):
        build(manager, deep_supervision=False)


def test_paper_module_shapes_and_frozen_dm(phantom_plans: dict) -> None:
    manager = plans_with_dkm_block(phantom_plans, levels=(1, 2, 3, 4))
    network = build_paper_network(manager.get_configuration("2d"), 1, 2, channels=(8, 16, 32, 64))
    assert network(torch.randn(2, 1, 32, 48)).shape == (2, 2, 32, 48)
    network.train()
    assert not network.kinetic.training and network.blocks[0].training
    assert not any(p.requires_grad for p in network.kinetic.parameters())
    assert all(block.adapter is not None for block in network.blocks)


def test_paper_trainer_builds_the_papers_module(phantom_plans: dict) -> None:
    manager = plans_with_dkm_block(phantom_plans)
    network = nnUNetTrainerDKMPaper.build_network_architecture(manager, manager.get_configuration("2d"), 1, 2, False)
    assert isinstance(network, PaperKineticNet)
    assert [block.convs[0][0].out_channels for block in network.blocks] == [128, 256, 512, 1024]
    assert [block.adapter is not None for block in network.blocks] == [False, False, True, True]  # f3 + f4
    assert network.decoder.deep_supervision is False
