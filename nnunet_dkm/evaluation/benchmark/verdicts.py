"""The benchmark's verdict rules: when a difference counts as a gain, and the plain statements of the report.

A case-level test alone over-counts: the cases of one fold share one training run. A gain therefore counts only
where it is significant over paired cases (two-sided Wilcoxon, p < 0.05) AND every fold's mean difference agrees.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nnunet_dkm.evaluation.statistics import PairedComparison

P_THRESHOLD = 0.05


def gain_verdict(mean_difference: float, p_value: float, fold_differences: np.ndarray, better: str,
                 not_better: str) -> str:
    """``better`` only for a significant case-level gain (p < 0.05) that every fold's mean agrees with.

    Where the folds disagree, the gain is reported as not consistent, because training noise can then explain it.
    """
    significant = p_value == p_value and p_value < P_THRESHOLD and mean_difference > 0
    if significant and len(fold_differences) and np.all(fold_differences > 0):
        return better
    if significant:
        return (f"{not_better} (a case-level gain, p < {P_THRESHOLD}, but not in every fold, so training noise "
                f"can explain it)")
    return not_better


def findings_of(summary: pd.DataFrame, comparisons: dict[tuple[str, str], PairedComparison], labels: dict[str, str],
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
