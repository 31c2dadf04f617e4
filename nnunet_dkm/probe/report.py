"""The probe's report: the summary per row and classifier, paired comparisons, the setting chosen on the selection
split, ``results.md``, ``results.csv`` (one line per row x classifier x report case) and ``probe.png`` (mean report
Dice per row and probability maps of a few report slices), each written atomically. Figures use matplotlib's
object-oriented ``Figure`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from nnunet_dkm.atomic import remove_stale_temporaries, report_removed, write_atomically
from nnunet_dkm.evaluation.statistics import PairedComparison, paired_comparison
from nnunet_dkm.probe.features import FILTER_BANK, INTENSITY, dm_row_label
from nnunet_dkm.probe.run import UNTRAINED, ProbeResult
from nnunet_dkm.probe.scoring import Preview, ProbeOptions
from nnunet_dkm.reporting import ReportHeader, format_mean_std, format_number, format_p, markdown_table

CLASSIFIER_NAMES = {"logistic": "logistic regression", "mlp": "MLP"}
METRICS = ("dice", "auc", "average_precision")


def _population_std(values: pd.Series) -> float:
    return float(values.std(ddof=0))


def summary_table(result: ProbeResult) -> pd.DataFrame:
    """One line per (row, classifier) in table order: n, the threshold and selection Dice, the setting's forward time
    per slice, and mean and std of Dice, AUC and AP over report cases."""
    aggregations = {"n": ("dice", "size"), "threshold": ("threshold", "first"),
                    "selection_dice": ("selection_dice", "first")}
    for metric in METRICS:
        aggregations[f"{metric}_mean"] = (metric, "mean")
        aggregations[f"{metric}_std"] = (metric, _population_std)
    summary = (result.per_case.groupby(["row", "kind", "model", "setting", "classifier"], sort=False)
               .agg(**aggregations).reset_index())
    costs = result.costs.set_index("setting")["forward_ms_per_slice"]
    summary.insert(8, "forward_ms_per_slice", summary["setting"].map(costs))
    return summary


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
    """Every probed DM against the untrained DM at the same setting and against the filter bank, and the first DM
    (the one under test) against every other probed DM (e.g. the pre-only and regression controls), per
    classifier."""
    out = []
    first = result.checkpoints[0].name
    for info in result.checkpoints:
        for setting in result.settings:
            for classifier in dict.fromkeys(result.per_case["classifier"]):
                method = dm_row_label(info.name, setting)
                references = [dm_row_label(UNTRAINED, setting), FILTER_BANK]
                if info.name == first:
                    references += [dm_row_label(other.name, setting) for other in result.checkpoints[1:]]
                for reference in references:
                    out.append(ProbeComparison(info.name, setting.code, classifier, reference,
                                               _paired(result.per_case, method, reference, classifier)))
    return out


def case_interval(comparison: PairedComparison) -> tuple[float, float]:
    """95 % t-interval of the mean per-case difference (over the report cases; the classifiers held fixed)."""
    n = comparison.pairs
    if n < 2:
        return math.nan, math.nan
    sample_std = comparison.std_difference * math.sqrt(n / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sample_std / math.sqrt(n)
    return comparison.mean_difference - half, comparison.mean_difference + half


def comparisons_table(items: Sequence[ProbeComparison]) -> pd.DataFrame:
    """The comparisons with their case-level intervals, one line each."""
    rows = []
    for item in items:
        low, high = case_interval(item.comparison)
        rows.append({"model": item.model, "setting": item.setting, "classifier": item.classifier,
                     "reference": item.reference, "cases": item.comparison.pairs,
                     "mean_difference": item.comparison.mean_difference, "interval_low": low, "interval_high": high,
                     "wins": item.comparison.wins, "losses": item.comparison.losses,
                     "wilcoxon_p": item.comparison.wilcoxon_p})
    return pd.DataFrame(rows)


def chosen_settings(summary: pd.DataFrame) -> pd.DataFrame:
    """Per DM (untrained included) and classifier, the setting with the best mean selection Dice, with its report
    Dice: what a user of the selection split alone would pick."""
    dms = summary[summary["kind"].isin(["dm", "untrained_dm"])]
    if dms.empty:
        return pd.DataFrame(columns=["model", "classifier", "setting", "selection_dice", "dice_mean", "dice_std"])
    best = dms.loc[dms.fillna({"selection_dice": -1.0}).groupby(["model", "classifier"], sort=False)
                   ["selection_dice"].idxmax()]
    return best[["model", "classifier", "setting", "selection_dice", "dice_mean", "dice_std"]].reset_index(drop=True)


def summary_markdown(summary: pd.DataFrame) -> list[str]:
    """The summary as markdown table lines."""
    return markdown_table([{
        "row": line.row, "classifier": CLASSIFIER_NAMES.get(line.classifier, line.classifier),
        "DM forward (ms/slice)": format_number(line.forward_ms_per_slice, 1) if line.setting else "",
        "threshold": f"{line.threshold:.2f}", "selection Dice": format_number(line.selection_dice),
        "report Dice": format_mean_std(line.dice_mean, line.dice_std),
        "ROC-AUC": format_mean_std(line.auc_mean, line.auc_std),
        "AP": format_mean_std(line.average_precision_mean, line.average_precision_std),
    } for line in summary.itertuples(index=False)])


def comparisons_markdown(items: Sequence[ProbeComparison]) -> list[str]:
    """The paired comparisons as markdown table lines."""
    return markdown_table([{
        "DM": item.model, "setting": item.setting,
        "classifier": CLASSIFIER_NAMES.get(item.classifier, item.classifier), "minus": item.reference,
        "cases": item.comparison.pairs, "mean Dice difference": format_number(item.comparison.mean_difference),
        "95 % interval over cases": "[{}, {}]".format(*map(format_number, case_interval(item.comparison))),
        "wins / ties / losses": f"{item.comparison.wins} / {item.comparison.ties} / {item.comparison.losses}",
        "Wilcoxon p": format_p(item.comparison.wilcoxon_p),
    } for item in items])


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
        *ReportHeader(context.title, context.command, context.machine, context.date, notes=[
            f"**Dataset:** {context.dataset}; configuration {context.configuration}; plans {context.plans}",
            f"**DM checkpoints:** {checkpoints}; untrained control: the same architecture, random frozen weights "
            f"(seed {context.seed})",
            f"**Cases:** {split.describe()}",
            f"**Fit cases:** {', '.join(split.fit)}",
            f"**Selection cases:** {', '.join(split.selection)} (thresholds and the chosen setting)",
            f"**Report cases:** {', '.join(split.report)} (nothing tuned on them)",
            f"**Pixels:** {result.sampled_pixels} balanced body pixels (tumour / non-tumour) from the fit cases; "
            f"{context.classifier_description}; seed {context.seed}",
            f"**Settings:** {', '.join(s.code for s in result.settings)}", *result.notes]).lines(),
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
        *markdown_table([{"DM": line.model, "classifier": CLASSIFIER_NAMES.get(line.classifier, line.classifier),
                          "setting": line.setting, "selection Dice": format_number(line.selection_dice),
                          "report Dice": format_mean_std(line.dice_mean, line.dice_std)}
                         for line in chosen.itertuples(index=False)],
                        columns=["DM", "classifier", "setting", "selection Dice", "report Dice"]),
    ]
    for figure in (context.figure, *context.extra_figures):
        if figure:
            lines += ["", f"![{Path(figure).stem}]({figure})"]
    return "\n".join(lines) + "\n"


KIND_COLOURS = {"intensity": "#7f7f7f", "filter_bank": "#8c564b", "untrained_dm": "#9467bd", "dm": "#1f77b4",
                "ceiling": "#2ca02c"}


def preview_rows(result: ProbeResult, chosen: pd.DataFrame, classifier: str) -> list[str]:
    """Rows whose maps are shown: intensity, filter bank, then the untrained DM and every probed DM at the setting
    the first probed DM chose on the selection split."""
    first = result.checkpoints[0].name
    picked = chosen[(chosen["model"] == first) & (chosen["classifier"] == classifier)]
    code = picked["setting"].iloc[0] if not picked.empty else result.settings[0].code
    setting = next(s for s in result.settings if s.code == code)
    return [INTENSITY, FILTER_BANK, dm_row_label(UNTRAINED, setting),
            *[dm_row_label(info.name, setting) for info in result.checkpoints]]


def _bars(axes, summary: pd.DataFrame) -> None:
    classifiers = list(dict.fromkeys(summary["classifier"]))
    rows = list(dict.fromkeys(summary["row"]))
    height = 0.8 / max(len(classifiers), 1)
    for index, classifier in enumerate(classifiers):
        lines = summary[summary["classifier"] == classifier].set_index("row").reindex(rows)
        positions = np.arange(len(rows)) + index * height
        axes.barh(positions, lines["dice_mean"].fillna(0), height, xerr=lines["dice_std"].fillna(0),
                  color=[KIND_COLOURS.get(kind, "#333333") for kind in lines["kind"]],
                  alpha=1.0 if index == 0 else 0.55, label=CLASSIFIER_NAMES.get(classifier, classifier),
                  error_kw={"elinewidth": 0.8})
    axes.set_yticks(np.arange(len(rows)) + 0.4 - height / 2, rows, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("mean report Dice (± std over cases); darker: " + CLASSIFIER_NAMES.get(classifiers[0], "")
                    + (", lighter: " + CLASSIFIER_NAMES.get(classifiers[1], "") if len(classifiers) > 1 else ""))
    axes.grid(axis="x", alpha=0.3)


def _maps(subfigure, previews: Sequence[Preview], rows: Sequence[str], classifier: str) -> None:
    grid = subfigure.subplots(len(previews), len(rows) + 1, squeeze=False)
    for r, preview in enumerate(previews):
        grid[r, 0].imshow(preview.pre, cmap="gray")
        grid[r, 0].contour(preview.seg.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        grid[r, 0].set_title(f"{preview.case_id} z={preview.z}", fontsize=7)
        for c, row in enumerate(rows, start=1):
            probabilities = preview.probabilities.get((row, classifier))
            if probabilities is not None:
                grid[r, c].imshow(probabilities, cmap="magma", vmin=0, vmax=1)
                grid[r, c].contour(preview.seg.astype(float), levels=[0.5], colors="cyan", linewidths=0.5)
            if r == 0:
                grid[r, c].set_title(row, fontsize=7)
    for axes in grid.ravel():
        axes.set_xticks([])
        axes.set_yticks([])


def probe_figure(result: ProbeResult, summary: pd.DataFrame, chosen: pd.DataFrame) -> Figure:
    """Bars of mean report Dice per row and, below, probability maps (the MLP's where probed) of preview slices."""
    classifiers = list(dict.fromkeys(summary["classifier"]))
    classifier = "mlp" if "mlp" in classifiers else classifiers[0]
    rows = preview_rows(result, chosen, classifier)
    num_rows = len(dict.fromkeys(summary["row"]))
    bar_height = 1.0 + 0.22 * num_rows * max(len(classifiers), 1) / 2
    map_height = 1.6 * max(len(result.previews), 1) + 0.4
    figure = Figure(figsize=(max(9.0, 1.6 * (len(rows) + 1)), bar_height + map_height), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[bar_height, map_height])
    _bars(top.subplots(), summary)
    if result.previews:
        _maps(bottom, result.previews, rows, classifier)
        bottom.suptitle(f"{CLASSIFIER_NAMES.get(classifier, classifier)} tumour probability (red / cyan: label)",
                        fontsize=8)
    return figure


@dataclass(frozen=True)
class ProbeFiles:
    """Where the outputs go."""

    markdown: Path
    csv: Path
    figure: Path

    @classmethod
    def in_folder(cls, folder: Path, stem: str = "results", figure: str = "probe.png") -> ProbeFiles:
        return cls(folder / f"{stem}.md", folder / f"{stem}.csv", folder / figure)


def per_case_csv(result: ProbeResult) -> pd.DataFrame:
    """The per-case table with each setting's forward time per slice."""
    return result.per_case.merge(result.costs, on="setting", how="left")


def write_results(result: ProbeResult, context: ReportContext, files: ProbeFiles) -> str:
    """Write the three files; returns the summary table as markdown (for printing)."""
    report_removed(remove_stale_temporaries(files.markdown.parent), "partly written file")
    summary = summary_table(result)
    chosen = chosen_settings(summary)
    items = comparisons(result)
    figure = probe_figure(result, summary, chosen)
    write_atomically(files.figure, lambda path: figure.savefig(path, dpi=120))
    relative = files.figure.name if files.figure.parent == files.markdown.parent else str(files.figure)
    context = replace(context, figure=relative)
    text = markdown_report(result, context, summary, items, chosen)
    write_atomically(files.markdown, lambda path: path.write_text(text))
    write_atomically(files.csv, lambda path: per_case_csv(result).to_csv(path, index=False))
    folder, stem = files.csv.parent, files.csv.stem
    write_atomically(folder / f"{stem}_summary.csv", lambda path: summary.to_csv(path, index=False))
    write_atomically(folder / f"{stem}_comparisons.csv",
                     lambda path: comparisons_table(items).to_csv(path, index=False))
    return "\n".join(summary_markdown(summary))


def classifier_description(options: ProbeOptions) -> str:
    """One sentence on the classifiers, for the report."""
    return (f"classifiers {', '.join(options.classifiers)}: {options.classifier_settings.describe()}; features "
            f"standardised with the fit pixels' mean / std; at most {options.pixels_per_class} pixels per class and "
            "case")
