"""KineticUNet3D: the 2D DM slice by slice inside nnU-Net's 3D (3d_fullres) network, built from plans that nnU-Net's
own planner makes (from synthetic fingerprints, so that any spacing can be planned in seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import randomised_network, tiny_config
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dkm.architecture.builder import DKM_PLANS_KEY, MissingDkmBlockError, build_paper_network, make_plans_block
from nnunet_dkm.architecture.kinetic_unet_3d import (
    InPlaneSizeError,
    KineticUNet3D,
    stage_for_level_in_plane,
)
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, plans_identity, save_checkpoint
from nnunet_dkm.diffusion.config import InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, slices_per_chunk, slicewise_kinetic_features
from nnunet_dkm.preprocessing.cache_storage import write_images, write_seg
from nnunet_dkm.preprocessing.dm_cache import CachedExam, slice_facts
from nnunet_dkm.training.nnUNetTrainerDKM import DkmSetupError, nnUNetTrainerDKM, trainable_parameters
from nnunet_dkm.training.variants.paper import nnUNetTrainerDKMPaper

BIN = Path(sys.executable).parent
SCALING = InputScaling(0.5, 0.0)
ANISOTROPIC, ISOTROPIC = 801, 802
RESENC = "ResEncM 801"  # nnU-Net's residual-encoder preset planned for the anisotropic fingerprint
# numpy (z, y, x) order as nnU-Net's fingerprint holds it; the anisotropic one has its coarse axis LAST, so that
# nnU-Net's transpose_forward has to move it first
FINGERPRINTS = {ANISOTROPIC: ((1.0, 1.0, 3.0), (64, 64, 16)), ISOTROPIC: ((1.0, 1.0, 1.0), (32, 32, 32))}
ISSUE_STRIDES = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]  # anisotropic: in-plane first, depth last


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """nnU-Net's plans (``nnUNetv2_plan_experiment``) for an anisotropic and an isotropic synthetic fingerprint."""
    root = tmp_path_factory.mktemp("plans_3d")
    env = {**os.environ}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        env[name] = str(root / name)
    for dataset, (spacing, shape) in FINGERPRINTS.items():
        raw = root / "nnUNet_raw" / f"Dataset{dataset}_Plan3d"
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(parents=True)
        for array, file in ((np.zeros((4, 4, 4), np.float32), raw / "imagesTr" / "case_0000.nii.gz"),
                            (np.zeros((4, 4, 4), np.uint8), raw / "labelsTr" / "case.nii.gz")):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(spacing[::-1])
            sitk.WriteImage(image, str(file))
        (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "pre"}, "numTraining": 1,
                                                      "labels": {"background": 0, "tumour": 1},
                                                      "file_ending": ".nii.gz"}))
        preprocessed = root / "nnUNet_preprocessed" / raw.name
        preprocessed.mkdir()
        intensity = {"max": 3.0, "mean": 0.0, "median": 0.0, "min": -3.0, "percentile_00_5": -2.5,
                     "percentile_99_5": 2.5, "std": 1.0}
        (preprocessed / "dataset_fingerprint.json").write_text(json.dumps({
            "foreground_intensity_properties_per_channel": {"0": intensity}, "median_relative_size_after_cropping": 1,
            "shapes_after_crop": [list(shape)] * 10, "spacings": [list(spacing)] * 10}))
    for planner in ([], ["-pl", "nnUNetPlannerResEncM"]):
        result = subprocess.run([str(BIN / "nnUNetv2_plan_experiment"), "-d", *map(str, FINGERPRINTS), *planner],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    plans = {dataset: json.loads(next((root / "nnUNet_preprocessed").glob(f"Dataset{dataset}_*/nnUNetPlans.json"))
                                 .read_text()) for dataset in FINGERPRINTS}
    plans[RESENC] = json.loads(next((root / "nnUNet_preprocessed").glob(
        f"Dataset{ANISOTROPIC}_*/nnUNetResEncUNetMPlans.json")).read_text())
    return plans


def dkm_plans(plans: dict, levels=(3, 4), slice_axis: int = 0, features_per_stage: list[int] | None = None,
              strides: list | None = None, patch_size: list[int] | None = None, **feature_options) -> PlansManager:
    """The plans with a DM ``"dkm"`` block in 3d_fullres (and optionally narrower stages, other strides or patch)."""
    plans = json.loads(json.dumps(plans))
    configuration = plans["configurations"]["3d_fullres"]
    arch = configuration["architecture"]["arch_kwargs"]
    if strides is not None:
        arch["n_stages"] = len(strides)
        arch["strides"] = strides
        arch["kernel_sizes"] = [[3, 3, 3]] * len(strides)
        arch["n_conv_per_stage"] = [2] * len(strides)
        arch["n_conv_per_stage_decoder"] = [2] * (len(strides) - 1)
        arch["features_per_stage"] = [32 * 2**i for i in range(len(strides))]
    if features_per_stage is not None:
        arch["features_per_stage"] = features_per_stage[:arch["n_stages"]]
    if patch_size is not None:
        configuration["patch_size"] = patch_size
    config = tiny_config(num_post_phases=2)
    checkpoint = DiffusionCheckpoint(config, randomised_network(config).state_dict(), SCALING,
                                     plans_identity(plans, "3d_fullres"), metadata={"slice_axis": slice_axis})
    configuration[DKM_PLANS_KEY] = make_plans_block(checkpoint, KineticFeatureConfig(levels=levels, **feature_options),
                                                    "test")
    return PlansManager(plans)


def build(manager: PlansManager, deep_supervision: bool = False) -> KineticUNet3D:
    network = nnUNetTrainerDKM.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 2,
                                                         deep_supervision)
    assert isinstance(network, KineticUNet3D)
    return network


SMALL = [4, 8, 16, 16, 16, 16]


def fused_shapes(network: KineticUNet3D, x: torch.Tensor) -> dict[int, tuple[tuple, tuple]]:
    """{stage: (stage output shape, pooled DM feature shape)} seen by each fusion in one forward."""
    seen = {}
    hooks = [fusion.register_forward_hook(lambda module, args, out, stage=int(stage): seen.__setitem__(
        stage, (tuple(args[0].shape), tuple(args[1].shape)))) for stage, fusion in network.fusions.items()]
    with torch.no_grad():
        network.eval()(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_nnunet_puts_the_coarse_axis_first_and_the_dm_levels_find_their_stages(planned: dict) -> None:
    plans = planned[ANISOTROPIC]
    assert plans["transpose_forward"] == [2, 0, 1]  # the 3 mm axis (last in the files) becomes axis 0
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["patch_size"][0] < configuration["patch_size"][1] == configuration["patch_size"][2]
    strides = configuration["architecture"]["arch_kwargs"]["strides"]
    assert strides[1] == [1, 2, 2]  # nnU-Net pools in-plane first: anisotropic strides
    network = build(dkm_plans(plans, levels=(1, 2, 3, 4), features_per_stage=SMALL))
    stages = {level: stage_for_level_in_plane(strides, level) for level in (1, 2, 3, 4)}
    assert network.level_of_stage == {stage: level for level, (stage, _) in stages.items()}
    assert network.slice_stride_of_stage == dict(stages.values())


@pytest.mark.parametrize(("fingerprint", "strides", "patch"), [
    (ANISOTROPIC, None, [8, 32, 32]),           # nnU-Net's own anisotropic plan (half its patch)
    (ANISOTROPIC, ISSUE_STRIDES, [4, 16, 16]),  # (1,2,2), (1,2,2), then (2,2,2)
    (ISOTROPIC, None, [16, 16, 16]),            # (2,2,2) at every stage (half nnU-Net's patch)
])
def test_features_are_stacked_per_slice_and_pooled_to_each_stage(planned: dict, fingerprint: int, strides: list | None,
                                                                  patch: list[int]) -> None:
    manager = dkm_plans(planned[fingerprint], levels=(1, 2, 3, 4), features_per_stage=SMALL, strides=strides)
    network = build(manager)
    x = torch.randn(2, 1, *patch)
    features = network.kinetic_features(x)
    for level, channels in network.kinetic.level_channels.items():
        factor = 2 ** (level - 1)
        assert features[level].shape == (2, channels, patch[0], patch[1] // factor, patch[2] // factor)
    seen = fused_shapes(network, x)
    assert sorted(seen) == sorted(network.level_of_stage)
    for stage, (stage_shape, dm_shape) in seen.items():
        level = network.level_of_stage[stage]
        assert dm_shape == (2, network.kinetic.level_channels[level], *stage_shape[2:])
        assert stage_shape[2] == patch[0] // network.slice_stride_of_stage[stage]
    if strides == ISSUE_STRIDES:
        assert network.level_of_stage == {0: 1, 1: 2, 2: 3, 3: 4}
        assert network.slice_stride_of_stage == {0: 1, 1: 1, 2: 1, 3: 2}


def test_residual_encoder_plans_work(planned: dict) -> None:
    manager = dkm_plans(planned[RESENC])
    assert "ResidualEncoderUNet" in manager.get_configuration("3d_fullres").network_arch_class_name
    network = build(manager, deep_supervision=True).eval()
    patch = [size // 2 for size in manager.get_configuration("3d_fullres").patch_size]
    with torch.no_grad():
        outputs = network(torch.randn(1, 1, *patch))
    assert isinstance(outputs, list) and outputs[0].shape == (1, 2, *patch)
    assert sorted(network.level_of_stage.values()) == [3, 4]


def test_depth_pooling_averages_neighbouring_slices() -> None:
    features = torch.arange(2 * 3 * 8 * 4 * 4, dtype=torch.float32).reshape(2, 3, 8, 4, 4)
    def pooled(depth: int) -> torch.Tensor:
        return KineticUNet3D.fit_to_stage(features, torch.empty(2, 3, depth, 4, 4))

    torch.testing.assert_close(pooled(4), 0.5 * (features[:, :, 0::2] + features[:, :, 1::2]))
    torch.testing.assert_close(pooled(8), features, rtol=0, atol=0)
    torch.testing.assert_close(pooled(3)[:, :, 1], features[:, :, 2:6].mean(dim=2))  # sizes nnU-Net would not plan


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_each_slice_gets_the_2d_features_of_that_slice(slice_axis: int) -> None:
    config = tiny_config(num_post_phases=2)
    extractor = KineticFeatureExtractor(config, SCALING, KineticFeatureConfig(levels=(2, 4)),
                                        randomised_network(config))
    x = torch.randn(1, 1, 8, 16, 24)
    features = slicewise_kinetic_features(extractor, x, slice_axis)
    index = 5
    slice_2d = x.select(2 + slice_axis, index)  # [B, 1, a, b]
    expected = extractor(slice_2d)
    for level in (2, 4):
        torch.testing.assert_close(features[level].select(2 + slice_axis, index), expected[level], rtol=1e-5,
                                   atol=1e-5)
        in_plane = [size // 2 ** (level - 1) for axis, size in enumerate(x.shape[2:]) if axis != slice_axis]
        assert features[level].shape[2 + slice_axis] == x.shape[2 + slice_axis]
        assert [s for axis, s in enumerate(features[level].shape[2:]) if axis != slice_axis] == in_plane


def test_chunked_and_unchunked_extraction_give_the_same_features() -> None:
    """Chunks of 1 and 4 slices against all 6 slices in one call: equal to 1e-5 (absolute and relative), the
    float rounding of batched convolution kernels (measured: at most 2.5e-6); feature magnitudes are O(1)."""
    config = tiny_config(num_post_phases=2)
    extractor = KineticFeatureExtractor(config, SCALING, KineticFeatureConfig(levels=(1, 2, 3, 4)),
                                        randomised_network(config))
    x = torch.randn(2, 1, 3, 16, 16)
    whole = slicewise_kinetic_features(extractor, x, chunk_pixels=0)
    assert slices_per_chunk((16, 16), 0, 6) == 6
    for slices in (1, 4):
        assert slices_per_chunk((16, 16), slices * 16 * 16, 6) == slices
        chunked = slicewise_kinetic_features(extractor, x, chunk_pixels=slices * 16 * 16 + 7)
        for level in whole:
            torch.testing.assert_close(chunked[level], whole[level], rtol=1e-5, atol=1e-5)
    assert slices_per_chunk((256, 256), KineticFeatureConfig().slice_chunk_pixels, 1000) == 8
    assert slices_per_chunk((512, 512), 1, 10) == 1  # at least one slice


def test_frozen_dm_stays_frozen_and_in_eval_inside_the_3d_network(planned: dict) -> None:
    network = build(dkm_plans(planned[ANISOTROPIC], features_per_stage=SMALL, strides=ISSUE_STRIDES))
    dm_before = {key: value.clone() for key, value in network.kinetic.state_dict().items()}
    trainable = trainable_parameters(network)
    assert trainable and not {id(p) for p in network.kinetic.parameters()} & {id(p) for p in trainable}
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    network.train()
    assert network.training and not network.kinetic.training and not network.kinetic.network.training
    fusion_before = next(network.fusions.parameters()).clone()
    for _ in range(2):
        optimizer.zero_grad()
        network(torch.randn(2, 1, 4, 16, 16)).square().mean().backward()
        optimizer.step()
    assert not network.kinetic.training and not network.kinetic.network.training
    for key, value in network.kinetic.state_dict().items():
        torch.testing.assert_close(value, dm_before[key], rtol=0, atol=0)
    assert not torch.equal(next(network.fusions.parameters()), fusion_before)
    assert any(key.startswith("kinetic.network.") for key in network.state_dict())  # saved in nnU-Net's checkpoint


def test_deep_supervision_returns_nnunets_list_and_the_switch_works(planned: dict) -> None:
    manager = dkm_plans(planned[ANISOTROPIC])  # nnU-Net's planned widths and strides
    patch = [size // 2 for size in manager.get_configuration("3d_fullres").patch_size]  # half the planned patch
    strides = manager.get_configuration("3d_fullres").network_arch_init_kwargs["strides"]
    network = build(manager, deep_supervision=True).eval()
    with torch.no_grad():
        outputs = network(torch.randn(1, 1, *patch))
    assert isinstance(outputs, list) and len(outputs) == len(strides) - 1
    total = np.ones(3, dtype=int)
    for output, stride in zip(outputs, strides[:-1], strict=True):
        total = total * np.asarray(stride)
        assert output.shape == (1, 2, *(np.asarray(patch) // total))
    network.decoder.deep_supervision = False  # nnU-Net's switch for validation / export
    with torch.no_grad():
        assert network(torch.randn(1, 1, *patch)).shape == (1, 2, *patch)


def test_state_dict_round_trip_through_the_builder(planned: dict) -> None:
    manager = dkm_plans(planned[ISOTROPIC], levels=(2, 3), source="encoder", features_per_stage=SMALL)
    original = build(manager).eval()
    rebuilt = build(manager)
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), original(x))


def test_an_in_plane_size_the_dm_cannot_take_is_refused_at_build_time(planned: dict) -> None:
    manager = dkm_plans(planned[ANISOTROPIC], features_per_stage=SMALL, patch_size=[16, 36, 64])
    with pytest.raises(InPlaneSizeError, match=r"\[16, 36, 64\].*not divisible by 8"):
        build(manager)
    manager = dkm_plans(planned[ISOTROPIC], features_per_stage=SMALL, patch_size=[12, 32, 32])
    assert build(manager).slice_axis == 0  # the slicing axis itself may have any size
    with pytest.raises(InPlaneSizeError, match=r"\[12, 32, 32\].*axes \[0, 2\].*divisible by 8"):
        build(dkm_plans(planned[ISOTROPIC], features_per_stage=SMALL, patch_size=[12, 32, 32], slice_axis=1))


def test_the_trainer_refuses_what_the_network_cannot_take_before_any_output_folder(
        planned: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nnunet_dkm.training.variants.feature_levels import nnUNetTrainerDKM_f2

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    for patch_size, slice_axis, expected in (
        ([16, 36, 64], 0, r"\[16, 36, 64\].*not divisible by 8"),
        (None, 2, r"cut across axis 2: no encoder stage.*nnUNetv2_dkm_pretrain -d 801 -c 3d_fullres --overwrite"),
    ):
        manager = dkm_plans(planned[ANISOTROPIC], patch_size=patch_size, slice_axis=slice_axis)
        block = manager.plans["configurations"]["3d_fullres"].pop(DKM_PLANS_KEY)
        config = tiny_config(num_post_phases=2)
        checkpoint = DiffusionCheckpoint(config, randomised_network(config).state_dict(), SCALING,
                                         plans_identity(manager.plans, "3d_fullres"),
                                         metadata={"slice_axis": slice_axis})
        assert block["slice_axis"] == slice_axis
        path = save_checkpoint(checkpoint, tmp_path / f"dm_axis{slice_axis}.pt")
        monkeypatch.setenv("nnUNet_dkm_checkpoint", str(path))
        with pytest.raises(DkmSetupError, match=expected):  # level f2: a stage at half the in-plane size needed
            nnUNetTrainerDKM_f2.find_dm_checkpoint(PlansManager(manager.plans), "3d_fullres", 0)
    assert not list(tmp_path.rglob("fold_*"))


def test_missing_dkm_block_names_the_model_plans_and_the_command(planned: dict, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    manager = PlansManager(planned[ANISOTROPIC])
    with pytest.raises(MissingDkmBlockError) as error:
        nnUNetTrainerDKM.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 2, False)
    message = str(error.value)
    assert str(tmp_path / "Dataset801_Plan3d" / "nnUNetTrainerDKM__nnUNetPlans__3d_fullres" / "plans.json") in message
    assert "nnUNetv2_train 801 3d_fullres FOLD -tr nnUNetTrainerDKM --c" in message


def test_the_papers_2d_module_is_refused_for_3d_with_the_2d_command(planned: dict) -> None:
    manager = dkm_plans(planned[ANISOTROPIC])
    with pytest.raises(DkmSetupError, match="nnUNetv2_train Dataset801_Plan3d 2d 0 -tr nnUNetTrainerDKMPaper"):
        nnUNetTrainerDKMPaper.check_configuration(manager, "3d_fullres", 0)
    with pytest.raises(ValueError, match="2D"):
        build_paper_network(manager.get_configuration("3d_fullres"), 1, 2)
    nnUNetTrainerDKM.check_configuration(manager, "3d_fullres", 0)  # nnU-Net's planned network takes 3D


def test_a_cascade_stage_is_refused(planned: dict) -> None:
    plans = json.loads(json.dumps(planned[ANISOTROPIC]))
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    with pytest.raises(DkmSetupError, match="cascade.*nnUNetv2_train Dataset801_Plan3d 3d_fullres 0"):
        nnUNetTrainerDKM.check_configuration(PlansManager(plans), "3d_cascade_fullres", 0)


def test_cached_exam_along_another_axis_moves_it_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 6, 8, 10)).astype(np.float32)
    seg = np.zeros((6, 8, 10), np.int8)
    seg[2:4, 5, 3:7] = 1
    images = write_images(tmp_path / "case.b2nd", images)  # the values as stored (float16)
    write_seg(tmp_path / "case_seg.b2nd", seg)
    tumour, enhancement = slice_facts(images, seg)
    exam = CachedExam("case", "labelled", tmp_path / "case.b2nd", tmp_path / "case_seg.b2nd", images.shape,
                      tuple(tumour), tuple(enhancement))
    assert exam.along_axis(0) is exam and exam.tumour_slices == (2, 3)
    for axis, tumour_slices in ((1, (5,)), (2, (3, 4, 5, 6))):
        moved = exam.along_axis(axis)
        loaded, loaded_seg = moved.load()
        np.testing.assert_array_equal(loaded, np.moveaxis(images, 1 + axis, 1))
        np.testing.assert_array_equal(loaded_seg, np.moveaxis(seg, axis, 0))
        assert moved.tumour_slices == tumour_slices and moved.shape == loaded.shape
        assert len(moved.slice_enhancement) == images.shape[1 + axis]
