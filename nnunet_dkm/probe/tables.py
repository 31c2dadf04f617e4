"""The probe's tables: summary per row and classifier, paired comparisons, the setting chosen on the selection split,
and the markdown report around them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nnunet_dkm.evaluation.statistics import PairedComparison, paired_comparison
from nnunet_dkm.probe.features import FILTER_BANK, dm_row_label
from nnunet_dkm.probe.results import UNTRAINED, ProbeResult

CLASSIFIER_NAMES = {"logistic": "logistic regression", "mlp": "MLP"}


def summary_table(result: ProbeResult) -> pd.DataFrame:
    """One line per (row, classifier) in table order: n, mean and std of Dice, AUC and AP over report cases, the
    threshold and selection Dice, and the setting's forward time per slice."""
    costs = dict(zip(result.costs["setting"], result.costs["forward_ms_per_slice"], strict=True))
    lines = []
    for row in result.rows:
        for classifier in dict.fromkeys(result.per_case["classifier"]):
            cases = result.per_case[(result.per_case["row"] == row.label)
                                    & (result.per_case["classifier"] == classifier)]
            if cases.empty:
                continue
            line = {"row": row.label, "kind": row.kind, "model": row.model, "setting": row.setting,
                    "classifier": classifier, "n": len(cases), "threshold": float(cases["threshold"].iloc[0]),
                    "selection_dice": float(cases["selection_dice"].iloc[0]),
                    "forward_ms_per_slice": costs.get(row.setting, math.nan)}
            for metric in ("dice", "auc", "average_precision"):
                line[f"{metric}_mean"] = float(cases[metric].mean())
                line[f"{metric}_std"] = float(cases[metric].std(ddof=0))
            lines.append(line)
    return pd.DataFrame(lines)


def _paired(per_case: pd.DataFrame, method: str, reference: str, classifier: str) -> PairedComparison:
    frame = per_case[per_case["classifier"] == classifier].rename(columns={"row": "method"}).assign(fold=0)
    return paired_comparison(frame, method, reference, "dice")


@dataclass(frozen=True)
class ProbeComparison:
    """A probed DM against a reference row at one setting and classifier (per-case Dice on the report cases)."""

    model: str
    setting: str
    classifier: str
    reference: str
    comparison: PairedComparison


def comparisons(result: ProbeResult) -> list[ProbeComparison]:
    """Every probed DM against the untrained DM at the same setting and against the filter bank, per classifier."""
    out = []
    for info in result.checkpoints:
        for setting in result.settings:
            for classifier in dict.fromkeys(result.per_case["classifier"]):
                method = dm_row_label(info.name, setting)
                for reference in (dm_row_label(UNTRAINED, setting), FILTER_BANK):
                    out.append(ProbeComparison(info.name, setting.code, classifier, reference,
                                               _paired(result.per_case, method, reference, classifier)))
    return out


def chosen_settings(summary: pd.DataFrame) -> pd.DataFrame:
    """Per DM (untrained included) and classifier, the setting with the best mean selection Dice, with its report
    Dice: what a user of the selection split alone would pick."""
    dms = summary[summary["kind"].isin(["dm", "untrained_dm"])]
    if dms.empty:
        return pd.DataFrame(columns=["model", "classifier", "setting", "selection_dice", "dice_mean", "dice_std"])
    best = dms.loc[dms.fillna({"selection_dice": -1.0}).groupby(["model", "classifier"], sort=False)
                   ["selection_dice"].idxmax()]
    return best[["model", "classifier", "setting", "selection_dice", "dice_mean", "dice_std"]].reset_index(drop=True)


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def summary_markdown(summary: pd.DataFrame) -> list[str]:
    """The summary as markdown table lines."""
    lines = ["| row | classifier | DM forward (ms/slice) | threshold | selection Dice | report Dice | ROC-AUC | AP |",
             "|---|---|---|---|---|---|---|---|"]
    for line in summary.itertuples(index=False):
        lines.append(
            f"| {line.row} | {CLASSIFIER_NAMES.get(line.classifier, line.classifier)} "
            f"| {_number(line.forward_ms_per_slice, 1) if line.setting else ''} | {line.threshold:.2f} "
            f"| {_number(line.selection_dice)} | {_pm(line.dice_mean, line.dice_std)} "
            f"| {_pm(line.auc_mean, line.auc_std)} | {_pm(line.average_precision_mean, line.average_precision_std)} |"
        )
    return lines


def comparisons_markdown(items: Sequence[ProbeComparison]) -> list[str]:
    lines = ["| DM | setting | classifier | minus | cases | mean Dice difference | wins / ties / losses | "
             "Wilcoxon p |", "|---|---|---|---|---|---|---|---|"]
    for item in items:
        c = item.comparison
        lines.append(f"| {item.model} | {item.setting} | {CLASSIFIER_NAMES.get(item.classifier, item.classifier)} "
                     f"| {item.reference} | {c.pairs} | {_number(c.mean_difference)} | {c.wins} / {c.ties} / "
                     f"{c.losses} | {_p(c.wilcoxon_p)} |")
    return lines


@dataclass(frozen=True)
class ReportContext:
    """What the report states besides the numbers."""

    title: str
    command: str
    date: str
    machine: str
    dataset: str
    configuration: str
    plans: str
    seed: int
    classifier_description: str
    figure: str | None = None
    extra_figures: tuple[str, ...] = ()


def markdown_report(result: ProbeResult, context: ReportContext, summary: pd.DataFrame,
                    items: Sequence[ProbeComparison], chosen: pd.DataFrame) -> str:
    """The whole ``results.md``."""
    checkpoints = "; ".join(
        f"{info.name}: `{info.path}` ({info.steps if info.steps is not None else 'unknown'} training steps)"
        for info in result.checkpoints)
    split = result.split
    lines = [
        f"# {context.title}",
        "",
        f"- **Command:** `{context.command}`",
        f"- **Date / machine:** {context.date}; {context.machine}",
        f"- **Dataset:** {context.dataset}; configuration {context.configuration}; plans {context.plans}",
        f"- **DM checkpoints:** {checkpoints}; untrained control: the same architecture, random frozen weights "
        f"(seed {context.seed})",
        f"- **Cases:** {split.describe()}",
        f"- **Fit cases:** {', '.join(split.fit)}",
        f"- **Selection cases:** {', '.join(split.selection)} (thresholds and the chosen setting)",
        f"- **Report cases:** {', '.join(split.report)} (nothing tuned on them)",
        f"- **Pixels:** {result.sampled_pixels} balanced body pixels (tumour / non-tumour) from the fit cases; "
        f"{context.classifier_description}; seed {context.seed}",
        f"- **Settings:** {', '.join(s.code for s in result.settings)}",
        *[f"- {note}" for note in result.notes],
        "",
        "Dice: thresholded probability map inside the body (threshold chosen per row on the selection cases); ROC-AUC "
        "and average precision (AP) over the body pixels. Mean ± std over report cases. The enhancement ceiling "
        "sees the real post-contrast phases (post - pre), which define the label: it is an upper bound, not a method.",
        "",
        "## Probe results",
        "",
        *summary_markdown(summary),
        "",
        "## Paired comparisons (per-case report Dice)",
        "",
        *comparisons_markdown(items),
        "",
        "## Setting chosen on the selection split",
        "",
        "| DM | classifier | setting | selection Dice | report Dice |",
        "|---|---|---|---|---|",
        *[f"| {line.model} | {CLASSIFIER_NAMES.get(line.classifier, line.classifier)} | {line.setting} "
          f"| {_number(line.selection_dice)} | {_pm(line.dice_mean, line.dice_std)} |"
          for line in chosen.itertuples(index=False)],
    ]
    for figure in (context.figure, *context.extra_figures):
        if figure:
            lines += ["", f"![{Path(figure).stem}]({figure})"]
    return "\n".join(lines) + "\n"
