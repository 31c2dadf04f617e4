"""Summaries and paired comparisons of per-case results.

The per-case table has one row per (method, fold, case) with the columns of
:class:`nnunet_dkm.evaluation.metrics.CaseMetrics`. A method trained on several folds contributes one row per fold
and case; paired comparisons match rows on (fold, case), so training noise across folds is part of the spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

METRICS = ("dice", "jaccard", "hd95_mm")


def summarise(per_case: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Mean and standard deviation of each metric per method, in ``methods`` order.

    Columns: method, n (rows: folds x cases), folds, {metric}_mean, {metric}_std, empty_predictions.
    """
    rows = []
    for method in methods:
        rows_of = per_case[per_case["method"] == method]
        if rows_of.empty:
            continue
        row = {"method": method, "n": len(rows_of), "folds": rows_of["fold"].nunique(),
               "runs": len(rows_of.groupby([c for c in ("fold", "repeat") if c in rows_of.columns]))}
        for metric in METRICS:
            row[f"{metric}_mean"] = float(rows_of[metric].mean())
            row[f"{metric}_std"] = float(rows_of[metric].std(ddof=0))
        row["empty_predictions"] = int(rows_of["empty_prediction"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PairedComparison:
    """``method`` minus ``reference`` over cases matched on (fold, case), for one metric."""

    method: str
    reference: str
    metric: str
    pairs: int
    mean_difference: float
    std_difference: float
    wins: int
    ties: int
    losses: int
    wilcoxon_p: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def paired_comparison(per_case: pd.DataFrame, method: str, reference: str, metric: str = "dice") -> PairedComparison:
    """Paired per-case difference of ``metric`` (matched on fold, repeat where present, and case) and the two-sided
    Wilcoxon signed-rank p-value. It holds the trained models fixed: training noise is not in it.

    The p-value is NaN with fewer than two pairs or when every difference is zero. "Wins" are pairs where
    ``method`` is better (higher Dice or Jaccard, lower HD95).
    """
    keys = [column for column in ("fold", "repeat", "case") if column in per_case.columns]
    a = per_case[per_case["method"] == method][[*keys, metric]]
    b = per_case[per_case["method"] == reference][[*keys, metric]]
    merged = a.merge(b, on=keys, suffixes=("_method", "_reference")).dropna()
    diff = (merged[f"{metric}_method"] - merged[f"{metric}_reference"]).to_numpy(dtype=float)
    better = -diff if metric == "hd95_mm" else diff
    p = float("nan")
    if len(diff) >= 2 and np.any(diff != 0):
        p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedComparison(
        method=method, reference=reference, metric=metric, pairs=len(diff),
        mean_difference=float(diff.mean()) if len(diff) else math.nan,
        std_difference=float(diff.std(ddof=0)) if len(diff) else math.nan,
        wins=int((better > 0).sum()), ties=int((better == 0).sum()), losses=int((better < 0).sum()), wilcoxon_p=p,
    )
