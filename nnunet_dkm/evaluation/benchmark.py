"""``nnUNetv2_dkm_benchmark``: DKM against vanilla nnU-Net on one split, with controls, ceilings and baselines.

    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 1 2            # full nnU-Net schedules (GPU)
    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 1 --schedule demo -device cpu
    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 --ablation     # + the paper's Table 2 over DM feature levels

Methods, all evaluated on the same cases (the test split ``imagesTs/labelsTs``; without one, each fold's
validation cases):

- vanilla nnU-Net on the pre-contrast image (``nnUNetTrainer``), DKM (``nnUNetTrainerDKM``), and the control that
  separates learned kinetics from extra capacity (``nnUNetTrainerDKM_untrainedDM``: same network, random frozen DM);
- optionally DKM with other DM feature levels (``nnUNetTrainerDKM_f{levels}``);
- the post-contrast ceiling: nnU-Net trained on the first post-contrast phase (a companion dataset made here) and
  the label rule on post-contrast images;
- pre-contrast baselines without a network: all tissue, and the best intensity window of the training cases.

Models that exist are reused, missing ones are trained with ``nnUNetv2_train`` (resumed with ``--c``), so an
interrupted benchmark continues where it stopped. Writes ``results.md``, ``per_case.csv``, ``summary.csv``,
``paired.csv``, ``dice_bars.png`` and ``overlays.png`` to the output folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from dataset_conversion.raw_dataset import dataset_id_of
from nnunet_dkm.diffusion.checkpoint import pretrain_command
from nnunet_dkm.diffusion.locations import dm_checkpoint_path
from nnunet_dkm.diffusion.preprocessed_space import PreprocessedSpaceError, find_dataset_folder
from nnunet_dkm.evaluation.baselines import IntensityWindow, all_tissue_baseline, label_rule_on_post_contrast
from nnunet_dkm.evaluation.metrics import case_metrics
from nnunet_dkm.evaluation.nnunet_runs import NnunetRunError, TrainedModel, nnunet_command, run_command
from nnunet_dkm.evaluation.oracle import OracleDatasetError, copy_split_file, make_oracle_dataset
from nnunet_dkm.evaluation.report import (
    BenchmarkContext,
    MethodInfo,
    dice_bar_chart,
    markdown_report,
    overlay_figure,
    write_atomically,
)
from nnunet_dkm.evaluation.statistics import paired_comparison, summarise

DEFAULT_ABLATION = ("1", "2", "3", "4", "1234")
DKM_DEFAULT_LEVELS = "34"
P_THRESHOLD = 0.05


class BenchmarkError(Exception):
    """The benchmark cannot go on; the message names what is missing and the command that fixes it."""


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: a trained nnU-Net model per fold, or a rule."""

    info: MethodInfo
    trainer: str | None = None  # nnU-Net trainer; None for rules
    on_oracle_dataset: bool = False


@dataclass(frozen=True)
class Case:
    """One evaluated case: its pre-contrast image, first post-contrast phase (or None) and label."""

    case_id: str
    pre: Path
    post: Path | None
    label: Path


def read_array(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxels (z, y, x) as float32 and the spacing in the same (z, y, x) order."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(reversed(image.GetSpacing()))


# -- the plan of methods ------------------------------------------------------------------------------


def trainer_names(args: argparse.Namespace) -> dict[str, str]:
    suffix = "" if args.schedule == "full" else f"_{args.schedule}"
    return {
        "vanilla": args.vanilla_trainer or f"nnUNetTrainer{suffix}",
        "dkm": args.dkm_trainer or f"nnUNetTrainerDKM{suffix}",
        "control": args.control_trainer or f"nnUNetTrainerDKM_untrainedDM{suffix}",
        "oracle": args.oracle_trainer or f"nnUNetTrainer{suffix}",
        "suffix": suffix,
    }


def plan_methods(args: argparse.Namespace, post_phase: int) -> list[Method]:
    names = trainer_names(args)
    pre, post = "pre-contrast", f"post-contrast {post_phase}"
    methods = [
        Method(MethodInfo("vanilla", "vanilla nnU-Net", "pre-contrast network", pre, names["vanilla"]),
               names["vanilla"]),
        Method(MethodInfo("dkm", "DKM", "pre-contrast network", pre, names["dkm"]), names["dkm"]),
    ]
    if not args.no_control:
        methods.append(Method(MethodInfo("untrained_dm_control", "DKM, untrained DM (control)", "control", pre,
                                         names["control"]), names["control"]))
    for levels in args.ablation or ():
        if levels == DKM_DEFAULT_LEVELS:
            continue  # that is nnUNetTrainerDKM itself
        trainer = f"nnUNetTrainerDKM_f{levels}{names['suffix']}"
        methods.append(Method(MethodInfo(f"dkm_f{levels}", f"DKM, DM levels f{'+f'.join(levels)}",
                                         "pre-contrast network", pre, trainer), trainer))
    methods += [
        Method(MethodInfo("all_tissue", "all tissue (body mask)", "pre-contrast baseline", pre,
                          "rule: Otsu body mask")),
        Method(MethodInfo("intensity_window", "best intensity window", "pre-contrast baseline", pre,
                          "rule: intensity band fit on the fold's training cases")),
    ]
    if not args.no_oracle:
        methods.append(Method(MethodInfo("oracle_post_contrast", "nnU-Net on post-contrast (oracle)",
                                         "post-contrast ceiling", post, names["oracle"]), names["oracle"],
                              on_oracle_dataset=True))
    methods.append(Method(MethodInfo("label_rule_post_contrast", "FTV label rule on post-contrast",
                                     "post-contrast ceiling", f"{pre} + {post}",
                                     "rule: PE1 >= 70 %, whole body, largest component")))
    return methods


# -- data ----------------------------------------------------------------------------------------------


def has_test_split(raw: Path, file_ending: str) -> bool:
    return (raw / "labelsTs").is_dir() and any((raw / "labelsTs").glob(f"*{file_ending}"))


def cases_of(raw: Path, split: str, case_ids: list[str], file_ending: str, post_phase: int) -> list[Case]:
    cases = []
    for case_id in case_ids:
        pre = raw / f"images{split}" / f"{case_id}_0000{file_ending}"
        label = raw / f"labels{split}" / f"{case_id}{file_ending}"
        post = raw / f"kinetics{split}" / f"{case_id}_{post_phase:04d}{file_ending}"
        for path in (pre, label):
            if not path.is_file():
                raise BenchmarkError(f"case {case_id}: {path} is missing")
        cases.append(Case(case_id, pre, post if post.is_file() else None, label))
    return cases


def evaluation_cases(raw: Path, splits: list[dict], folds: list[int], file_ending: str,
                     post_phase: int) -> tuple[str, dict[int, list[Case]]]:
    """The cases each fold's models are scored on, and a sentence saying which.

    The test split (``imagesTs``/``labelsTs``) for every fold where the dataset has one; otherwise each fold's
    validation cases from nnU-Net's ``splits_final.json``.
    """
    if has_test_split(raw, file_ending):
        test_ids = sorted(p.name[: -len(file_ending)] for p in (raw / "labelsTs").glob(f"*{file_ending}"))
        text = f"test split (imagesTs/labelsTs, {len(test_ids)} cases), the same for every fold's model"
        return text, {fold: cases_of(raw, "Ts", test_ids, file_ending, post_phase) for fold in folds}
    missing = [fold for fold in folds if fold >= len(splits)]
    if missing:
        raise BenchmarkError(f"folds {missing} are not in splits_final.json ({len(splits)} folds)")
    text = "no test split: each fold's validation cases (nnU-Net's splits_final.json)"
    return text, {fold: cases_of(raw, "Tr", sorted(splits[fold]["val"]), file_ending, post_phase) for fold in folds}


def load_splits(preprocessed: Path) -> list[dict]:
    path = preprocessed / "splits_final.json"
    if not path.is_file():
        raise BenchmarkError(f"{path} is missing; nnUNetv2_train writes it when it first trains a fold")
    return json.loads(path.read_text())


# -- the benchmark --------------------------------------------------------------------------------------


def stage(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def ensure_planned(dataset_id: int, dataset_name: str, configuration: str, plans: str) -> Path:
    """The preprocessed folder of a dataset, running ``nnUNetv2_plan_and_preprocess`` first where it is missing."""
    folder = Path(os.environ["nnUNet_preprocessed"]) / dataset_name
    if not (folder / f"{plans}.json").is_file():
        run_command([nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration,
                     "-np", "1", "-npfp", "1", "--verify_dataset_integrity"],
                    unset=("nnUNet_n_proc_DA",))  # nnU-Net's planner sets torch threads from it: 0 fails
    return folder


def run_benchmark(args: argparse.Namespace) -> Path:
    raw = find_dataset_folder("nnUNet_raw", args.dataset)
    plan_first = f"run `nnUNetv2_plan_and_preprocess -d {args.dataset} -c {args.configuration}` first"
    try:
        preprocessed = find_dataset_folder("nnUNet_preprocessed", args.dataset)
    except PreprocessedSpaceError as error:
        raise BenchmarkError(f"{error}: {plan_first}") from error
    if not (preprocessed / f"{args.plans}.json").is_file():
        raise BenchmarkError(f"{preprocessed / (args.plans + '.json')} not found: {plan_first}")
    info = json.loads((raw / "dataset.json").read_text())
    file_ending = info["file_ending"]
    label_source = info.get("dkm", {}).get("label_source", "unknown")
    methods = plan_methods(args, args.post_phase)
    dkm_trainers = [m.trainer for m in methods if m.trainer and "DKM" in m.trainer]
    checkpoint = dm_checkpoint_path(preprocessed, args.configuration)
    if dkm_trainers and not checkpoint.is_file():
        raise BenchmarkError(f"no DM checkpoint at {checkpoint}; pretrain it first: "
                             f"{pretrain_command(raw.name, args.configuration, args.plans)}")
    output = Path(args.output) if args.output else (
        Path(os.environ["nnUNet_results"]) / raw.name / f"dkm_benchmark__{args.plans}__{args.configuration}")
    output.mkdir(parents=True, exist_ok=True)
    test_split = has_test_split(raw, file_ending)

    def model(method: Method, fold: int, oracle: Path | None) -> TrainedModel:
        folder = oracle if method.on_oracle_dataset else raw
        return TrainedModel(dataset_id_of(folder), folder.name, method.trainer, args.plans, args.configuration, fold)

    # 1. train what is missing; vanilla first, as it writes the split file the others share
    stage("1/5 nnU-Net models (trained where missing)")
    oracle_raw = None
    network_methods = [m for m in methods if m.trainer and not m.on_oracle_dataset]
    for fold in args.folds:
        for method in network_methods:
            model(method, fold, None).train(args.device)
    if not args.no_oracle:
        oracle_raw = make_oracle_dataset(raw, args.oracle_id, args.post_phase)
        print(f"post-contrast oracle dataset: {oracle_raw}", flush=True)
        oracle_preprocessed = ensure_planned(dataset_id_of(oracle_raw), oracle_raw.name, args.configuration, args.plans)
        copy_split_file(preprocessed, oracle_preprocessed)
        for fold in args.folds:
            for method in methods:
                if method.on_oracle_dataset:
                    model(method, fold, oracle_raw).train(args.device)

    # 2. the evaluated cases of each fold
    splits = load_splits(preprocessed)
    split_text, cases = evaluation_cases(raw, splits, args.folds, file_ending, args.post_phase)

    # 3. predictions
    stage("2/5 predictions")
    predictions: dict[tuple[str, int], Path] = {}
    for fold in args.folds:
        ids = [c.case_id for c in cases[fold]]
        for method in methods:
            if not method.trainer:
                continue
            trained = model(method, fold, oracle_raw)
            if not test_split:
                predictions[(method.info.key, fold)] = trained.fold_folder / "validation"
                continue
            source = oracle_raw if method.on_oracle_dataset else raw
            target = output / "predictions" / method.info.key / f"fold_{fold}"
            predictions[(method.info.key, fold)] = trained.predict(source / "imagesTs", target, args.device, ids,
                                                                   file_ending)

    stage("3/5 baselines without a network")
    fold_free_masks: dict[str, dict[str, np.ndarray]] = {}  # the rules that fit nothing: once per case
    for fold in args.folds:
        targets = {key: output / "predictions" / key / f"fold_{fold}" for key in RULES}
        for key, target in targets.items():
            predictions[(key, fold)] = target
        if all(rule_predictions_complete(target, cases[fold], key, file_ending) for key, target in targets.items()):
            continue
        window = IntensityWindow.fit(
            (read_array(raw / "imagesTr" / f"{c}_0000{file_ending}")[0],
             read_array(raw / "labelsTr" / f"{c}{file_ending}")[0]) for c in sorted(splits[fold]["train"]))
        print(f"fold {fold}: intensity window [{window.low:.2f}, {window.high:.2f}] (body-standardised units)")
        masks = {}
        for case in cases[fold]:
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

    # 4. metrics
    stage("4/5 metrics")
    rows = []
    for fold in args.folds:
        for case in tqdm(cases[fold], desc=f"fold {fold} cases", unit="case"):
            reference, spacing = read_array(case.label)
            for (key, key_fold), folder in predictions.items():
                predicted = folder / f"{case.case_id}{file_ending}"
                if key_fold != fold or not predicted.is_file():
                    continue  # e.g. the label rule on a case without post-contrast phase
                metrics = case_metrics(reference > 0, read_array(predicted)[0] > 0, spacing)
                rows.append({"method": key, "fold": fold, "case": case.case_id, **metrics.as_dict()})
    per_case = pd.DataFrame(rows)

    # 5. tables and figures
    stage("5/5 tables and figures")
    context = BenchmarkContext(
        dataset=raw.name, label_source=label_source, configuration=args.configuration, plans=args.plans,
        split=split_text, folds=args.folds, command=args.command,
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine_description(args.device),
    )
    if oracle_raw is not None:
        context.notes.append(f"post-contrast oracle dataset: {oracle_raw.name} (made by this benchmark)")
    if "threshold" in label_source.lower() or "ftv" in label_source.lower() or label_source == "synthetic":
        context.notes.append("the labels are (or follow) a post-contrast threshold rule, so methods that see the "
                             "post-contrast phase score near 1 by construction")
    write_outputs(output, context, [m.info for m in methods], per_case, cases, predictions, file_ending, args.overlays)
    return output


RULES = ("all_tissue", "intensity_window", "label_rule_post_contrast")


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


def machine_description(device: str) -> str:
    import torch

    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if device == "cuda" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text + f", device {device}"


def gain_verdict(mean_difference: float, p_value: float, fold_differences: np.ndarray, better: str,
                 not_better: str) -> str:
    """``better`` only for a significant case-level gain (p < 0.05) that every fold's mean agrees with.

    A case-level test alone over-counts: cases of one fold share one training run. Where the folds disagree, the
    gain is reported as not consistent, because training noise can then explain it.
    """
    significant = p_value == p_value and p_value < P_THRESHOLD and mean_difference > 0
    if significant and len(fold_differences) and np.all(fold_differences > 0):
        return better
    if significant:
        return (f"{not_better} (a case-level gain, p < {P_THRESHOLD}, but not in every fold, so training noise "
                f"can explain it)")
    return not_better


def findings_of(summary: pd.DataFrame, comparisons: dict[tuple[str, str], object], labels: dict[str, str],
                per_fold: pd.DataFrame) -> list[str]:
    """Plain statements computed from the tables (no hand-written numbers)."""
    means = dict(zip(summary["method"], summary["dice_mean"], strict=True))
    fold_means = per_fold.set_index("method")
    lines = []

    def verdict(key: tuple[str, str], better: str, not_better: str) -> str:
        c = comparisons[key]
        by_fold = (fold_means.loc[key[0]] - fold_means.loc[key[1]]).dropna()
        word = gain_verdict(c.mean_difference, c.wilcoxon_p, by_fold.to_numpy(), better, not_better)
        folds = ", ".join(f"{name} {value:+.3f}" for name, value in by_fold.items())
        return (f"{word}: mean difference {c.mean_difference:+.3f} Dice over {c.pairs} paired cases, "
                f"Wilcoxon p = {c.wilcoxon_p:.2g} ({c.wins} better, {c.losses} worse); per fold: {folds}. "
                f"The test treats cases as independent; each fold is one training run, so training noise is "
                f"sampled {len(by_fold)} time(s)")

    if ("dkm", "vanilla") in comparisons:
        lines.append("DKM vs vanilla nnU-Net on the pre-contrast image: "
                     + verdict(("dkm", "vanilla"), "DKM is better", "no significant DKM gain"))
    if ("dkm", "untrained_dm_control") in comparisons:
        lines.append("DKM vs the untrained-DM control (learned kinetics vs extra capacity): "
                     + verdict(("dkm", "untrained_dm_control"), "the learned DM helps",
                               "no evidence that the learned kinetics help beyond the added capacity"))
    ceiling = [k for k in ("oracle_post_contrast", "label_rule_post_contrast") if k in means]
    if ceiling and "vanilla" in means and "dkm" in means:
        best = max(ceiling, key=lambda k: means[k])
        lines.append("post-contrast ceiling: " + ", ".join(f"{labels[k]} Dice {means[k]:.3f}" for k in ceiling)
                     + f"; vanilla is {means[best] - means['vanilla']:.3f} and DKM {means[best] - means['dkm']:.3f} "
                     f"below the higher one")
    return lines


def write_outputs(output: Path, context: BenchmarkContext, methods: list[MethodInfo], per_case: pd.DataFrame,
                  cases: dict[int, list[Case]], predictions: dict[tuple[str, int], Path], file_ending: str,
                  overlays: int = 3) -> None:
    keys = [m.key for m in methods]
    summary = summarise(per_case, keys)
    per_fold = (per_case.groupby(["method", "fold"])["dice"].mean().unstack("fold")
                .reindex([k for k in keys if k in set(per_case["method"])]))
    per_fold.columns = [f"fold {f}" for f in per_fold.columns]
    per_fold = per_fold.reset_index()
    present = set(per_case["method"])
    pairs = [(k, "vanilla") for k in keys if k != "vanilla" and k in present and
             k not in ("all_tissue", "intensity_window", "label_rule_post_contrast")]
    if {"dkm", "untrained_dm_control"} <= present:
        pairs.append(("dkm", "untrained_dm_control"))
    comparisons = {}
    for method, reference in pairs:
        for metric in ("dice", "hd95_mm"):
            comparisons[(method, reference, metric)] = paired_comparison(per_case, method, reference, metric)
    dice_comparisons = {(m, r): c for (m, r, metric), c in comparisons.items() if metric == "dice"}
    labels = {m.key: m.label for m in methods}
    findings = findings_of(summary, dice_comparisons, labels, per_fold)
    figures = ["dice_bars.png"]
    dice_bar_chart(summary, methods, output / "dice_bars.png", f"{context.dataset} ({context.configuration})")
    fold = context.folds[0]
    overlay_rows = []
    panels = [k for k in ("vanilla", "dkm", "untrained_dm_control") if (k, fold) in predictions]
    for case in cases[fold][:overlays]:
        reference = read_array(case.label)[0] > 0
        z = int(np.argmax(reference.sum(axis=(1, 2))))
        masks = {"ground truth": reference[z]}
        for key in panels:
            path = predictions[(key, fold)] / f"{case.case_id}{file_ending}"
            masks[labels[key]] = read_array(path)[0][z] > 0
        overlay_rows.append((f"{case.case_id} z={z} (fold {fold})", read_array(case.pre)[0][z], masks))
    if overlay_rows:
        overlay_figure(overlay_rows, output / "overlays.png")
        figures.append("overlays.png")
    for name, frame in (("per_case.csv", per_case), ("summary.csv", summary),
                        ("paired.csv", pd.DataFrame([c.as_dict() for c in comparisons.values()]))):
        write_atomically(output / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))
    text = markdown_report(context, methods, summary, per_fold, list(comparisons.values()), findings, figures)
    write_atomically(output / "results.md", lambda tmp: tmp.write_text(text))
    print(text)
    print(f"written to {output}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_benchmark",
        description="Benchmark DKM against vanilla nnU-Net on the pre-contrast image, with the untrained-DM "
                    "control, the post-contrast ceiling and baselines without a network. Trains missing models "
                    "with nnUNetv2_train, reuses existing ones.",
    )
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id, e.g. 990")
    parser.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration (2d)")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=[0],
                        help="folds to train and evaluate; several folds give paired statistics that include "
                             "training noise (default 0)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--schedule", choices=("full", "demo", "debug"), default="full",
                        help="append _demo / _debug to every default trainer name (short CPU schedules)")
    parser.add_argument("--vanilla-trainer", default=None, help="vanilla trainer (default nnUNetTrainer)")
    parser.add_argument("--dkm-trainer", default=None, help="DKM trainer (default nnUNetTrainerDKM)")
    parser.add_argument("--control-trainer", default=None,
                        help="untrained-DM control (default nnUNetTrainerDKM_untrainedDM)")
    parser.add_argument("--oracle-trainer", default=None, help="trainer of the post-contrast oracle (nnUNetTrainer)")
    parser.add_argument("--ablation", nargs="*", default=None, metavar="LEVELS",
                        help="also DKM with these DM feature levels, e.g. 1 2 3 4 1234 (no value: those five)")
    parser.add_argument("--no-control", action="store_true", help="leave out the untrained-DM control")
    parser.add_argument("--no-oracle", action="store_true", help="leave out the post-contrast nnU-Net oracle")
    parser.add_argument("--oracle-id", type=int, default=None,
                        help="dataset id of the oracle companion (default: reuse one, else the highest free id)")
    parser.add_argument("--post-phase", type=int, default=1, help="post-contrast phase of the ceiling (default 1)")
    parser.add_argument("--overlays", type=int, default=3, help="cases shown in overlays.png (default 3)")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (default $nnUNet_results/DatasetXXX/dkm_benchmark__<plans>__<cfg>)")
    parser.add_argument("-device", "--device", choices=("cpu", "cuda"), default=None,
                        help="device for training and prediction (default cuda if available, else cpu)")
    args = parser.parse_args(argv)
    if args.ablation is not None and not args.ablation:
        args.ablation = list(DEFAULT_ABLATION)
    for levels in args.ablation or ():
        if not levels or any(c not in "1234" for c in levels) or sorted(set(levels)) != list(levels):
            parser.error(f"--ablation {levels!r}: give increasing DM levels from 1 to 4, e.g. 1 34 1234")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.command = shlex.join(["nnUNetv2_dkm_benchmark", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run_benchmark(args)
    except (BenchmarkError, NnunetRunError, OracleDatasetError, PreprocessedSpaceError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
