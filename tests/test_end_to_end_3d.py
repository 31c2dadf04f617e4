"""DKM in nnU-Net's 3d_fullres configuration through nnU-Net's real commands, on CPU, on a tiny phantom made here.

plan_and_preprocess -c 3d_fullres -> nnUNetv2_dkm_pretrain -c 3d_fullres (the 2D DM on slices of the 3d_fullres
volumes) -> nnUNetv2_train 3d_fullres -tr nnUNetTrainerDKM_debug -> nnUNetv2_predict -c 3d_fullres ->
nnUNetv2_dkm_benchmark -c 3d_fullres; and the refusals (a 2d DM, the paper's 2D module) before any output folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from conftest import journey_environment
from conftest import run_command as run

from dataset_conversion.phantom.synthesize import synthesize_dataset
from nnunet_dkm.diffusion.checkpoint import load_checkpoint, plans_identity, save_checkpoint

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a command-line journey: minutes of nnU-Net planning, training and prediction
DATASET = 994
CONFIGURATION = "3d_fullres"
TRAINER = "nnUNetTrainerDKM_debug"


def train(env: dict[str, str], trainer: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "nnUNetv2_train"), str(DATASET), CONFIGURATION, "0", "-tr", trainer, "-device", "cpu"], env,
               expect_ok)


def results_content(root: Path) -> list[str]:
    return sorted(str(path) for path in (root / "nnUNet_results").rglob("*"))


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("journey_3d")
    env = journey_environment(root)
    raw = synthesize_dataset(DATASET, seed=5, num_train=5, num_test=2, num_unlabelled=2, shape=(48, 48, 8),
                             raw_folder=root / "nnUNet_raw", verbose=False)
    run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", CONFIGURATION, "-npfp", "1", "-np",
         "1", "--no_pbar"], env)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process (planning needs > 0)
    paper = train(env, "nnUNetTrainerDKMPaper_debug", expect_ok=False)
    left_by_paper = results_content(root)
    pretrained = run([str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET), "-c", CONFIGURATION, "--steps", "3",
                      "--batch-size", "2", "--patch-size", "32", "32", "--channels", "16", "32", "32", "32"], env)

    # a DM pretrained for the 2d configuration of the same plans: its checkpoint records the 2d identity
    preprocessed = next((root / "nnUNet_preprocessed").glob(f"Dataset{DATASET}_*"))
    checkpoint_3d = load_checkpoint(preprocessed / "dkm" / CONFIGURATION / "dm_checkpoint.pt")
    checkpoint_2d = load_checkpoint(preprocessed / "dkm" / CONFIGURATION / "dm_checkpoint.pt")
    checkpoint_2d.plans_identity = plans_identity(json.loads((preprocessed / "nnUNetPlans.json").read_text()), "2d")
    two_d = save_checkpoint(checkpoint_2d, preprocessed / "dkm" / "2d" / "dm_checkpoint.pt")
    wrong_dm = train({**env, "nnUNet_dkm_checkpoint": str(two_d)}, TRAINER, expect_ok=False)
    left_by_wrong_dm = results_content(root)

    train(env, TRAINER)
    results = next((root / "nnUNet_results").glob(f"Dataset{DATASET}_*")) / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
    return {"root": root, "env": env, "raw": raw, "results": results, "preprocessed": preprocessed,
            "pretrained": pretrained, "checkpoint": checkpoint_3d, "paper": paper, "left_by_paper": left_by_paper,
            "wrong_dm": wrong_dm, "two_d": two_d, "left_by_wrong_dm": left_by_wrong_dm}


def test_pretraining_learns_from_slices_of_the_3d_fullres_volumes(journey: dict) -> None:
    checkpoint = journey["checkpoint"]
    assert checkpoint.config.spatial_dims == 2
    assert checkpoint.plans_identity["configuration"] == CONFIGURATION
    assert checkpoint.metadata["slice_axis"] == 0 and checkpoint.metadata["configuration_spatial_dims"] == 3
    assert checkpoint.metadata["patch_size"] == [32, 32]
    assert (journey["preprocessed"] / "dkm" / CONFIGURATION / "cache" / "manifest.json").is_file()
    assert f"nnUNetv2_train {DATASET} {CONFIGURATION} 0 -tr nnUNetTrainerDKM" in journey["pretrained"].stdout


def test_the_papers_2d_module_is_refused_before_any_output_folder(journey: dict) -> None:
    result = journey["paper"]
    assert result.returncode != 0
    assert f"nnUNetv2_train Dataset{DATASET}_DKMPhantom 2d 0 -tr nnUNetTrainerDKMPaper_debug" in result.stderr
    assert journey["left_by_paper"] == []


def test_a_2d_dm_is_refused_with_the_file_and_the_pretraining_command(journey: dict) -> None:
    result = journey["wrong_dm"]
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert str(journey["two_d"]) in output
    assert "configuration: checkpoint '2d', in use '3d_fullres'" in output
    assert f"nnUNetv2_dkm_pretrain -d {DATASET} -c {CONFIGURATION}" in output
    assert journey["left_by_wrong_dm"] == []


def test_training_writes_nnunet_outputs_with_the_dm_inside(journey: dict) -> None:
    fold = journey["results"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    for key, value in journey["checkpoint"].weights.items():  # the frozen DM, unchanged by training
        torch.testing.assert_close(weights[f"kinetic.network.{key}"], value, rtol=0, atol=0)
    assert any(key.startswith("fusions.") for key in weights)
    block = json.loads((journey["results"] / "plans.json").read_text())["configurations"][CONFIGURATION]["dkm"]
    assert block["slice_axis"] == 0 and block["dm_config"]["spatial_dims"] == 2
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "slice by slice across axis 0" in log


@pytest.fixture(scope="module")
def benchmark(journey: dict) -> dict:
    """``nnUNetv2_dkm_benchmark -c 3d_fullres --schedule debug``: trains vanilla nnU-Net, the untrained-DM control and
    the post-contrast oracle (its dataset planned for 3d_fullres), reuses the DKM model, predicts the test split with
    ``nnUNetv2_predict -c 3d_fullres -npp 0 -nps 0``, applies the rules and scores."""
    output = journey["root"] / "benchmark"
    result = run([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", CONFIGURATION, "-f", "0",
                  "--schedule", "debug", "-device", "cpu", "-o", str(output)], journey["env"])
    return {"output": output, "stdout": result.stdout}


def test_predict_keeps_the_input_geometry(journey: dict, benchmark: dict) -> None:
    predict = next(line for line in benchmark["stdout"].splitlines() if line.startswith("$ ")
                   and "nnUNetv2_predict" in line and f"-tr {TRAINER} " in line)
    assert f"-c {CONFIGURATION} " in predict and "-npp 0 -nps 0" in predict
    predictions = benchmark["output"] / "predictions" / "dkm" / "fold_0"
    images = sorted((journey["raw"] / "imagesTs").iterdir())
    assert len(images) == 2
    for image_file in images:
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(predictions / image_file.name.replace("_0000.nii.gz", ".nii.gz")))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
        assert np.allclose(prediction.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}


def test_benchmark_runs_the_comparison_in_3d_fullres(journey: dict, benchmark: dict) -> None:
    output = benchmark["output"]
    assert f"reusing {journey['results'] / 'fold_0'}" in benchmark["stdout"]  # the DKM model trained above
    per_case = pd.read_csv(output / "per_case.csv")
    assert {"vanilla", "dkm", "untrained_dm_control", "oracle_post_contrast", "all_tissue",
            "label_rule_post_contrast"} <= set(per_case["method"])
    assert (per_case.groupby("method").size() == 2).all()  # 2 test cases, 1 fold
    assert per_case["dice"].between(0, 1).all()
    paired = pd.read_csv(output / "paired.csv")
    assert {("dkm", "vanilla"), ("dkm", "untrained_dm_control")} <= set(zip(paired["method"], paired["reference"],
                                                                             strict=True))
    assert f"Dataset{DATASET}_DKMPhantom, {CONFIGURATION}" in (output / "results.md").read_text()
    results = journey["root"] / "nnUNet_results"
    for dataset, trainer in ((f"Dataset{DATASET}_", "nnUNetTrainer_debug"),
                             (f"Dataset{DATASET}_", "nnUNetTrainerDKM_untrainedDM_debug"),
                             ("Dataset*PostContrastOracle", "nnUNetTrainer_debug")):
        folder = next(results.glob(f"{dataset}*")) / f"{trainer}__nnUNetPlans__{CONFIGURATION}"
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
