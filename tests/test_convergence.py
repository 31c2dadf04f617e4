"""The convergence study (benchmarks/convergence.py): its compute rule and its report, rebuilt from records alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from nnunet_dkm.evaluation.records import RecordStore, RunIdentity

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "convergence.py"
TRAINERS = {"vanilla": "nnUNetTrainer", "dkm": "nnUNetTrainerDKM",
            "untrained_dm_control": "nnUNetTrainerDKM_untrainedDM"}


@pytest.fixture
def convergence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("convergence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RECORDS", tmp_path / "records" / "convergence")
    monkeypatch.setattr(module, "PLAN_FILE", tmp_path / "records" / "convergence_plan.json")
    return module


def record_runs(folder: Path, schedule: str, dice: dict[str, float], wall_seconds: float) -> None:
    """Two folds x two repeats of each method, 3 cases each, with Dice ``dice[method]`` plus a small run effect."""
    store = RecordStore(folder)
    for method, base in dice.items():
        for fold in (0, 1):
            for repeat in (0, 1):
                identity = RunIdentity(study="convergence", method=method, trainer=f"{TRAINERS[method]}_{schedule}",
                                       dataset="Dataset990_DKMPhantom", dataset_fingerprint="f" * 16,
                                       configuration="2d", plans="nnUNetPlans", fold=fold, repeat=repeat,
                                       schedule=schedule, dm_sha256=None if method == "vanilla" else "a" * 64)
                run_effect = 0.01 * (fold - repeat)
                scores = pd.DataFrame({"case": ["a", "b", "c"],
                                       "dice": [base + run_effect + d for d in (-0.02, 0.0, 0.02)]})
                store.write(identity, scores, wall_seconds)


def test_the_compute_rule_picks_10_epochs_when_20_would_exceed_30_core_hours(convergence) -> None:
    record_runs(convergence.RECORDS, "1epoch", {"vanilla": 0.4, "dkm": 0.45, "untrained_dm_control": 0.41}, 600.0)
    plan = convergence.compute_plan(convergence.study_records())
    # phase 1: 3 methods x 4 runs x (1 + 5 + 20) epochs x 600 s; phase 2: 3 methods x 4 runs x 20 epochs x 600 s
    assert plan["phases_1_and_2_core_hours_at_20_epochs"] == pytest.approx((3 * 4 * 26 + 3 * 4 * 20) / 6, abs=0.1)
    assert plan["longest_schedule"] == "10epochs"
    for path in convergence.RECORDS.glob("*.json"):
        path.unlink()
    record_runs(convergence.RECORDS, "1epoch", {"vanilla": 0.4, "dkm": 0.45, "untrained_dm_control": 0.41}, 60.0)
    assert convergence.compute_plan(convergence.study_records())["longest_schedule"] == "20epochs"


def test_the_report_rebuilds_byte_identically_from_the_records_alone(convergence, tmp_path: Path) -> None:
    for schedule in ("1epoch", "5epochs"):
        record_runs(convergence.RECORDS, schedule, {"vanilla": 0.4, "dkm": 0.5, "untrained_dm_control": 0.42}, 60.0)
    output = tmp_path / "results_convergence.md"
    convergence.report(output)
    first = output.read_text()
    convergence.report(output)
    assert output.read_text() == first
    assert "| dkm | 5epochs | 1250 | 4 | 0.500 |" in first
    assert "| 5epochs | untrained_dm_control | 4 | +0.080 |" in first
    assert (tmp_path / "convergence.png").read_bytes()[:4] == b"\x89PNG"
