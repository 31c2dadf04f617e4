"""Method comparisons over training runs: the unit of evidence is a run, not a case.

nnU-Net's training is not deterministic, so one trained model per fold samples the training noise once. A run is one
trained model of one method: (fold, repeat), and in label-efficiency benchmarks also N. For methods A and B, each run
gives the difference of A's and B's mean Dice over that run's cases (paired by fold and repeat: both trained on the
same cases, scored on the same cases). Over the R runs:

- the mean difference and a 95 % t-interval over the R per-run differences (the verdict rests on it);
- a hierarchical bootstrap interval: runs resampled with replacement, then cases within each resampled run (the same
  cases for A and B), the mean difference taken each time;
- each method's run-to-run standard deviation of mean Dice (over all runs, and between repeats of the same fold,
  the training noise alone).

Verdict: "better" where the t-interval lies above 0, "worse" where below, otherwise "no detectable difference" with
the interval's half-width. With one run per fold and fewer than 3 folds the training noise is not measured and no
verdict is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

RUN_COLUMNS = ("num_labelled", "fold", "repeat")
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
MIN_FOLDS_WITHOUT_REPEATS = 3


def run_columns(per_case: pd.DataFrame) -> list[str]:
    """The columns that identify a run in a per-case table (``fold`` always; ``repeat``, ``num_labelled`` where
    present)."""
    return [column for column in RUN_COLUMNS if column in per_case.columns]


def run_means(per_case: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean ``metric`` per method and run: columns method, the run columns, ``metric``, cases."""
    keys = ["method", *run_columns(per_case)]
    grouped = per_case.groupby(keys)[metric]
    return pd.concat([grouped.mean(), grouped.size().rename("cases")], axis=1).reset_index()


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided t-interval of the mean of ``values``; (nan, nan) for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def hierarchical_bootstrap(case_differences: Sequence[np.ndarray], samples: int = BOOTSTRAP_SAMPLES,
                           confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean per-run difference, resampling runs and then cases within each run.

    Args:
        case_differences: per run, the paired per-case differences (A - B on the same cases).
    """
    runs = [np.asarray(d, dtype=float) for d in case_differences if len(d)]
    if len(runs) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for sample in range(samples):
        chosen = rng.integers(len(runs), size=len(runs))
        means[sample] = np.mean([runs[i][rng.integers(len(runs[i]), size=len(runs[i]))].mean() for i in chosen])
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def verdict_class(low: float, high: float, folds: int, repeats: int) -> str:
    """The verdict without its detail: "better", "worse", "no detectable difference" or "no verdict"."""
    if (repeats <= 1 and folds < MIN_FOLDS_WITHOUT_REPEATS) or math.isnan(low):
        return "no verdict"
    return "better" if low > 0 else "worse" if high < 0 else "no detectable difference"


def verdict(low: float, high: float, runs: int, folds: int, repeats: int) -> str:
    """The run-level verdict of an interval (see the module docstring): its class, and why there is none or the
    interval's half-width where it says "no detectable difference"."""
    kind = verdict_class(low, high, folds, repeats)
    if repeats <= 1 and folds < MIN_FOLDS_WITHOUT_REPEATS:
        return (f"training noise not measured (one run per fold, {folds} fold(s)): no verdict; use --repeats or "
                f"more folds")
    if kind == "no verdict":
        return f"no verdict ({runs} run(s))"
    if kind == "no detectable difference":
        return f"{kind} (95 % interval half-width {(high - low) / 2:.3f})"
    return kind


@dataclass(frozen=True)
class RunLevelComparison:
    """``method`` minus ``reference`` over paired runs, for one metric."""

    method: str
    reference: str
    metric: str
    runs: int
    folds: int
    repeats: int
    mean_difference: float
    t_low: float
    t_high: float
    bootstrap_low: float
    bootstrap_high: float
    run_differences: tuple[float, ...]
    verdict: str

    @property
    def half_width(self) -> float:
        return (self.t_high - self.t_low) / 2

    @property
    def verdict_class(self) -> str:
        """``verdict`` without its detail: "better", "worse", "no detectable difference" or "no verdict"."""
        return verdict_class(self.t_low, self.t_high, self.folds, self.repeats)

    def as_dict(self) -> dict:
        values = {**self.__dict__, "verdict_class": self.verdict_class}
        values["run_differences"] = " ".join(f"{d:+.4f}" for d in self.run_differences)
        return values


def run_level_comparison(per_case: pd.DataFrame, method: str, reference: str, metric: str = "dice",
                         seed: int = 0) -> RunLevelComparison:
    """``method`` minus ``reference`` over the runs both have (paired by the run columns and, within a run, by
    case)."""
    keys = run_columns(per_case)
    a = per_case[per_case["method"] == method][[*keys, "case", metric]]
    b = per_case[per_case["method"] == reference][[*keys, "case", metric]]
    merged = a.merge(b, on=[*keys, "case"], suffixes=("_a", "_b")).dropna()
    merged["difference"] = merged[f"{metric}_a"] - merged[f"{metric}_b"]
    per_run = [group["difference"].to_numpy() for _, group in merged.groupby(keys)]
    differences = np.array([d.mean() for d in per_run])
    folds = int(merged["fold"].nunique()) if len(merged) else 0
    repeats = int(merged["repeat"].nunique()) if "repeat" in merged and len(merged) else 1
    low, high = t_interval(differences)
    boot_low, boot_high = hierarchical_bootstrap(per_run, seed=seed)
    return RunLevelComparison(
        method=method, reference=reference, metric=metric, runs=len(differences), folds=folds, repeats=repeats,
        mean_difference=float(differences.mean()) if len(differences) else math.nan, t_low=low, t_high=high,
        bootstrap_low=boot_low, bootstrap_high=boot_high, run_differences=tuple(float(d) for d in differences),
        verdict=verdict(low, high, len(differences), folds, repeats),
    )


def run_to_run_spread(per_case: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per method: runs, the mean and standard deviation of per-run mean ``metric`` over all runs, and the
    standard deviation between repeats of the same fold (pooled over folds; NaN without repeats): the training
    noise alone."""
    means = run_means(per_case, metric)
    within_keys = [c for c in ("num_labelled", "fold") if c in means.columns]
    rows = []
    for method, of_method in means.groupby("method", sort=False):
        within = math.nan
        if "repeat" in of_method and of_method["repeat"].nunique() > 1:
            groups = [g[metric].to_numpy() for _, g in of_method.groupby(within_keys) if len(g) > 1]
            dof = sum(len(g) - 1 for g in groups)
            within = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof) if dof else math.nan
        rows.append({"method": method, "runs": len(of_method), f"{metric}_run_mean": float(of_method[metric].mean()),
                     f"{metric}_run_std": float(of_method[metric].std(ddof=1)) if len(of_method) > 1 else math.nan,
                     f"{metric}_repeat_std": within})
    columns = ["method", "runs", f"{metric}_run_mean", f"{metric}_run_std", f"{metric}_repeat_std"]
    return pd.DataFrame(rows, columns=columns)  # the columns even without runs (a benchmark of baselines only)
