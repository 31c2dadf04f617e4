"""The whole DKM journey through nnU-Net's real commands, on CPU, on a tiny phantom made here.

plan_and_preprocess -> nnUNetv2_dkm_pretrain -> nnUNetv2_train -tr nnUNetTrainerDKM_debug -> nnUNetv2_predict
on pre-contrast images only -> --val -> --c -> nnUNetv2_dkm_benchmark (trains the other methods, reuses DKM).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import journey_environment, plan_and_preprocess, squeeze
from conftest import run_command as run

from dataset_conversion.phantom.synthesize import synthesize_dataset

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a command-line journey: minutes of nnU-Net planning, training and prediction
DATASET = 995
TRAINER = "nnUNetTrainerDKM_debug"


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("journey")
    env = journey_environment(root)
    raw = synthesize_dataset(DATASET, seed=11, num_train=5, num_test=2, num_unlabelled=2, shape=(64, 64, 4),
                             raw_folder=root / "nnUNet_raw", verbose=False)
    plan_and_preprocess(DATASET, env)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process: no worker start-up cost (planning needs > 0)
    untrained = run([str(BIN / "nnUNetv2_train"), str(DATASET), "2d", "0", "-tr", TRAINER, "-device", "cpu"], env,
                    expect_ok=False)
    left_by_refusal = sorted(str(p) for p in (root / "nnUNet_results").rglob("*"))
    run([str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET), "-c", "2d", "--steps", "3", "--batch-size", "2",
         "--patch-size", "32", "32", "--channels", "16", "32", "32", "32"], env)
    run([str(BIN / "nnUNetv2_train"), str(DATASET), "2d", "0", "-tr", TRAINER, "-device", "cpu"], env)
    results = next((root / "nnUNet_results").glob(f"Dataset{DATASET}_*")) / f"{TRAINER}__nnUNetPlans__2d"
    return {"root": root, "env": env, "raw": raw, "results": results, "untrained": untrained,
            "left_by_refusal": left_by_refusal}


def predict(journey: dict, output: Path) -> None:
    run([str(BIN / "nnUNetv2_predict"), "-i", str(journey["raw"] / "imagesTs"), "-o", str(output), "-d",
         str(DATASET), "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "0", "-nps", "0"],
        journey["env"])


def test_training_without_a_dm_names_the_pretraining_command(journey: dict) -> None:
    result = journey["untrained"]
    assert result.returncode != 0
    assert f"nnUNetv2_dkm_pretrain -d {DATASET} -c 2d" in result.stdout + result.stderr
    assert journey["left_by_refusal"] == []  # no empty fold folder, no log


def test_training_writes_nnunet_outputs_with_the_dm_inside(journey: dict) -> None:
    fold = journey["results"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    assert (fold / "progress.png").is_file()
    import torch

    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert any(key.startswith("kinetic.network.") for key in weights)
    assert "dkm" in (journey["results"] / "plans.json").read_text()


def test_predict_on_precontrast_images_is_deterministic_and_keeps_geometry(journey: dict) -> None:
    first, second = journey["root"] / "pred_1", journey["root"] / "pred_2"
    predict(journey, first)
    predict(journey, second)
    images = sorted((journey["raw"] / "imagesTs").iterdir())
    assert len(images) == 2
    for image_file in images:
        case = image_file.name.replace("_0000.nii.gz", "")
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(first / f"{case}.nii.gz"))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
        assert np.allclose(prediction.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}
        np.testing.assert_array_equal(sitk.GetArrayFromImage(prediction),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(second / f"{case}.nii.gz"))))


def test_validation_only_and_continue_work(journey: dict) -> None:
    summary = journey["results"] / "fold_0" / "validation" / "summary.json"
    summary.unlink()
    run([str(BIN / "nnUNetv2_train"), str(DATASET), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--val"],
        journey["env"])
    assert summary.is_file()
    resumed = run([str(BIN / "nnUNetv2_train"), str(DATASET), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
                  journey["env"])
    assert "checkpoint" in resumed.stdout.lower()
    assert (journey["results"] / "fold_0" / "checkpoint_final.pth").is_file()


METHODS = {"vanilla", "dkm", "untrained_dm_control", "all_tissue", "intensity_window", "oracle_post_contrast",
           "label_rule_post_contrast"}


def test_benchmark_trains_what_is_missing_reports_every_method_and_resumes(journey: dict) -> None:
    output = journey["root"] / "benchmark"
    command = [str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", "2d", "-f", "0", "--schedule", "debug",
               "-device", "cpu", "-o", str(output)]
    first = run(command, journey["env"])
    assert f"reusing {journey['results'] / 'fold_0'}" in first.stdout  # the DKM model trained above
    assert "nnUNetTrainer_debug" in first.stdout and "nnUNetTrainerDKM_untrainedDM_debug" in first.stdout

    per_case = pd.read_csv(output / "per_case.csv")
    assert set(per_case["method"]) == METHODS
    assert (per_case.groupby("method").size() == 2).all()  # 2 test cases, 1 fold
    assert per_case["dice"].between(0, 1).all() and (per_case["hd95_mm"] >= 0).all()
    summary = pd.read_csv(output / "summary.csv").set_index("method")
    assert {"runs", "dice_run_mean", "dice_run_std", "dice_repeat_std"} <= set(summary.columns)  # one runs column
    # the phantom's labels follow the post-contrast rule: the rule on post-contrast images is the ceiling
    assert summary.loc["label_rule_post_contrast", "dice_mean"] > 0.8
    paired = pd.read_csv(output / "paired.csv")
    pairs = set(zip(paired["method"], paired["reference"], strict=True))
    assert {("dkm", "vanilla"), ("dkm", "untrained_dm_control")} <= pairs
    report = (output / "results.md").read_text()
    for stated in (f"Dataset{DATASET}_", "label source: synthetic", "test split", "nnUNetTrainerDKM_debug",
                   "nnUNetTrainerDKM_untrainedDM_debug", f"nnUNetv2_dkm_benchmark -d {DATASET}", "Wilcoxon"):
        assert stated in report
    for figure in ("dice_bars.png", "overlays.png"):
        assert (output / figure).read_bytes()[:4] == b"\x89PNG"

    oracle = next((journey["root"] / "nnUNet_raw").glob("Dataset*PostContrastOracle"))
    assert f"oracle dataset: {oracle.name}" in report
    assert (journey["root"] / "nnUNet_results" / oracle.name / "nnUNetTrainer_debug__nnUNetPlans__2d" / "fold_0"
            / "checkpoint_final.pth").is_file()

    again = run(command, journey["env"])
    assert "$ " not in again.stdout  # no nnU-Net command: every model and prediction is reused
    pd.testing.assert_frame_equal(pd.read_csv(output / "per_case.csv"), per_case)


def test_records_let_a_fresh_folder_rebuild_the_benchmark_without_training(journey: dict, tmp_path: Path) -> None:
    records = journey["root"] / "records" / "study"
    command = [str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", "2d", "-f", "0", "--schedule", "debug",
               "--methods", "vanilla", "dkm", "oracle", "baselines", "-device", "cpu", "--records", str(records)]
    first = run([*command, "-o", str(journey["root"] / "recorded")], journey["env"])
    assert "0 of 3 network runs recorded" in first.stdout
    # each run is recorded as soon as it is scored, before the next run trains: a stopped benchmark keeps its runs
    runs_log = first.stdout[first.stdout.index("=== 1/3 network runs"):]
    assert runs_log.index(f"record written: {records / 'vanilla__'}") < runs_log.index("nnUNetTrainerDKM_debug")
    written = sorted(p.name for p in records.glob("*.json"))
    assert [name.split("__")[0] for name in written] == ["dkm", "oracle_post_contrast", "vanilla"]
    record = json.loads(next(records.glob("dkm__*.json")).read_text())
    assert record["identity"]["trainer"] == TRAINER and len(record["identity"]["dm_sha256"]) == 64
    assert len(record["per_case"]) == 2 and record["commit"] and record["machine"]
    scored = pd.read_csv(journey["root"] / "recorded" / "per_case.csv")
    assert len(scored) == 12 and not scored.duplicated(["method", "fold", "repeat", "case"]).any()  # 6 methods

    # another machine: the same dataset and DM, no nnU-Net results, only the records
    fresh = tmp_path / "fresh"
    env = {**journey["env"], "nnUNet_results": str(fresh / "nnUNet_results")}
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(journey["root"] / name, fresh / name,
                        ignore=shutil.ignore_patterns("*PostContrastOracle*", "*VirtualContrast*"))
        env[name] = str(fresh / name)
    (fresh / "nnUNet_results").mkdir()
    copied = shutil.copytree(records, fresh / "records")
    again = run([*command[:-1], str(copied), "-o", str(fresh / "benchmark")], env)
    assert "3 of 3 network runs recorded" in again.stdout
    assert "$ " not in again.stdout  # no nnU-Net command: nothing trained or predicted, no oracle dataset made
    assert not any((fresh / "nnUNet_results").iterdir())
    rebuilt = pd.read_csv(fresh / "benchmark" / "per_case.csv").sort_values(["method", "case"], ignore_index=True)
    original = pd.read_csv(journey["root"] / "recorded" / "per_case.csv").sort_values(["method", "case"],
                                                                                      ignore_index=True)
    pd.testing.assert_frame_equal(rebuilt, original)


def test_label_efficiency_trains_every_method_on_nested_subsets(journey: dict) -> None:
    output = journey["root"] / "label_efficiency"
    command = [str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", "2d", "-f", "0", "--schedule", "debug",
               "-device", "cpu", "-o", str(output), "--num-labelled", "2", "all"]
    refused = run(command, journey["env"], expect_ok=False)
    assert refused.returncode != 0 and "--label-free" in refused.stderr and "Traceback" not in refused.stderr

    result = run([*command, "--allow-labelled-dm"], journey["env"])
    splits_file = next((journey["root"] / "nnUNet_preprocessed").glob(f"Dataset{DATASET}_*")) / "splits_final.json"
    splits = json.loads(splits_file.read_text())
    assert len(splits) == 6 and len(splits[5]["train"]) == 2
    assert set(splits[5]["train"]) < set(splits[0]["train"]) and splits[5]["val"] == sorted(splits[0]["val"])
    assert f"reusing {journey['results'] / 'fold_0'}" in result.stdout  # N = all is fold 0, trained above
    assert (journey["results"] / "fold_5" / "checkpoint_final.pth").is_file()
    per_case = pd.read_csv(output / "per_case_label_efficiency.csv", dtype={"num_labelled": str})
    assert set(per_case["num_labelled"]) == {"2", "all"} and set(per_case["fold"]) == {0}
    assert {"vanilla", "dkm", "untrained_dm_control", "oracle_post_contrast"} <= set(per_case["method"])
    overview = squeeze((output / "label_efficiency.md").read_text())
    assert "DKM − untrained-DM control" in overview and "| 2 | 2 |" in overview
    assert (output / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    for label in ("2", "all"):
        assert "Wilcoxon" in (output / f"n_{label}" / "results.md").read_text()


def test_repeats_give_run_level_verdicts_for_the_dm_controls_and_virtual_contrast_and_resume(journey: dict) -> None:
    env, root = journey["env"], journey["root"]
    for objective in ("pre-only", "regression"):
        run([str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET), "-c", "2d", "--steps", "3", "--batch-size", "2",
             "--patch-size", "32", "32", "--channels", "16", "32", "32", "32", "--objective", objective], env)
    output = root / "repeats"
    command = [str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", "2d", "-f", "0", "--schedule", "debug",
               "--repeats", "2", "--methods", "vanilla", "dkm", "pre-only-dm", "regression-dm", "virtual-contrast",
               "--synthesis-ddim-steps", "2", "-device", "cpu", "-o", str(output)]
    first = run(command, env)
    assert f"reusing {journey['results'] / 'fold_0'}" in first.stdout  # repeat 0 of DKM: the model trained above
    per_case = pd.read_csv(output / "per_case.csv")
    assert set(per_case["repeat"]) == {0, 1}
    assert set(per_case["method"]) == {"vanilla", "dkm", "pre_only_dm_control", "regression_dm_control",
                                       "virtual_contrast"}
    assert (per_case.groupby(["method", "repeat"]).size() == 2).all()  # 2 test cases per run
    dataset = journey["results"].parent.name
    repeat_1 = root / "nnUNet_results" / dataset / "dkm_benchmark_repeats" / "repeat_1"
    vanilla_1 = repeat_1 / dataset / "nnUNetTrainer_debug__nnUNetPlans__2d" / "fold_0"
    assert (vanilla_1 / "checkpoint_final.pth").is_file()
    run_level = pd.read_csv(output / "run_level.csv")
    pairs = set(zip(run_level["method"], run_level["reference"], strict=True))
    assert {("dkm", "vanilla"), ("dkm", "pre_only_dm_control"), ("dkm", "regression_dm_control"),
            ("dkm", "virtual_contrast")} <= pairs
    assert (run_level["runs"] == 2).all()
    assert set(run_level["verdict_class"]) <= {"better", "worse", "no detectable difference", "no verdict"}
    assert (run_level["command"] == shlex.join(["nnUNetv2_dkm_benchmark", *command[1:]])).all()
    for objective in ("kinetic", "pre-only", "regression"):
        assert f"{objective} DM (" in run_level["dms"].iloc[0]
    report = (output / "results.md").read_text()
    assert "Comparisons over training runs" in report and "conditional on the trained models" in report
    assert "| fold 0 / r 0 | fold 0 / r 1 |" in squeeze(report)
    virtual = next((root / "nnUNet_raw").glob("Dataset*VirtualContrast"))
    assert f"virtual-contrast dataset: {virtual.name}" in report and "s per case" in report

    # a repeat killed after its last checkpoint: it resumes with --c; everything else is reused
    (vanilla_1 / "checkpoint_final.pth").rename(vanilla_1 / "checkpoint_latest.pth")
    shutil.rmtree(output / "predictions" / "vanilla" / "fold_0_repeat_1")
    again = run(command, env)
    commands = [line for line in again.stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2  # train repeat 1 of vanilla, predict it
    assert f"nnUNet_results={repeat_1}" in commands[0] and "nnUNetTrainer_debug" in commands[0]
    assert commands[0].endswith("--c")
    pd.testing.assert_frame_equal(pd.read_csv(output / "per_case.csv"), per_case)
