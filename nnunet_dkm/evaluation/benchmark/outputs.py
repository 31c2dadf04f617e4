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
from nnunet_dkm.evaluation.benchmark.verdicts import findings_of
from nnunet_dkm.evaluation.statistics import PairedComparison, paired_comparison, summarise
from nnunet_dkm.reporting import machine_description as machine_description  # the benchmark's cli reads it here


def per_fold_dice(per_case: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean Dice per method (rows, in ``keys`` order) and fold (columns ``fold k``)."""
    per_fold = (per_case.groupby(["method", "fold"])["dice"].mean().unstack("fold")
                .reindex([k for k in keys if k in set(per_case["method"])]))
    per_fold.columns = [f"fold {f}" for f in per_fold.columns]
    return per_fold.reset_index()


def paired_comparisons(per_case: pd.DataFrame, keys: list[str]) -> dict[tuple[str, str, str], PairedComparison]:
    """Every network row against vanilla nnU-Net, and DKM against its untrained-DM control; Dice and HD95."""
    present = set(per_case["method"])
    pairs = [(k, "vanilla") for k in keys if k != "vanilla" and k in present and k not in RULES]
    if {"dkm", "untrained_dm_control"} <= present:
        pairs.append(("dkm", "untrained_dm_control"))
    return {(method, reference, metric): paired_comparison(per_case, method, reference, metric)
            for method, reference in pairs for metric in ("dice", "hd95_mm")}


def overlay_rows(cases: list[Case], predictions: dict[tuple[str, int], Path], fold: int, labels: dict[str, str],
                 file_ending: str) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """Rows of ``overlay_figure``: each case's slice with the most tumour, ground truth then the networks' masks."""
    panels = [k for k in ("vanilla", "dkm", "untrained_dm_control") if (k, fold) in predictions]
    rows = []
    for case in cases:
        reference = read_array(case.label)[0] > 0
        z = int(np.argmax(reference.sum(axis=(1, 2))))
        masks = {"ground truth": reference[z]}
        for key in panels:
            masks[labels[key]] = read_array(predictions[(key, fold)] / f"{case.case_id}{file_ending}")[0][z] > 0
        rows.append((f"{case.case_id} z={z} (fold {fold})", read_array(case.pre)[0][z], masks))
    return rows


def write_outputs(output: Path, context: BenchmarkContext, methods: list[MethodInfo], per_case: pd.DataFrame,
                  cases: dict[int, list[Case]], predictions: dict[tuple[str, int], Path], file_ending: str,
                  overlays: int = 3) -> str:
    """Write results.md, per_case.csv, summary.csv, paired.csv, dice_bars.png and overlays.png; returns the
    markdown."""
    keys = [m.key for m in methods]
    labels = {m.key: m.label for m in methods}
    summary = summarise(per_case, keys)
    per_fold = per_fold_dice(per_case, keys)
    comparisons = paired_comparisons(per_case, keys)
    dice_comparisons = {(m, r): c for (m, r, metric), c in comparisons.items() if metric == "dice"}
    findings = findings_of(summary, dice_comparisons, labels, per_fold)
    figures = ["dice_bars.png"]
    dice_bar_chart(summary, methods, output / "dice_bars.png", f"{context.dataset} ({context.configuration})")
    fold = context.folds[0]
    rows = overlay_rows(cases[fold][:overlays], predictions, fold, labels, file_ending)
    if rows:
        overlay_figure(rows, output / "overlays.png")
        figures.append("overlays.png")
    for name, frame in (("per_case.csv", per_case), ("summary.csv", summary),
                        ("paired.csv", pd.DataFrame([c.as_dict() for c in comparisons.values()]))):
        write_atomically(output / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))
    text = markdown_report(context, methods, summary, per_fold, list(comparisons.values()), findings, figures)
    write_atomically(output / "results.md", lambda tmp: tmp.write_text(text))
    return text


def write_label_runs(output: Path, context: BenchmarkContext, methods: list[MethodInfo], runs: list[LabelRun],
                     per_case: pd.DataFrame, cases: dict[int, list[Case]], predictions: dict[tuple[str, int], Path],
                     file_ending: str, overlays: int) -> str:
    """One full report per N (``n_<N>/``, folds named by their base fold) and the overview across N."""
    by_fold = {run.nnunet_fold: run for run in runs}
    per_case = per_case.assign(
        num_labelled=[by_fold[f].label for f in per_case["fold"]],
        labelled_cases=[len(by_fold[f].train_cases) for f in per_case["fold"]],
        fold=[by_fold[f].fold for f in per_case["fold"]],
    )
    for label in dict.fromkeys(run.label for run in runs):
        of_n = [run for run in runs if run.label == label]
        sub_context = replace(context, folds=[run.fold for run in of_n], notes=[
            *context.notes, f"{label} labelled training case(s) per fold: nnU-Net folds "
            + ", ".join(f"{run.nnunet_fold} (fold {run.fold}: {', '.join(run.train_cases)})" for run in of_n)])
        write_outputs(output / f"n_{label}", sub_context, methods,
                      per_case[per_case["num_labelled"] == label].drop(columns=["num_labelled", "labelled_cases"]),
                      {run.fold: cases[run.nnunet_fold] for run in of_n},
                      {(key, run.fold): folder for run in of_n for (key, fold), folder in predictions.items()
                       if fold == run.nnunet_fold}, file_ending, overlays)
    write_atomically(output / "per_case_label_efficiency.csv",
                     lambda temporary: per_case.to_csv(temporary, index=False))
    header = [f"# DKM label efficiency: {context.dataset}, {context.configuration}", "",
              f"- **Command:** `{context.command}`", f"- **Date / machine:** {context.date}; {context.machine}",
              f"- **Dataset:** {context.dataset}; label source: {context.label_source}",
              f"- **Split:** {context.split}; base folds {', '.join(map(str, context.folds))}; every method is trained "
              f"on the same nested subsets of each fold's labelled training cases (reports per N in `n_<N>/`)",
              *[f"- {note}" for note in context.notes]]
    return write_label_efficiency(output, per_case, methods, header, f"{context.dataset} ({context.configuration})")
