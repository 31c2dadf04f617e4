"""The regime study's design rules (benchmarks/regime_map.py): which schedule and which cues it runs, fixed before
any segmentation result is seen."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "regime_map.py"


@pytest.fixture(scope="module")
def regime_map():
    spec = importlib.util.spec_from_file_location("regime_map", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def curve(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"schedule": s, "num_labelled": n, "dice": d} for s, n, d in rows])


def test_the_study_schedule_is_the_shortest_that_reaches_the_few_label_regime(regime_map) -> None:
    table = curve([("demo", "4", 0.47), ("demo", "all", 0.48), ("1epoch", "4", 0.40), ("1epoch", "all", 0.46),
                   ("2epochs", "4", 0.40), ("2epochs", "all", 0.50)])
    assert regime_map.study_schedule(table)[0] == "1epoch"
    flat = curve([("demo", "4", 0.47), ("demo", "all", 0.48), ("1epoch", "4", 0.45), ("1epoch", "all", 0.46)])
    schedule, why = regime_map.study_schedule(flat)
    assert schedule == "1epoch" and "no schedule" in why


def test_the_second_segmentation_point_is_the_cue_with_the_largest_probe_gap_besides_the_default(regime_map) -> None:
    gaps = pd.DataFrame({"cue": [0.0, 0.5, 1.0, 2.0], "pretrained_selection": [0.50, 0.70, 0.62, 0.80],
                         "untrained_selection": [0.49, 0.55, 0.50, 0.78]})
    assert regime_map.segmentation_cues(gaps) == [0.5, 1.0]  # 0.5 has the largest gap but is the default point
    lines = regime_map.second_point_lines(gaps)  # the report shows the rule's numbers and its choice
    assert "| 1 | 0.620 | 0.500 | +0.120 |" in lines and "Second point: **cue 1**." in lines
    assert "Second point: not fixed yet" in regime_map.second_point_lines(gaps[gaps["cue"] != 1.0])[-1]


def test_segmentation_runs_the_default_cue_before_the_probe_and_refuses_cues_outside_the_design(
        regime_map, tmp_path: Path, monkeypatch) -> None:
    assert regime_map.cues_to_segment(tmp_path, [regime_map.DEFAULT_CUE]) == [0.5]  # no probe output needed
    probed = pd.DataFrame({"cue": [0.0, 0.5, 2.0], "pretrained_selection": [0.6, 0.7, 0.9],
                           "untrained_selection": [0.5, 0.6, 0.85]})
    monkeypatch.setattr(regime_map, "probe_gaps", lambda workdir: probed)
    with pytest.raises(SystemExit, match="cue\\(s\\) 1 have no probe yet"):  # the sweep decides, not its first cues
        regime_map.cues_to_segment(tmp_path, None)
    swept = pd.concat([probed, pd.DataFrame({"cue": [1.0], "pretrained_selection": [0.7],
                                             "untrained_selection": [0.65]})])
    monkeypatch.setattr(regime_map, "probe_gaps", lambda workdir: swept)
    assert regime_map.cues_to_segment(tmp_path, None) == [0.5, 0.0]
    with pytest.raises(SystemExit, match=r"\[2\.0\] are not segmentation points"):
        regime_map.cues_to_segment(tmp_path, [2.0])


def test_the_report_of_a_workdir_without_outputs_names_each_stage_as_not_run(regime_map, tmp_path: Path) -> None:
    output = tmp_path / "results_regime_map.md"
    regime_map.report(tmp_path / "empty_workdir", output)
    text = output.read_text()
    assert "Not run: `--stage curve`." in text
    assert output.with_name("regime_map.png").stat().st_size > 0


def test_the_report_states_each_segmentation_point_with_its_interval_half_width_and_per_method_dice(
        regime_map, tmp_path: Path) -> None:
    rows = []
    for method, offset in (("vanilla", 0.0), ("dkm", 0.05), ("untrained_dm_control", 0.01)):
        for fold in range(3):
            for repeat in range(2):
                for case in range(2):
                    rows.append({"method": method, "fold": fold, "repeat": repeat, "case": f"c{case}",
                                 "dice": 0.5 + offset + 0.01 * fold + 0.002 * case, "num_labelled": "4",
                                 "labelled_cases": 4})
    folder = regime_map.segmentation_folder(tmp_path, regime_map.DEFAULT_CUE)
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "per_case_label_efficiency.csv", index=False)
    output = tmp_path / "results_regime_map.md"
    regime_map.report(tmp_path, output)
    text = output.read_text()
    assert "| 0.5 | 4 | untrained_dm_control | 6 | +0.040 | [+0.040, +0.040] | 0.000 |" in text
    assert "| 0.5 | 4 | dkm | 12 | 0.561 | 0.551 0.551 0.561 0.561 0.571 0.571 |" in text


def test_training_wall_time_comes_from_finished_nnunet_training_logs_of_the_schedule(
        regime_map, tmp_path: Path) -> None:
    results = tmp_path / "nnUNet_results" / "Dataset980_DKMPhantom"
    logs = {results / "nnUNetTrainerDKM_1epoch__nnUNetPlans__2d" / "fold_0": "Training done.",
            results / "dkm_benchmark_repeats" / "repeat_1" / "Dataset980_DKMPhantom"
            / "nnUNetTrainerDKM_1epoch__nnUNetPlans__2d" / "fold_5": "Training done.",
            results / "nnUNetTrainer_1epoch__nnUNetPlans__2d" / "fold_1": "Epoch 0",  # interrupted attempt
            results / "nnUNetTrainer_demo__nnUNetPlans__2d" / "fold_0": "Training done."}  # another schedule
    for folder, last in logs.items():
        folder.mkdir(parents=True)
        (folder / "training_log_2026_12_5_17_00_00.txt").write_text(
            f"\n#####\n2026-12-05 17:00:00.000000: Epoch 0\n2026-12-05 17:06:30.500000: {last}\n")
    times = regime_map.training_minutes(tmp_path, 0.5, "1epoch")
    assert times["trainer"].tolist() == ["nnUNetTrainerDKM_1epoch"] * 2
    assert times["minutes"].tolist() == pytest.approx([6.5083, 6.5083], abs=1e-3)
