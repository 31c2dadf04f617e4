"""Run-level statistics of the benchmark: intervals over training runs, their coverage, and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nnunet_dkm.evaluation.run_statistics import (
    hierarchical_bootstrap,
    run_level_comparison,
    run_to_run_spread,
    t_interval,
    verdict,
)


def per_case_table(run_effects: dict[tuple[int, int], float], cases: int = 12, case_noise: float = 0.05,
                   seed: int = 0) -> pd.DataFrame:
    """Vanilla and DKM per (fold, repeat, case): DKM = vanilla + the run's effect + case noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for (fold, repeat), effect in run_effects.items():
        for case in range(cases):
            base = rng.uniform(0.3, 0.7)
            rows.append({"method": "vanilla", "fold": fold, "repeat": repeat, "case": f"c{case}", "dice": base})
            rows.append({"method": "dkm", "fold": fold, "repeat": repeat, "case": f"c{case}",
                         "dice": base + effect + rng.normal(0, case_noise)})
    return pd.DataFrame(rows)


def test_t_interval_is_the_textbook_one() -> None:
    values = np.array([0.01, 0.03, 0.02, 0.04])
    low, high = t_interval(values)
    # mean 0.025, sd 0.0129099, t(0.975, 3) = 3.182446
    assert low == pytest.approx(0.025 - 3.182446 * 0.0129099 / 2, abs=1e-6)
    assert high == pytest.approx(0.025 + 3.182446 * 0.0129099 / 2, abs=1e-6)
    assert all(math.isnan(v) for v in t_interval(np.array([0.1])))


def test_the_interval_covers_a_known_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    true_mean, covered, trials = 0.02, 0, 2000
    for _ in range(trials):
        low, high = t_interval(rng.normal(true_mean, 0.015, size=6))  # 2 folds x 3 repeats
        covered += low <= true_mean <= high
    assert 0.93 <= covered / trials <= 0.97


def test_runs_that_disagree_give_no_detectable_difference() -> None:
    per_case = per_case_table({(0, 0): 0.03, (0, 1): -0.02, (1, 0): 0.01, (1, 1): -0.025, (2, 0): 0.02})
    comparison = run_level_comparison(per_case, "dkm", "vanilla")
    assert comparison.runs == 5 and comparison.folds == 3 and comparison.repeats == 2
    assert comparison.t_low < 0 < comparison.t_high
    assert comparison.verdict.startswith("no detectable difference")
    assert f"{comparison.half_width:.3f}" in comparison.verdict
    assert comparison.verdict_class == comparison.as_dict()["verdict_class"] == "no detectable difference"


def test_consistent_runs_give_a_verdict_either_way() -> None:
    better = run_level_comparison(per_case_table({(f, r): 0.05 for f in range(3) for r in range(2)}), "dkm",
                                  "vanilla")
    assert better.verdict == "better" and better.mean_difference == pytest.approx(0.05, abs=0.02)
    assert better.bootstrap_low > 0
    worse = run_level_comparison(per_case_table({(f, r): -0.05 for f in range(3) for r in range(2)}), "dkm",
                                 "vanilla")
    assert worse.verdict == "worse"
    assert (better.verdict_class, worse.verdict_class) == ("better", "worse")


def test_one_run_per_fold_on_two_folds_is_not_judged() -> None:
    comparison = run_level_comparison(per_case_table({(0, 0): 0.05, (1, 0): 0.06}), "dkm", "vanilla")
    assert comparison.verdict.startswith("training noise not measured")
    assert comparison.verdict_class == "no verdict"
    assert verdict(0.01, 0.02, 3, 3, 1) == "better"  # three folds without repeats are judged


def test_hierarchical_bootstrap_resamples_runs_then_cases() -> None:
    identical_runs = [np.full(8, 0.02)] * 4
    assert hierarchical_bootstrap(identical_runs) == pytest.approx((0.02, 0.02))
    spread_runs = [np.full(8, value) for value in (-0.05, 0.0, 0.05, 0.10)]
    low, high = hierarchical_bootstrap(spread_runs)
    assert -0.05 <= low < 0.025 < high <= 0.10


def test_spread_separates_repeats_of_a_fold_from_all_runs() -> None:
    rows = []
    for fold, base in ((0, 0.4), (1, 0.6)):
        for repeat, noise in ((0, -0.01), (1, 0.01)):
            rows.append({"method": "vanilla", "fold": fold, "repeat": repeat, "case": "c0", "dice": base + noise})
    spread = run_to_run_spread(pd.DataFrame(rows)).set_index("method")
    assert spread.loc["vanilla", "runs"] == 4
    # each fold's repeats are its base -/+ 0.01: sample std 0.01 * sqrt(2), the same pooled over both folds
    assert spread.loc["vanilla", "dice_repeat_std"] == pytest.approx(0.01 * math.sqrt(2))
    assert spread.loc["vanilla", "dice_run_std"] > 0.1  # folds differ by 0.2


def test_run_to_run_spread_without_network_runs_keeps_its_columns() -> None:
    """A benchmark of the rules alone (``--methods baselines``) has no network run; its report still merges on these
    columns."""
    empty = per_case_table({(0, 0): 0.0}).iloc[0:0]
    spread = run_to_run_spread(empty)
    assert spread.empty
    assert list(spread.columns) == ["method", "runs", "dice_run_mean", "dice_run_std", "dice_repeat_std"]
