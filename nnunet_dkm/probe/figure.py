"""``probe.png``: mean report Dice per row (bars, ± std over cases) and probability maps of a few report slices for
the intensity, filter bank, untrained and probed DM rows. matplotlib's object-oriented ``Figure`` only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.probe.features import FILTER_BANK, INTENSITY, dm_row_label
from nnunet_dkm.probe.results import UNTRAINED, Preview, ProbeResult
from nnunet_dkm.probe.tables import CLASSIFIER_NAMES

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
