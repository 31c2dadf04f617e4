"""What a DM learns (objective: kinetic, pre-only, regression) and which clean image it makes (target: post,
enhancement): pretraining, checkpoints, features, synthesis and the trainers that need each DM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import PHANTOM_ID, randomised_network, tiny_config

from nnunet_dkm.diffusion.checkpoint import load_network
from nnunet_dkm.diffusion.config import OBJECTIVES, DiffusionConfigError, InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.estimates import dm_ddim_estimate, dm_one_step_estimate
from nnunet_dkm.diffusion.features import KineticFeatureExtractor, walk_unet
from nnunet_dkm.diffusion.network import ddim_sample, make_ddpm_scheduler
from nnunet_dkm.paths import dm_checkpoint_location
from pretrain_dm.settings import PretrainSettings
from pretrain_dm.training import DmPretrainer

SCALING = InputScaling(0.5, 0.0)


def pretrain(objective: str, steps: int = 2, overwrite: bool = False, **changes) -> DmPretrainer:
    settings = PretrainSettings(dataset_id=PHANTOM_ID, config_overrides={"channels": (16, 32, 32, 32)}, steps=steps,
                                batch_size=2, patch_size=(32, 32), sample_ddim_steps=1, objective=objective,
                                **changes)
    return DmPretrainer(settings, overwrite=overwrite, progress=False)


@pytest.fixture
def writable_phantom(planned_phantom: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The planned phantom with its own dkm folder (DMs are written where the trainers look)."""
    import shutil

    for name, folder in planned_phantom.items():
        shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("dkm"))
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    return next((tmp_path / "nnUNet_preprocessed").glob(f"Dataset{PHANTOM_ID}_*"))


@pytest.mark.parametrize("objective, name", [("kinetic", "dm_checkpoint.pt"),
                                             ("pre-only", "dm_checkpoint_pre-only.pt"),
                                             ("regression", "dm_checkpoint_regression.pt")])
def test_each_objective_has_its_own_checkpoint_file_and_round_trips(writable_phantom: Path, objective: str,
                                                                    name: str) -> None:
    path = pretrain(objective).run()
    assert path == writable_phantom / "dkm" / "2d" / name
    assert dm_checkpoint_location(writable_phantom, "2d", objective).path == path
    network, checkpoint = load_network(path)
    assert checkpoint.config.objective == objective and checkpoint.metadata["objective"] == objective
    assert checkpoint.config.prediction_type == ("sample" if objective == "regression" else "v_prediction")
    pre = torch.randn(2, 1, 32, 32)
    if objective == "pre-only":
        with pytest.raises(DiffusionConfigError, match="pre-contrast images"):
            dm_one_step_estimate(network, checkpoint.config, checkpoint.input_scaling, pre)
    else:
        assert dm_ddim_estimate(network, checkpoint.config, checkpoint.input_scaling, pre, steps=2).shape == \
            (2, checkpoint.config.num_post_phases, 32, 32)


def test_the_pre_only_loss_reads_no_post_contrast_voxel_and_the_regression_loss_one_timestep(
        writable_phantom: Path) -> None:
    patches = torch.randn(2, 3, 32, 32)
    noise = torch.randn(2, 2, 32, 32)
    pre_only = pretrain("pre-only")
    garbage = patches.clone()
    garbage[:, 1:] = 1e3 * torch.randn(2, 2, 32, 32)
    timesteps = torch.tensor([10, 700])
    with torch.no_grad():
        assert pre_only._loss(pre_only.network, patches, timesteps, noise) == \
            pre_only._loss(pre_only.network, garbage, timesteps, noise)
        regression = pretrain("regression")
        assert regression._loss(regression.network, patches, timesteps, noise) == \
            regression._loss(regression.network, patches, torch.tensor([999, 3]), noise)
        kinetic = pretrain("kinetic")
        assert kinetic._loss(kinetic.network, patches, timesteps, noise) != \
            kinetic._loss(kinetic.network, garbage, timesteps, noise)


def test_enhancement_target_features_noise_zero_enhancement_and_synthesis_adds_the_pre_contrast_image() -> None:
    config = tiny_config(target="enhancement")
    network = randomised_network(config)
    x = torch.randn(2, 1, 32, 32)
    setting = KineticFeatureConfig(mode="A", levels=(2,), channels_last=False)
    extractor = KineticFeatureExtractor(config, SCALING, setting, network)
    x_pre = SCALING.scale * x
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    abar = make_ddpm_scheduler(config).alphas_cumprod[50]
    x_t = (1 - abar).sqrt() * noise  # the noised identity guess: zero enhancement
    with torch.no_grad():
        expected = walk_unet(network, torch.cat([x_t, x_pre], 1), torch.tensor([50, 50]), (2,)).features[2]
    torch.testing.assert_close(extractor(x)[2], expected)
    estimate = dm_ddim_estimate(network, config, SCALING, x, steps=2)
    clean = ddim_sample(network, config, x_pre, noise.contiguous(), 2)
    torch.testing.assert_close(estimate, (clean + x_pre) / SCALING.scale)


def test_a_trainer_refuses_a_dm_of_another_objective(writable_phantom: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_dkm.training import DkmSetupError
    from nnunet_dkm.training.variants.controls import nnUNetTrainerDKM_preOnlyDM, nnUNetTrainerDKM_regressionDM

    kinetic = pretrain("kinetic").run()
    plans = PlansManager(str(writable_phantom / "nnUNetPlans.json"))
    with pytest.raises(DkmSetupError, match="--objective pre-only"):
        nnUNetTrainerDKM_preOnlyDM.find_dm_checkpoint(plans, "2d", 0)  # none at dm_checkpoint_pre-only.pt
    misplaced = kinetic.with_name("dm_checkpoint_regression.pt")
    shutil.copy(kinetic, misplaced)  # a kinetic DM copied to the regression DM's file
    with pytest.raises(DkmSetupError, match="'regression' objective, but .* was pretrained with 'kinetic'"):
        nnUNetTrainerDKM_regressionDM.find_dm_checkpoint(plans, "2d", 0)
    misplaced.unlink()
    pretrain("pre-only").run()
    location, checkpoint = nnUNetTrainerDKM_preOnlyDM.find_dm_checkpoint(plans, "2d", 0)
    assert location.path.name == "dm_checkpoint_pre-only.pt" and checkpoint.config.objective == "pre-only"


def test_feature_mode_c_needs_a_kinetic_dm() -> None:
    with pytest.raises(DiffusionConfigError, match="mode C"):
        KineticFeatureConfig(mode="C").check_against(tiny_config(objective="regression", prediction_type="sample"))
    with pytest.raises(DiffusionConfigError, match="prediction_type must be 'sample'"):
        tiny_config(objective="regression")


def test_a_fold_is_refused_where_the_model_folder_holds_folds_of_a_dm_with_another_target(
        writable_phantom: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_dkm.architecture.builder import make_plans_block
    from nnunet_dkm.diffusion.checkpoint import load_checkpoint
    from nnunet_dkm.training import DkmSetupError
    from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    post_dm = load_checkpoint(pretrain("kinetic", target="post").run())
    plans = json.loads((writable_phantom / "nnUNetPlans.json").read_text())
    plans["configurations"]["2d"]["dkm"] = make_plans_block(post_dm, KineticFeatureConfig(), "elsewhere")
    model_folder = tmp_path / "results" / writable_phantom.name / "nnUNetTrainerDKM__nnUNetPlans__2d"
    model_folder.mkdir(parents=True)
    (model_folder / "plans.json").write_text(json.dumps(plans))
    manager = PlansManager(str(writable_phantom / "nnUNetPlans.json"))
    nnUNetTrainerDKM.find_dm_checkpoint(manager, "2d", 1)  # the same DM config: another fold may join
    pretrain("kinetic", overwrite=True, target="enhancement").run()
    with pytest.raises(DkmSetupError, match="another config \\(target differ"):
        nnUNetTrainerDKM.find_dm_checkpoint(manager, "2d", 1)


def test_the_probe_puts_the_pre_only_and_regression_dms_beside_the_untrained_one(
        writable_phantom: Path, tmp_path: Path) -> None:
    import pandas as pd

    from nnunet_dkm.probe.cli import main
    from nnunet_dkm.probe.settings import setting_of

    for objective in OBJECTIVES:
        pretrain(objective).run()
    output = tmp_path / "probe"
    main(["-d", str(PHANTOM_ID), "-c", "2d", "--controls", "pre-only", "regression", "--classifiers", "logistic",
          "-o", str(output)])
    code = setting_of(KineticFeatureConfig()).code
    rows = set(pd.read_csv(output / "results.csv")["row"])
    assert {f"pretrained DM {code}", f"untrained DM {code}", f"pre-only DM {code}", f"regression DM {code}"} <= rows
    compared = pd.read_csv(output / "results_comparisons.csv")
    against = set(compared[compared["model"] == "pretrained"]["reference"])
    assert {f"untrained DM {code}", "filter bank", f"pre-only DM {code}", f"regression DM {code}"} <= against
    measured = compared[compared["cases"] >= 2]
    assert (measured["interval_low"] <= measured["mean_difference"]).all()
    assert compared[compared["cases"] < 2]["interval_low"].isna().all()  # one report case: no interval
    assert "95 % interval over cases" in (output / "results.md").read_text()


def test_with_the_checkpoint_variable_set_each_objective_keeps_its_own_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path / "my_dm.pt"))
    paths = {objective: dm_checkpoint_location(tmp_path / "Dataset990_X", "2d", objective).path
             for objective in OBJECTIVES}
    assert paths == {"kinetic": tmp_path / "my_dm.pt", "pre-only": tmp_path / "my_dm_pre-only.pt",
                     "regression": tmp_path / "my_dm_regression.pt"}


@pytest.mark.parametrize("target", ["post", "enhancement"])
def test_the_benchmark_report_states_the_dms_target_from_its_checkpoint(writable_phantom: Path, target: str) -> None:
    import argparse

    from nnunet_dkm.evaluation.benchmark.cli import checked_dms, dm_note
    from nnunet_dkm.evaluation.benchmark.methods import DEFAULT_METHODS, TrainerChoice, plan_methods

    pretrain("kinetic", target=target).run()
    args = argparse.Namespace(configuration="2d", num_labelled=None, allow_labelled_dm=False, plans="nnUNetPlans",
                              allow_unfinished_dm=False)
    methods = plan_methods(TrainerChoice(), post_phase=1, selected=DEFAULT_METHODS)
    found = checked_dms(args, writable_phantom, writable_phantom, methods)
    assert f"target {target}," in dm_note("kinetic", found["kinetic"])


def test_the_benchmark_refuses_a_dm_that_stopped_before_its_recipes_steps_unless_allowed(
        writable_phantom: Path) -> None:
    import argparse

    from nnunet_dkm.evaluation.benchmark.cli import BenchmarkError, checked_dms, dm_note
    from nnunet_dkm.evaluation.benchmark.methods import DEFAULT_METHODS, TrainerChoice, plan_methods

    path = pretrain("kinetic", steps=5, max_minutes=1e-9).run()  # the time cap stops it after its first step
    args = argparse.Namespace(configuration="2d", num_labelled=None, allow_labelled_dm=False, plans="nnUNetPlans",
                              allow_unfinished_dm=False)
    methods = plan_methods(TrainerChoice(), post_phase=1, selected=DEFAULT_METHODS)
    with pytest.raises(BenchmarkError, match=rf"{path} stopped at step 1 of its recipe's 5 .*nnUNetv2_dkm_pretrain -d "
                                             rf"{PHANTOM_ID} -c 2d --continue, or pass --allow-unfinished-dm"):
        checked_dms(args, writable_phantom, writable_phantom, methods)
    args.allow_unfinished_dm = True
    found = checked_dms(args, writable_phantom, writable_phantom, methods)
    assert "1 of its recipe's 5 pretraining steps (stopped early)" in dm_note("kinetic", found["kinetic"])
    pretrain("kinetic", steps=5, overwrite=True).run()
    args.allow_unfinished_dm = False
    assert ", 5 pretraining steps," in dm_note("kinetic", checked_dms(args, writable_phantom, writable_phantom,
                                                                      methods)["kinetic"])


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerDKM", "nnUNetTrainerDKM_untrainedDM"])
def test_the_dkm_trainer_log_warns_of_a_dm_that_stopped_before_its_recipes_steps(
        writable_phantom: Path, monkeypatch: pytest.MonkeyPatch, trainer_name: str) -> None:
    from conftest import EXT_TRAINER_FOLDER
    from nnunetv2.run.run_training import get_trainer_from_args

    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_FOLDER))
    pretrain("kinetic", steps=5, max_minutes=1e-9).run()  # the time cap stops it after its first step
    trainer = get_trainer_from_args(str(PHANTOM_ID), "2d", 0, trainer_name, device=torch.device("cpu"))
    trainer.initialize()
    log = Path(trainer.log_file).read_text()
    assert "target, 1 of its recipe's 5 pretraining steps (stopped early))" in log
    warned = f"stopped at step 1 of its recipe's 5 (interrupted, or --max-minutes); finish it with: " \
             f"nnUNetv2_dkm_pretrain -d {PHANTOM_ID} -c 2d --continue"
    assert (f"DKM: WARNING: the DM at {writable_phantom / 'dkm' / '2d' / 'dm_checkpoint.pt'} {warned}" in log) == \
        (trainer_name == "nnUNetTrainerDKM")  # the untrained control uses only the DM's shape
