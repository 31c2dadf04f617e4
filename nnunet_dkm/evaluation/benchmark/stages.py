"""The benchmark's run stages: each network run trained where missing, predicted on the evaluated cases and scored
(one run after another, so a stopped benchmark keeps every run it finished); the rules without a network applied and
scored.

Trained models are reused and interrupted trainings resumed (``TrainedModel``); predictions and rule masks are
written to ``<folder>.partial`` and renamed when complete, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_dkm.evaluation.baselines import IntensityWindow, all_tissue_baseline, label_rule_on_post_contrast
from nnunet_dkm.evaluation.benchmark.cases import Case, read_array
from nnunet_dkm.evaluation.benchmark.methods import RULES, Method
from nnunet_dkm.evaluation.metrics import case_metrics
from nnunet_dkm.evaluation.nnunet_runs import TrainedModel, nnunet_command, run_command
from nnunet_dkm.paths import dataset_id


def stage(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


REPEATS_FOLDER = "dkm_benchmark_repeats"


def repeat_results_root(source_name: str, repeat: int) -> Path | None:
    """Where repeat ``repeat`` of every model lives: nnU-Net's own ``$nnUNet_results`` for repeat 0 (so a model that
    ``nnUNetv2_train`` made is reused), ``$nnUNet_results/<source dataset>/dkm_benchmark_repeats/repeat_<r>`` for
    the others (used as ``nnUNet_results`` by the commands that train and predict them)."""
    if repeat == 0:
        return None
    return Path(os.environ["nnUNet_results"]) / source_name / REPEATS_FOLDER / f"repeat_{repeat}"


def model_of(method: Method, fold: int, repeat: int, datasets: dict[str | None, Path], plans: str,
             configuration: str) -> TrainedModel:
    """The nnU-Net model of a network row in one run (a companion's lives in its companion dataset).

    ``datasets`` maps ``None`` to the benchmarked raw dataset and each companion name to its raw dataset.
    """
    folder = datasets.get(method.companion)
    if folder is None:
        raise ValueError(f"{method.info.key} needs the {method.companion} dataset")
    return TrainedModel(dataset_id(folder.name), folder.name, method.trainer, plans, configuration, fold,
                        repeat_results_root(datasets[None].name, repeat))


def ensure_planned(raw: Path, configuration: str, plans: str) -> Path:
    """The preprocessed folder of a raw dataset, running ``nnUNetv2_plan_and_preprocess`` where it is missing."""
    folder = Path(os.environ["nnUNet_preprocessed"]) / raw.name
    if not (folder / f"{plans}.json").is_file():
        run_command([nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id(raw.name)), "-c",
                     configuration, "-np", "1", "-npfp", "1", "--verify_dataset_integrity"],
                    unset=("nnUNet_n_proc_DA",))  # nnU-Net's planner sets torch threads from it: 0 fails
    return folder


RunKey = tuple[str, int, int]  # (method key, nnU-Net fold, repeat)


def network_runs(methods: list[Method], folds: list[int], repeats: int,
                 recorded: frozenset[RunKey] = frozenset()) -> list[tuple[Method, int, int]]:
    """Every network row's run still to make as (method, fold, repeat): repeat by repeat, then fold by fold, so that
    an interrupted benchmark has whole repeats first. Runs in ``recorded`` (their study record exists) are left out."""
    return [(method, fold, repeat) for repeat in range(repeats) for fold in folds for method in methods
            if method.trainer and (method.info.key, fold, repeat) not in recorded]


def train_run(model: TrainedModel, device: str) -> float | None:
    """Train one run's model where it is missing (resume it where interrupted); its wall seconds, or None for a model
    that existed already."""
    existed = model.is_trained
    start = time.monotonic()
    model.train(device)
    return None if existed else time.monotonic() - start


def prediction_folder(output: Path, key: str, fold: int, repeat: int) -> Path:
    """``predictions/<method>/fold_<k>`` (repeat 0) or ``fold_<k>_repeat_<r>``."""
    return output / "predictions" / key / (f"fold_{fold}" if repeat == 0 else f"fold_{fold}_repeat_{repeat}")


def predict_run(method: Method, trained: TrainedModel, repeat: int, fold_cases: list[Case], images: Path, device: str,
                output: Path, test_split: bool, file_ending: str) -> Path:
    """One run's prediction folder: the fold's evaluated cases of the test split (in ``images``) predicted into
    ``output/predictions``, or, without a test split, nnU-Net's own validation predictions."""
    if not test_split:
        return trained.fold_folder / "validation"
    target = prediction_folder(output, method.info.key, trained.fold, repeat)
    return trained.predict(images, target, device, [c.case_id for c in fold_cases], file_ending)


def rule_predictions_complete(target: Path, cases: list[Case], key: str, file_ending: str) -> bool:
    """Whether ``target`` holds the rule's mask of every case it applies to."""
    usable = [c for c in cases if key != "label_rule_post_contrast" or c.post is not None]
    return target.is_dir() and all((target / f"{c.case_id}{file_ending}").is_file() for c in usable)


def write_rule_predictions(key: str, masks: dict[str, tuple[sitk.Image, dict[str, np.ndarray]]], target: Path,
                           file_ending: str) -> None:
    """Write the ``key`` masks ``{case: (pre-contrast image, {rule: mask (z, y, x)})}`` on each case's grid into
    ``target``, renamed into place when complete."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for case_id, (pre_image, by_rule) in masks.items():
        if key not in by_rule:
            continue
        mask = sitk.GetImageFromArray(by_rule[key].astype(np.uint8))
        mask.CopyInformation(pre_image)
        sitk.WriteImage(mask, str(partial / f"{case_id}{file_ending}"), useCompression=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def rule_baselines(cases: dict[int, list[Case]], training_cases: dict[int, list[str]], raw: Path, output: Path,
                   file_ending: str) -> dict[tuple[str, int, int], Path]:
    """The rows without a network, per fold: the body mask, the intensity window fitted on the fold's training
    cases (``training_cases[fold]``), and the label rule on post-contrast images. Rules that fit nothing are
    computed once per case."""
    predictions: dict[tuple[str, int, int], Path] = {}
    fold_free_masks: dict[str, dict[str, np.ndarray]] = {}
    for fold, fold_cases in cases.items():
        targets = {key: output / "predictions" / key / f"fold_{fold}" for key in RULES}
        predictions.update({(key, fold, 0): target for key, target in targets.items()})
        if all(rule_predictions_complete(target, fold_cases, key, file_ending) for key, target in targets.items()):
            continue
        window = IntensityWindow.fit(
            (read_array(raw / "imagesTr" / f"{c}_0000{file_ending}")[0],
             read_array(raw / "labelsTr" / f"{c}{file_ending}")[0]) for c in sorted(training_cases[fold]))
        print(f"fold {fold}: intensity window [{window.low:.2f}, {window.high:.2f}] (body-standardised units)")
        masks = {}
        for case in fold_cases:
            pre_image = sitk.ReadImage(str(case.pre))
            pre = sitk.GetArrayFromImage(pre_image).astype(np.float32)
            if case.case_id not in fold_free_masks:
                fold_free_masks[case.case_id] = {"all_tissue": all_tissue_baseline(pre)}
                if case.post is not None:
                    fold_free_masks[case.case_id]["label_rule_post_contrast"] = label_rule_on_post_contrast(
                        pre, read_array(case.post)[0])
            masks[case.case_id] = (pre_image, {**fold_free_masks[case.case_id],
                                               "intensity_window": window.predict(pre)})
        for key, target in targets.items():
            write_rule_predictions(key, masks, target, file_ending)
    return predictions


def score(cases: dict[int, list[Case]], predictions: dict[tuple[str, int, int], Path],
          file_ending: str) -> pd.DataFrame:
    """One row per (method, fold, repeat, case) with the metrics of ``CaseMetrics``."""
    rows = []
    for fold, fold_cases in cases.items():
        for case in tqdm(fold_cases, desc=f"fold {fold} cases", unit="case"):
            reference, spacing = read_array(case.label)
            for (key, key_fold, repeat), folder in predictions.items():
                predicted = folder / f"{case.case_id}{file_ending}"
                if key_fold != fold or not predicted.is_file():
                    continue  # e.g. the label rule on a case without post-contrast phase
                metrics = case_metrics(reference > 0, read_array(predicted)[0] > 0, spacing)
                rows.append({"method": key, "fold": fold, "repeat": repeat, "case": case.case_id,
                             **metrics.as_dict()})
    return pd.DataFrame(rows)
