"""The benchmark's comparisons and the plain statements of its report.

Which pairs are compared: every network row against vanilla nnU-Net, and DKM against each control present (untrained,
pre-only and regression DM) and against the virtual-contrast peer. Each comparison is judged over training runs
(``nnunet_dkm.evaluation.run_statistics``): "better" only where the 95 % t-interval of the per-run differences lies
above 0. The case-level Wilcoxon test is reported beside it as secondary information: it holds the trained models
fixed, so it does not contain the training noise.
"""

from __future__ import annotations

import pandas as pd

from nnunet_dkm.evaluation.benchmark.methods import RULES
from nnunet_dkm.evaluation.run_statistics import RunLevelComparison

DKM_REFERENCES = ("untrained_dm_control", "pre_only_dm_control", "regression_dm_control", "virtual_contrast")
# what a comparison of DKM with each reference answers
QUESTIONS = {
    ("dkm", "vanilla"): "DKM vs vanilla nnU-Net on the pre-contrast image",
    ("dkm", "untrained_dm_control"): "DKM vs the untrained-DM control (learned DM vs extra capacity)",
    ("dkm", "pre_only_dm_control"): "DKM vs the pre-only DM (kinetics vs generic diffusion features)",
    ("dkm", "regression_dm_control"): "DKM vs the regression DM (diffusion training vs a direct pre -> post map)",
    ("dkm", "virtual_contrast"): "DKM vs synthesise-then-segment (the peer method)",
}


def comparison_pairs(keys: list[str], present: set[str]) -> list[tuple[str, str]]:
    """(method, reference) pairs of the report, in table order."""
    pairs = [(k, "vanilla") for k in keys if k != "vanilla" and k in present and k not in RULES
             and "vanilla" in present]
    pairs += [("dkm", reference) for reference in DKM_REFERENCES if {"dkm", reference} <= present]
    return pairs


def findings_of(summary: pd.DataFrame, comparisons: list[RunLevelComparison], labels: dict[str, str]) -> list[str]:
    """Plain statements computed from the tables (no hand-written numbers)."""
    means = dict(zip(summary["method"], summary["dice_mean"], strict=True))
    lines = []
    for c in comparisons:
        question = QUESTIONS.get((c.method, c.reference), f"{labels[c.method]} vs {labels[c.reference]}")
        differences = ", ".join(f"{d:+.3f}" for d in c.run_differences)
        lines.append(f"{question}: **{c.verdict}**: mean difference {c.mean_difference:+.3f} Dice over {c.runs} "
                     f"training run(s) ({c.folds} fold(s) x {c.repeats} repeat(s)), 95 % t-interval "
                     f"[{c.t_low:+.3f}, {c.t_high:+.3f}], hierarchical bootstrap [{c.bootstrap_low:+.3f}, "
                     f"{c.bootstrap_high:+.3f}]; per run: {differences}")
    ceiling = [k for k in ("oracle_post_contrast", "label_rule_post_contrast") if k in means]
    if ceiling and "vanilla" in means and "dkm" in means:
        best = max(ceiling, key=lambda k: means[k])
        lines.append("post-contrast ceiling: " + ", ".join(f"{labels[k]} Dice {means[k]:.3f}" for k in ceiling)
                     + f"; vanilla is {means[best] - means['vanilla']:.3f} and DKM {means[best] - means['dkm']:.3f} "
                     f"below the higher one")
    return lines
