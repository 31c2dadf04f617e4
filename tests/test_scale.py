"""The pure parts of the scale benchmark (benchmarks/scale.py): GNU time's report, the split rule, the projection to
MAMA-MIA and the 20 % peak-RAM check. No subprocess."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"

TIME_V = """\tCommand being timed: "nnUNetv2_plan_and_preprocess -d 971 -c 2d -np 1"
\tUser time (seconds): 61.20
\tSystem time (seconds): 3.41
\tPercent of CPU this job got: 97%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:05.37
\tAverage shared text size (kbytes): 0
\tMaximum resident set size (kbytes): 524288
\tMajor (requiring I/O) page faults: 12
\tExit status: 0
"""


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("benchmark_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_parse_time_v(scale) -> None:
    parsed = scale.parse_time_v(TIME_V)
    assert parsed == {"wall_s": pytest.approx(65.37), "peak_rss_mib": 512.0, "exit_status": 0}


@pytest.mark.parametrize(("text", "seconds"), [("0:01.23", 1.23), ("1:05.37", 65.37), ("2:03:04", 7384.0)])
def test_parse_elapsed(scale, text: str, seconds: float) -> None:
    assert scale.parse_elapsed(text) == pytest.approx(seconds)


def test_parse_time_v_without_rss_names_the_line(scale) -> None:
    with pytest.raises(ValueError, match="Maximum resident set size"):
        scale.parse_time_v(TIME_V.replace("Maximum resident set size (kbytes): 524288\n", ""))


def test_split_rule(scale) -> None:
    assert scale.split_rule(512) == scale.Split(train=128, test=64, unlabelled=320)
    assert scale.split_rule(32) == scale.Split(train=8, test=4, unlabelled=20)
    assert scale.split_rule(20).total == 20
    with pytest.raises(ValueError, match="at least 5"):
        scale.split_rule(16)


def test_projection_scales_by_voxels_and_exams(scale) -> None:
    # 512x512x160 / 128x128x24 = 4 * 4 * 20/3 voxels per exam
    assert scale.voxel_ratio((128, 128, 24)) == pytest.approx(320 / 3)
    assert scale.project(2.0, (128, 128, 24)) == pytest.approx(2.0 * 320 / 3 * 1506)
    assert scale.project(1.0, (512, 512, 160), exams=10) == pytest.approx(10.0)


@pytest.mark.parametrize(("small", "large", "within"), [(1000, 1200, True), (1000, 1201, False), (1000, 800, True),
                                                        (1000, 799, False), (500, 500, True)])
def test_ram_tolerance(scale, small: float, large: float, within: bool) -> None:
    assert scale.within_tolerance(scale.ram_growth(small, large)) is within


def test_goal_checks_name_the_command_that_grows(scale) -> None:
    rows = []
    for exams, factor in ((128, 1.0), (512, 4.0)):
        for name in scale.PIPELINE:
            rss = 1000.0 * (factor if name == "probe" else 1.0)
            rows.append({"exams": exams, "command": name, "command_exams": exams, "wall_s": 10.0 * exams,
                         "peak_rss_mib": rss, "slices_per_s": None,
                         "disk_bytes_per_exam": {"plan_and_preprocess": 100.0, "dm_cache": 140.0}.get(name)})
    checks = scale.goal_checks(scale.frame_of(rows))
    failed = [line for line in checks if line.startswith("FAIL")]
    assert len(failed) == 1 and "probe" in failed[0] and "+300%" in failed[0]
    assert sum(line.startswith("PASS") for line in checks) == 2 * 2 + len(scale.PIPELINE) - 1
    assert isinstance(scale.frame_of(rows), pd.DataFrame)


def test_marginal_seconds_leave_out_the_start_up(scale) -> None:
    # 30 s start-up + 2 s per exam: the slope between the two largest sizes is 2 s whatever the order given
    assert scale.marginal_seconds([128, 32, 512], [30 + 2 * 128, 30 + 2 * 32, 30 + 2 * 512]) == pytest.approx(2.0)
    assert scale.marginal_seconds([10], [50.0]) == pytest.approx(5.0)


def test_a_size_with_a_study_record_runs_nothing_and_a_finished_size_writes_one(scale, tmp_path, monkeypatch) -> None:
    records = tmp_path / "records"
    size = scale.SizeRun(tmp_path / "work", 32, (128, 128, 24), steps=50, max_minutes=30, records=records)
    measured = [{"command": name, "exams": 32, "wall_s": 1.0} for name in scale.COMMANDS]
    calls = []
    monkeypatch.setattr(size, "measure", lambda name: calls.append(name) or measured[len(calls) - 1])
    first = size.run()
    assert calls == list(scale.COMMANDS) and first["records"] == measured
    assert (records / "n_32.json").is_file() and first["machine"] == scale.run_machine()

    # a fresh clone on another machine: no work folder, the record only
    again = scale.SizeRun(tmp_path / "elsewhere", 32, (128, 128, 24), steps=50, max_minutes=30, records=records)
    monkeypatch.setattr(again, "measure", lambda name: pytest.fail(f"{name} ran although the size has a record"))
    assert again.run() == first
    assert not (tmp_path / "elsewhere").exists()

    other = scale.SizeRun(tmp_path / "work", 32, (128, 128, 24), steps=80, max_minutes=30, records=records)
    with pytest.raises(RuntimeError, match="other settings"):
        other.run()


def test_a_subset_of_commands_runs_in_pipeline_order_and_is_part_of_the_settings(scale, tmp_path,
                                                                                   monkeypatch) -> None:
    subset = ["probe", "synthesize", "plan_and_preprocess", "dm_cache", "pretrain"]
    size = scale.SizeRun(tmp_path / "work", 32, (128, 128, 24), steps=50, max_minutes=30, records=tmp_path / "r",
                         commands=subset)
    calls = []
    monkeypatch.setattr(size, "measure", lambda name: calls.append(name) or {
        "exams": 32, "command": name, "command_exams": 8, "wall_s": 1.0, "peak_rss_mib": 100.0,
        "disk_bytes_per_exam": {"plan_and_preprocess": 100.0, "dm_cache": 140.0}.get(name), "slices_per_s": None})
    record = size.run()
    assert calls == ["synthesize", "plan_and_preprocess", "dm_cache", "pretrain", "probe"]
    assert record["settings"]["commands"] == calls
    assert "commands" not in scale.SizeRun(tmp_path / "w", 32, (128, 128, 24), 50, 30).settings  # old records match
    checks = scale.goal_checks(scale.frame_of(record["records"]))
    assert len(checks) == 3 and checks[-1].startswith("n/a")  # disk, build time; one size: no RAM growth
