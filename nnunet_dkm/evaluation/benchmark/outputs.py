"""Writing the benchmark's results: tables (markdown, CSV), the Dice bar chart and the overlay figure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.evaluation.benchmark.cases import Case, read_array
from nnunet_dkm.evaluation.benchmark.label_efficiency import write_label_efficiency
from nnunet_dkm.evaluation.benchmark.label_subsets import LabelRun
from nnunet_dkm.evaluation.benchmark.methods import RULES, MethodInfo
from nnunet_dkm.evaluation.benchmark.report import BenchmarkContext, dice_bar_chart, markdown_report, overlay_figure
from nnunet_dkm.evaluation.benchmark.verdicts import comparison_pairs, findings_of
from nnunet_dkm.evaluation.run_statistics import run_level_comparison, run_means, run_to_run_spread
from nnunet_dkm.evaluation.statistics import PairedComparison, paired_comparison, summarise


def run_label(fold: int, repeat: int, repeats: int) -> str:
    """A run's column name: ``fold k`` with one repeat, ``fold k / r j`` with several."""
    return f"fold {fold}" if repeats <= 1 else f"fold {fold} / r {repeat}"


def per_run_dice(per_case: pd.DataFrame, keys: list[str], repeats: int) -> pd.DataFrame:
    """Mean Dice per method (rows, in ``keys`` order) and run (columns ``run_label``)."""
    means = run_means(per_case)
    means["run"] = [run_label(f, r, repeats) for f, r in zip(means["fold"], means["repeat"], strict=True)]
    table = means.pivot(index="method", columns="run", values="dice")
    order = [run_label(f, r, repeats) for f, r in sorted(set(zip(means["fold"], means["repeat"], strict=True)))]
    table = table.reindex(index=[k for k in keys if k in table.index], columns=order)
    return table.reset_index()


def case_level_comparisons(per_case: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[PairedComparison]:
    """The secondary, case-level comparisons (Wilcoxon over paired cases), Dice and HD95."""
    return [paired_comparison(per_case, method, reference, metric) for method, reference in pairs
            for metric in ("dice", "hd95_mm")]


def overlay_rows(cases: list[Case], predictions: dict[tuple[str, int, int], Path], fold: int, labels: dict[str, str],
                 file_ending: str) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """Rows of ``overlay_figure``: each case's slice with the most tumour, ground truth then the networks' masks
    (repeat 0)."""
    panels = [k for k in ("vanilla", "dkm", "untrained_dm_control", "virtual_contrast") if (k, fold, 0) in predictions]
    rows = []
    for case in cases:
        reference = read_array(case.label)[0] > 0
        z = int(np.argmax(reference.sum(axis=(1, 2))))
        masks = {"ground truth": reference[z]}
        for key in panels:
            masks[labels[key]] = read_array(predictions[(key, fold, 0)] / f"{case.case_id}{file_ending}")[0][z] > 0
        rows.append((f"{case.case_id} z={z} (fold {fold})", read_array(case.pre)[0][z], masks))
    return rows


def write_outputs(output: Path, context: BenchmarkContext, methods: list[MethodInfo], per_case: pd.DataFrame,
                  cases: dict[int, list[Case]], predictions: dict[tuple[str, int, int], Path], file_ending: str,
                  overlays: int = 3) -> str:
    """Write results.md, per_case.csv, summary.csv, runs.csv, run_level.csv, paired.csv, dice_bars.png and
    overlays.png; returns the markdown."""
    keys = [m.key for m in methods]
    labels = {m.key: m.label for m in methods}
    summary = summarise(per_case, keys)
    spread = run_to_run_spread(per_case[~per_case["method"].isin(RULES)])
    per_run = per_run_dice(per_case, keys, context.repeats)
    pairs = comparison_pairs(keys, set(per_case["method"]))
    run_level = [run_level_comparison(per_case, method, reference) for method, reference in pairs]
    case_level = case_level_comparisons(per_case, pairs)
    findings = findings_of(summary, run_level, labels)
    figures = ["dice_bars.png"]
    dice_bar_chart(summary, methods, output / "dice_bars.png", f"{context.dataset} ({context.configuration})")
    fold = sorted(cases)[0]
    rows = overlay_rows(cases[fold][:overlays], predictions, fold, labels, file_ending)
    if rows:
        overlay_figure(rows, output / "overlays.png")
        figures.append("overlays.png")
    summary_with_spread = summary.merge(spread.drop(columns="runs"), on="method", how="left")
    run_level_table = pd.DataFrame([c.as_dict() for c in run_level]).assign(command=context.command,
                                                                            dms="; ".join(context.dms))
    for name, frame in (("per_case.csv", per_case), ("summary.csv", summary_with_spread),
                        ("runs.csv", per_run), ("run_level.csv", run_level_table),
                        ("paired.csv", pd.DataFrame([c.as_dict() for c in case_level]))):
        write_atomically(output / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))
    text = markdown_report(context, methods, summary, spread, per_run, run_level, case_level, findings, figures)
    write_atomically(output / "results.md", lambda tmp: tmp.write_text(text))
    return text


def write_label_runs(output: Path, context: BenchmarkContext, methods: list[MethodInfo], runs: list[LabelRun],
                     per_case: pd.DataFrame, cases: dict[int, list[Case]],
                     predictions: dict[tuple[str, int, int], Path], file_ending: str, overlays: int) -> str:
    """One full report per N (``n_<N>/``, folds named by their base fold) and the overview across N."""
    by_fold = {run.nnunet_fold: run for run in runs}
    per_case = per_case.assign(num_labelled=[by_fold[f].label for f in per_case["fold"]],
                               labelled_cases=[len(by_fold[f].train_cases) for f in per_case["fold"]],
                               fold=[by_fold[f].fold for f in per_case["fold"]])
    for label in dict.fromkeys(run.label for run in runs):
        of_n = [run for run in runs if run.label == label]
        sub_context = replace(context, folds=[run.fold for run in of_n], notes=[
            *context.notes, f"{label} labelled training case(s) per fold: nnU-Net folds "
            + ", ".join(f"{run.nnunet_fold} (fold {run.fold}: {', '.join(run.train_cases)})" for run in of_n)])
        write_outputs(output / f"n_{label}", sub_context, methods,
                      per_case[per_case["num_labelled"] == label].drop(columns=["num_labelled", "labelled_cases"]),
                      {run.fold: cases[run.nnunet_fold] for run in of_n},
                      {(key, run.fold, repeat): folder for run in of_n
                       for (key, fold, repeat), folder in predictions.items() if fold == run.nnunet_fold},
                      file_ending, overlays)
    write_atomically(output / "per_case_label_efficiency.csv",
                     lambda temporary: per_case.to_csv(temporary, index=False))
    header = context.header("DKM label efficiency", f"base folds {', '.join(map(str, context.folds))}, "
                            f"{context.repeats} repeat(s) each; every method is trained on the same nested subsets of "
                            "each fold's labelled training cases (reports per N in `n_<N>/`)").lines()
    return write_label_efficiency(output, per_case, methods, header, f"{context.dataset} ({context.configuration})")
