"""The label-efficiency overview: Dice against the number of labelled training cases N, and whether the learned DM
beats the untrained-DM control at each N.

Input: the per-case table of every run, with columns ``method``, ``fold`` (the base fold), ``num_labelled`` (``4``,
``8``, ..., ``all``), ``labelled_cases`` (how many cases that run trained on) and the metrics. Output:
``label_efficiency.md``, ``label_efficiency.csv`` and ``label_efficiency.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.evaluation.benchmark.methods import MethodInfo
from nnunet_dkm.evaluation.benchmark.verdicts import P_THRESHOLD, gain_verdict
from nnunet_dkm.evaluation.statistics import paired_comparison

CURVE_METHODS = ("vanilla", "dkm", "untrained_dm_control", "oracle_post_contrast")
CURVE_COLOURS = {"vanilla": "#1f77b4", "dkm": "#d62728", "untrained_dm_control": "#9467bd",
                 "oracle_post_contrast": "#2ca02c"}
GOAL_GAIN = 0.03  # DKM - control in Dice that counts as a regime where the kinetic code helps
GOAL_MAX_LABELS = 8


def labels_in_order(per_case: pd.DataFrame) -> list[str]:
    """The N of the table, smallest first, ``all`` last."""
    return sorted(per_case["num_labelled"].unique(), key=lambda n: float("inf") if n == "all" else int(n))


def dice_by_n(per_case: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Mean and std of Dice over folds x cases per (N, method), with the mean number of labelled cases and the
    per-fold means (columns ``fold k``)."""
    rows = []
    for label in labels_in_order(per_case):
        of_n = per_case[per_case["num_labelled"] == label]
        for method in methods:
            rows_of = of_n[of_n["method"] == method]
            if rows_of.empty:
                continue
            row = {"num_labelled": label, "labelled_cases": float(rows_of["labelled_cases"].mean()),
                   "method": method, "n": len(rows_of), "dice_mean": float(rows_of["dice"].mean()),
                   "dice_std": float(rows_of["dice"].std(ddof=0))}
            row.update({f"fold {f}": float(v) for f, v in rows_of.groupby("fold")["dice"].mean().items()})
            rows.append(row)
    return pd.DataFrame(rows)


def dkm_against(per_case: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per N: DKM minus ``reference``, paired over (fold, case): mean, Wilcoxon p, per-fold means, the verdict,
    and whether the goal (>= +0.03 Dice at N <= 8, significant, positive in every fold) is met."""
    rows = []
    for label in labels_in_order(per_case):
        of_n = per_case[per_case["num_labelled"] == label]
        if not {"dkm", reference} <= set(of_n["method"]):
            continue
        comparison = paired_comparison(of_n, "dkm", reference, "dice")
        fold_means = of_n.groupby(["method", "fold"])["dice"].mean()
        by_fold = (fold_means["dkm"] - fold_means[reference]).dropna()
        verdict = gain_verdict(comparison.mean_difference, comparison.wilcoxon_p, by_fold.to_numpy(), "gain",
                               "no gain")
        small = label != "all" and int(label) <= GOAL_MAX_LABELS
        rows.append({
            "num_labelled": label, "reference": reference, "pairs": comparison.pairs,
            "mean_difference": comparison.mean_difference, "wilcoxon_p": comparison.wilcoxon_p,
            "wins": comparison.wins, "losses": comparison.losses,
            "per_fold": ", ".join(f"fold {f} {v:+.3f}" for f, v in by_fold.items()), "verdict": verdict,
            "goal_met": bool(small and verdict == "gain" and comparison.mean_difference >= GOAL_GAIN),
        })
    return pd.DataFrame(rows)


def efficiency_figure(table: pd.DataFrame, labels: dict[str, str], path: Path, title: str) -> None:
    """Dice against the number of labelled cases: the mean over folds x cases (line) and each fold's mean (dots)."""
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    fold_columns = [c for c in table.columns if c.startswith("fold ")]
    for method in CURVE_METHODS:
        rows = table[table["method"] == method].sort_values("labelled_cases")
        if rows.empty:
            continue
        colour = CURVE_COLOURS[method]
        axis.plot(rows["labelled_cases"], rows["dice_mean"], "-o", color=colour, label=labels.get(method, method))
        for column in fold_columns:
            axis.scatter(rows["labelled_cases"], rows[column], color=colour, s=12, alpha=0.45)
    ticks = table.drop_duplicates("num_labelled").sort_values("labelled_cases")
    axis.set_xscale("log", base=2)
    axis.set_xticks(ticks["labelled_cases"], [f"{n}" if n != "all" else f"all ({c:.0f})"
                                              for n, c in zip(ticks["num_labelled"], ticks["labelled_cases"],
                                                              strict=True)])
    axis.minorticks_off()
    axis.set_xlabel("labelled training cases N (per fold)")
    axis.set_ylabel("Dice on the test split")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120, format="png", bbox_inches="tight"))


def efficiency_markdown(table: pd.DataFrame, against_control: pd.DataFrame, against_vanilla: pd.DataFrame,
                        labels: dict[str, str], header: Sequence[str]) -> str:
    """The overview's markdown: context lines, Dice per N and method, DKM against control and vanilla per N."""
    fold_columns = [c for c in table.columns if c.startswith("fold ")]
    lines = [*header, "", "## Dice per number of labelled training cases (mean ± std over folds x cases)", "",
             "| N | labelled cases | method | n | Dice | " + " | ".join(fold_columns) + " |",
             "|---|---|---|---|---|" + "---|" * len(fold_columns)]
    for _, row in table.iterrows():
        folds = " | ".join("" if np.isnan(row[c]) else f"{row[c]:.3f}" for c in fold_columns)
        label = labels.get(row["method"], row["method"])
        lines.append(f"| {row['num_labelled']} | {row['labelled_cases']:.0f} | {label} | {row['n']} "
                     f"| {row['dice_mean']:.3f} ± {row['dice_std']:.3f} | {folds} |")
    for title, frame in (("DKM − untrained-DM control (learned kinetics vs capacity)", against_control),
                         ("DKM − vanilla nnU-Net", against_vanilla)):
        lines += ["", f"## {title}, paired per fold and case", "",
                  "| N | pairs | mean Dice difference | Wilcoxon p | wins / losses | per fold | verdict | goal met |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in frame.itertuples(index=False):
            p = "n/a" if np.isnan(row.wilcoxon_p) else f"{row.wilcoxon_p:.2g}"
            lines.append(f"| {row.num_labelled} | {row.pairs} | {row.mean_difference:+.3f} | {p} | {row.wins} / "
                         f"{row.losses} | {row.per_fold} | {row.verdict} | {'yes' if row.goal_met else 'no'} |")
    lines += ["", f"A gain counts only where it is significant over paired cases (p < {P_THRESHOLD}) and positive in "
              f"every fold; the goal is DKM − control >= +{GOAL_GAIN} Dice at N <= {GOAL_MAX_LABELS} with such a gain."]
    return "\n".join(lines) + "\n"


def write_label_efficiency(output: Path, per_case: pd.DataFrame, methods: Sequence[MethodInfo],
                           header: Sequence[str], title: str) -> str:
    """Write ``label_efficiency.{md,csv,png}`` into ``output``; returns the markdown."""
    labels = {m.key: m.label for m in methods}
    table = dice_by_n(per_case, [m.key for m in methods])
    against_control = dkm_against(per_case, "untrained_dm_control")
    against_vanilla = dkm_against(per_case, "vanilla")
    efficiency_figure(table, labels, output / "label_efficiency.png", title)
    write_atomically(output / "label_efficiency.csv", lambda temporary: table.to_csv(temporary, index=False))
    text = efficiency_markdown(table, against_control, against_vanilla, labels,
                               [*header, "", "![Dice against N](label_efficiency.png)"])
    write_atomically(output / "label_efficiency.md", lambda temporary: temporary.write_text(text))
    return text
